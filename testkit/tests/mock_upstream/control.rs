//! `/_mock/…`: faults, stats and recorded requests over HTTP.

use reqwest::Response;
use serde_json::{Value, json};
use sluice_testkit::mock_upstream::{MockConfig, MockHandle};

use crate::support::{azure_url, chat_body, client, header, json_of, post, start};

async fn control(
    mock: &MockHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = client().request(method, format!("{}{path}", mock.url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("control request reaches the mock")
}

/// Faults posted as JSON apply, list, and clear; no key needed even when one is configured.
#[tokio::test]
async fn faults_over_http() {
    let mock = start(MockConfig::default().api_key("secret")).await;
    let posted = control(
        &mock,
        reqwest::Method::POST,
        "/_mock/faults",
        Some(json!([
            {"kind": "status", "status": 429, "retry_after_ms": 1500, "times": 1},
            {"kind": "latency", "ms": 1, "times": 5},
        ])),
    )
    .await;
    assert_eq!(posted.status(), 200);
    assert_eq!(json_of(posted).await, json!({"pending": 2}));

    let listed = json_of(control(&mock, reqwest::Method::GET, "/_mock/faults", None).await).await;
    assert_eq!(listed["faults"][0]["kind"], "status");
    assert_eq!(listed["faults"][0]["headers"]["retry-after"], "2");
    assert_eq!(
        listed["faults"][1],
        json!({"kind": "latency", "ms": 1, "times": 5})
    );

    let limited = client()
        .post(azure_url(&mock, "gpt-4o", "chat/completions"))
        .header("api-key", "secret")
        .json(&chat_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after-ms"), Some("1500"));

    let cleared = control(&mock, reqwest::Method::DELETE, "/_mock/faults", None).await;
    assert_eq!(json_of(cleared).await, json!({"cleared": 1}));
    assert!(mock.pending_faults().is_empty());
}

/// A bad fault is a 400 naming the problem, and nothing is queued.
#[tokio::test]
async fn bad_faults_over_http_are_400() {
    let mock = start(MockConfig::default()).await;
    let response = control(
        &mock,
        reqwest::Method::POST,
        "/_mock/faults",
        Some(json!([{"kind": "reset"}, {"kind": "status", "status": 1000}])),
    )
    .await;
    assert_eq!(response.status(), 400);
    let message = json_of(response).await["error"]["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| m.contains("fault 1")),
        "{message}"
    );
    assert!(mock.pending_faults().is_empty());
}

/// Stats count requests and applied faults; control calls are not counted.
#[tokio::test]
async fn stats_over_http() {
    let mock = start(MockConfig::named("stats")).await;
    mock.inject(sluice_testkit::mock_upstream::Fault::status(500).once())
        .expect("valid fault");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    post(&url, &chat_body()).await;
    post(&url, &chat_body()).await;
    let stats = json_of(control(&mock, reqwest::Method::GET, "/_mock/stats", None).await).await;
    assert_eq!(
        stats,
        json!({
            "name": "stats",
            "requests_total": 2,
            "requests_recorded": 2,
            "faults_applied": 1,
            "faults_pending": [],
        })
    );
    assert_eq!(mock.stats().requests_total, 2);
}

/// Recorded requests are readable and resettable over HTTP.
#[tokio::test]
async fn recorded_requests_over_http() {
    let mock = start(MockConfig::default()).await;
    client()
        .post(azure_url(&mock, "gpt-4o", "chat/completions"))
        .header("api-key", "backend-key")
        .json(&chat_body())
        .send()
        .await
        .expect("sent");
    let listed = json_of(control(&mock, reqwest::Method::GET, "/_mock/requests", None).await).await;
    let request = &listed["requests"][0];
    assert_eq!(request["seq"], 1);
    assert_eq!(request["method"], "POST");
    assert_eq!(
        request["path"],
        "/openai/deployments/gpt-4o/chat/completions"
    );
    assert_eq!(request["query"], "api-version=2024-10-21");
    assert_eq!(request["headers"]["api-key"], "backend-key");
    assert_eq!(request["body"], chat_body());

    let cleared = control(&mock, reqwest::Method::DELETE, "/_mock/requests", None).await;
    assert_eq!(json_of(cleared).await, json!({"cleared": 1}));
    assert_eq!(mock.request_count(), 0);
}
