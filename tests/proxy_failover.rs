//! Failing over from what one backend cannot do: a deployment it lacks (Azure's 404
//! `DeploymentNotFound`) moves the call on and keeps that backend out of the pool, while any
//! other 404 is the client's answer; and a 429 passed on names the pool's shortest wait.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::{Fault, MockHandle};
use support::logs::CapturedLogs;
use support::proxy::{TestProxy, attempts, mock, pool_yaml, served_by};

/// Azure's answer for a deployment the resource does not have.
fn deployment_not_found() -> Value {
    json!({"error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    }})
}

/// Azure's answer for a path it has no resource for: the client's mistake, not the backend's.
fn resource_not_found() -> Value {
    json!({"error": {"code": "404", "message": "Resource not found"}})
}

/// A round-robin pool of `a` and `b` that retries nothing but 503, so that only the
/// missing-deployment rule can move a 404 on.
async fn round_robin_pool(a: &MockHandle, b: &MockHandle) -> TestProxy {
    let pool = pool_yaml(
        "p",
        "strategy: round_robin\n    retry: { retry_on: [503] }",
        &[(a, ", deployments: { p: gpt-4o-eastus }"), (b, "")],
    );
    TestProxy::start(&pool, &[a, b]).await
}

/// Sends calls until one reached `a` (round robin gets there within two calls), asserting
/// each is answered 200 by `b`; returns the attempts of the call that went through `a`.
async fn first_call_through_a(proxy: &TestProxy, a: &MockHandle) -> u32 {
    for _ in 0..2 {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        assert_eq!(served_by(&response), "b");
        if a.request_count() == 1 {
            return attempts(&response);
        }
        assert_eq!(attempts(&response), 1);
    }
    panic!("round robin never sent a call to a");
}

/// The next calls are all served by `b` at the first attempt, and `a` is not asked again.
async fn a_stays_out(proxy: &TestProxy, a: &MockHandle) {
    for _ in 0..6 {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response), "b");
        assert_eq!(attempts(&response), 1, "a is not tried while kept out");
    }
    assert_eq!(a.request_count(), 1, "a is kept out of the pool");
}

/// A backend answering 404 `DeploymentNotFound` fails over to another backend whatever
/// `retry_on` says, and is kept out of the pool even by round robin: counted, logged, shown
/// as ejected.
#[tokio::test]
async fn a_missing_deployment_fails_over_and_keeps_the_backend_out() {
    let logs = CapturedLogs::install();
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = round_robin_pool(&a, &b).await;
    a.inject(Fault::status(404).body(deployment_not_found()))
        .unwrap();

    assert_eq!(first_call_through_a(&proxy, &a).await, 2);
    assert_eq!(
        a.last_request().unwrap().path,
        "/openai/deployments/gpt-4o-eastus/chat/completions"
    );
    a_stays_out(&proxy, &a).await;

    let metrics = proxy.metrics().await;
    for line in [
        r#"sluice_retries_total{pool="p",reason="deployment_not_found"} 1"#,
        r#"sluice_backend_ejections_total{pool="p",backend="a",reason="deployment_not_found"} 1"#,
        r#"sluice_backend_ejections_total{pool="p",backend="b",reason="deployment_not_found"} 0"#,
        r#"sluice_backend_state{pool="p",backend="a",state="ejected"} 1"#,
        r#"sluice_backend_state{pool="p",backend="b",state="available"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    let warned = logs.lines_with(&[
        "WARN",
        "no such deployment",
        "pool.name=p",
        "backend.name=a",
        "gpt-4o-eastus",
    ]);
    assert_eq!(warned.len(), 1, "{}", logs.text());
}

/// `x-ms-error-code: DeploymentNotFound` alone is enough, whatever the body says.
#[tokio::test]
async fn the_error_code_header_alone_marks_a_missing_deployment() {
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = round_robin_pool(&a, &b).await;
    a.inject(
        Fault::status(404)
            .header("x-ms-error-code", "DeploymentNotFound")
            .body(json!("<html><body>Not Found</body></html>")),
    )
    .unwrap();

    assert_eq!(first_call_through_a(&proxy, &a).await, 2);
    a_stays_out(&proxy, &a).await;
    let metrics = proxy.metrics().await;
    for line in [
        r#"sluice_retries_total{pool="p",reason="deployment_not_found"} 1"#,
        r#"sluice_backend_ejections_total{pool="p",backend="a",reason="deployment_not_found"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

/// Any other 404 is the answer to the call: it reaches the client as sent, after one attempt,
/// and the backend keeps its place in the pool.
#[tokio::test]
async fn another_404_reaches_the_client_unchanged_and_ejects_nothing() {
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = round_robin_pool(&a, &b).await;
    a.inject(Fault::status(404).body(resource_not_found()))
        .unwrap();

    let mut answered = None;
    let mut calls = 0;
    for _ in 0..2 {
        let response = proxy.chat("p").send().await.unwrap();
        calls += 1;
        if served_by(&response) == "a" {
            answered = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = answered.expect("round robin sends one of two calls to a");
    assert_eq!(response.status(), 404);
    assert_eq!(attempts(&response), 1);
    assert_eq!(response.headers()["x-mock-upstream"], "a");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.text().await.unwrap(),
        resource_not_found().to_string(),
        "the body as the backend sent it"
    );
    assert_eq!(a.request_count() + b.request_count(), calls, "no retry");

    let metrics = proxy.metrics().await;
    for line in [
        r#"sluice_backend_ejections_total{pool="p",backend="a",reason="deployment_not_found"} 0"#,
        r#"sluice_backend_state{pool="p",backend="a",state="available"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    assert!(
        !metrics.contains(r#"reason="deployment_not_found"} 1"#),
        "{metrics}"
    );

    // Still in rotation: with the fault gone, a serves its share at once.
    a.clear_faults();
    let served = proxy.backends_of("p", 2).await;
    assert!(served.iter().any(|name| name == "a"), "{served:?}");
}

/// With no other backend to turn to (a single-backend pool, or every backend missing the
/// deployment), the client gets the last backend's 404 as it was sent.
#[tokio::test]
async fn the_last_missing_deployment_404_reaches_the_client_unchanged() {
    let (a, b, solo) = (mock("a").await, mock("b").await, mock("solo").await);
    let pools = [
        pool_yaml("pair", "", &[(&a, ""), (&b, "")]),
        pool_yaml("alone", "", &[(&solo, "")]),
    ]
    .join("\n");
    let proxy = TestProxy::start(&pools, &[&a, &b, &solo]).await;
    for mock in [&a, &b, &solo] {
        mock.inject(Fault::status(404).body(deployment_not_found()))
            .unwrap();
    }

    let response = proxy.chat("alone").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(attempts(&response), 1);
    assert_eq!(response.headers()["x-mock-upstream"], "solo");
    assert_eq!(
        response.text().await.unwrap(),
        deployment_not_found().to_string()
    );

    let response = proxy.chat("pair").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(attempts(&response), 2, "the other backend was tried");
    let last = served_by(&response);
    assert_eq!(response.headers()["x-mock-upstream"], last.as_str());
    assert_eq!(
        response.text().await.unwrap(),
        deployment_not_found().to_string()
    );
    assert_eq!([a.request_count(), b.request_count()], [1, 1]);

    let metrics = proxy.metrics().await;
    for line in [
        r#"sluice_backend_ejections_total{pool="alone",backend="solo",reason="deployment_not_found"} 1"#,
        r#"sluice_backend_ejections_total{pool="pair",backend="a",reason="deployment_not_found"} 1"#,
        r#"sluice_backend_ejections_total{pool="pair",backend="b",reason="deployment_not_found"} 1"#,
        r#"sluice_retries_total{pool="pair",reason="deployment_not_found"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

/// Retry-After of a passed-on 429, in seconds, and retry-after-ms.
fn retry_after(response: &reqwest::Response) -> (u64, u64) {
    let header = |name: &str| -> u64 {
        response.headers()[name]
            .to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    (header("retry-after"), header("retry-after-ms"))
}

/// When every attempt ends in 429, the one passed on says when the pool has room again: the
/// shortest wait of its backends, not what the answering backend asked for.
#[tokio::test]
async fn a_passed_on_429_names_the_pools_shortest_wait() {
    let (a, b) = (mock("a").await, mock("b").await);
    // Both orders, in separate pools (backend state is per pool): the long wait (a, 30 s)
    // answers last in `long-last`, the short one (b, 2 s) in `short-last`.
    let pools = [
        pool_yaml(
            "long-last",
            "retry: { max_attempts: 2 }",
            &[(&a, ", priority: 1"), (&b, ", priority: 0")],
        ),
        pool_yaml(
            "short-last",
            "retry: { max_attempts: 2 }",
            &[(&a, ", priority: 0"), (&b, ", priority: 1")],
        ),
    ]
    .join("\n");
    let proxy = TestProxy::start(&pools, &[&a, &b]).await;
    a.inject(Fault::rate_limited(Duration::from_secs(30)))
        .unwrap();
    b.inject(Fault::rate_limited(Duration::from_secs(2)))
        .unwrap();

    for (pool, last) in [("long-last", "a"), ("short-last", "b")] {
        let response = proxy.chat(pool).send().await.unwrap();
        assert_eq!(response.status(), 429, "{pool}");
        assert_eq!(attempts(&response), 2, "{pool}");
        assert_eq!(served_by(&response), last, "{pool}");
        let (seconds, millis) = retry_after(&response);
        assert_eq!(seconds, 2, "{pool}: b has room again within 2 s");
        assert!(
            0 < millis && millis <= 2000,
            "{pool}: retry-after-ms {millis}"
        );
    }
    assert_eq!([a.request_count(), b.request_count()], [2, 2]);
}
