//! What tests can learn about the requests a mock received.

use serde_json::json;
use sluice_testkit::mock_upstream::MockConfig;

use crate::support::{azure_url, chat_body, client, post, start};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Method, path, query, headers and the parsed body are recorded, and counted.
#[tokio::test]
async fn records_what_arrived() {
    let mock = start(MockConfig::default()).await;
    client()
        .post(azure_url(&mock, "gpt-4o", "chat/completions"))
        .header("api-key", "backend-key")
        .header("traceparent", TRACEPARENT)
        .json(&chat_body())
        .send()
        .await
        .expect("sent");
    client()
        .post(format!("{}/v1/embeddings", mock.url()))
        .bearer_auth("other-key")
        .json(&json!({"model": "emb", "input": "x"}))
        .send()
        .await
        .expect("sent");

    assert_eq!(mock.request_count(), 2);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let chat = &requests[0];
    assert_eq!(chat.method, "POST");
    assert_eq!(chat.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(chat.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(chat.api_key(), Some("backend-key"));
    assert_eq!(chat.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(chat.bearer_token(), None);
    assert_eq!(chat.body.as_ref(), Some(&chat_body()));

    let embeddings = mock.last_request().expect("a request was recorded");
    assert_eq!(embeddings.seq, 2);
    assert_eq!(embeddings.bearer_token(), Some("other-key"));
    assert_eq!(embeddings.api_key(), None);

    mock.reset_recording();
    assert_eq!(mock.request_count(), 0);
    assert!(mock.requests().is_empty());
}

/// Refused requests are recorded too: a test can see a wrong credential arrive.
#[tokio::test]
async fn records_refused_requests() {
    let mock = start(MockConfig::default().api_key("right")).await;
    let response = client()
        .post(azure_url(&mock, "gpt-4o", "chat/completions"))
        .header("api-key", "client-key")
        .json(&chat_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(
        mock.last_request()
            .and_then(|r| r.api_key().map(str::to_owned))
            .as_deref(),
        Some("client-key")
    );
}

/// With recording off, requests are still counted.
#[tokio::test]
async fn counting_without_recording() {
    let mock = start(MockConfig::default().record_requests(false)).await;
    post(
        &azure_url(&mock, "gpt-4o", "chat/completions"),
        &chat_body(),
    )
    .await;
    assert_eq!(mock.request_count(), 1);
    assert!(mock.requests().is_empty());
}
