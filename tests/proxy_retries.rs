//! Retries: on another backend, within max_attempts, never after the response started, and
//! the last failure passed on as the backend sent it.

mod support;

use std::time::Duration;

use sluice_testkit::mock_upstream::Fault;
use support::proxy::{TestProxy, attempts, mock, pool_yaml, served_by};

/// A failed attempt moves to a different backend; no backend is tried twice for one call.
#[tokio::test]
async fn a_retry_never_lands_on_the_backend_that_just_failed() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let pool = pool_yaml(
        "p",
        "retry: { max_attempts: 3 }",
        &[(&a, ""), (&b, ""), (&c, "")],
    );
    let proxy = TestProxy::start(&pool, &[&a, &b, &c]).await;
    a.inject(Fault::status(500)).unwrap();
    b.inject(Fault::status(502)).unwrap();
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "c");
    assert_eq!(attempts(&response), 3);
    assert_eq!(
        [a.request_count(), b.request_count(), c.request_count()],
        [1, 1, 1]
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_retries_total{pool="p",reason="status_5xx"} 2"#),
        "{metrics}"
    );
}

/// Connection failures are retried too: a dead backend costs one attempt, not the call.
#[tokio::test]
async fn connect_errors_are_retried_elsewhere() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::reset()).unwrap();
    for call in 0..4 {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response), "b");
        if call > 0 {
            assert_eq!(
                attempts(&response),
                1,
                "the ejected backend is not tried again"
            );
        }
    }
    assert_eq!(
        a.request_count(),
        1,
        "one connect failure ejects the backend"
    );
    assert!(
        proxy
            .metrics()
            .await
            .contains(r#"sluice_backend_state{pool="p",backend="a",state="ejected"} 1"#)
    );
    // The first ejection is short; the backend then takes traffic again.
    a.clear_faults();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let served = proxy.backends_of("p", 4).await;
    assert!(served.iter().any(|b| b == "a"), "{served:?}");
}

/// Retries draw on a budget: when every backend keeps failing with a status that neither
/// ejects nor cools it (408), a burst of calls does not double the upstream load.
#[tokio::test]
async fn retries_stay_within_the_budget_when_everything_fails() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml(
        "p",
        "retry: { max_attempts: 2, retry_on: [408] }",
        &[(&a, ""), (&b, "")],
    );
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::status(408)).unwrap();
    b.inject(Fault::status(408)).unwrap();
    const CALLS: u64 = 300;
    let mut single_attempts = 0;
    for _ in 0..CALLS {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 408);
        single_attempts += u64::from(attempts(&response) == 1);
    }
    let upstream = a.request_count() + b.request_count();
    assert!(
        upstream < 2 * CALLS - 100,
        "{upstream} upstream requests for {CALLS} calls: retries are not budgeted"
    );
    assert!(single_attempts > 0, "an exhausted budget means no retry");
}

/// With attempts used up, the client gets the last failure exactly as the backend sent it,
/// so the SDK's own retry logic still sees the status and Retry-After.
#[tokio::test]
async fn the_last_failure_is_passed_on_as_sent() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "retry: { max_attempts: 2 }", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::status(503).header("retry-after", "7"))
        .unwrap();
    b.inject(Fault::status(503).header("retry-after", "7"))
        .unwrap();
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(attempts(&response), 2);
    assert!(response.headers().get("x-mock-upstream").is_some());
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_object(), "{body}");
}

/// Statuses outside `retry_on` (here a 400 content filter) are never retried.
#[tokio::test]
async fn statuses_outside_retry_on_are_not_retried() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    let filtered = serde_json::json!({"error": {"code": "content_filter", "message": "filtered",
        "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
    a.inject(Fault::status(400).body(filtered.clone())).unwrap();
    b.inject(Fault::status(400).body(filtered)).unwrap();
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(attempts(&response), 1);
    assert_eq!(a.request_count() + b.request_count(), 1);
}

/// max_attempts: 1 means no retry at all.
#[tokio::test]
async fn max_attempts_one_disables_retries() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "retry: { max_attempts: 1 }", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::status(500)).unwrap();
    b.inject(Fault::status(500)).unwrap();
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(a.request_count() + b.request_count(), 1);
}

/// A backend slower than per_try_timeout_ms counts as failed; the call moves on.
#[tokio::test]
async fn per_try_timeout_moves_on_to_another_backend() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml(
        "p",
        "retry: { per_try_timeout_ms: 300 }",
        &[(&a, ""), (&b, "")],
    );
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::latency(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response), "b");
    }
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_retries_total{pool="p",reason="timeout"} 1"#),
        "{metrics}"
    );
}

/// Once the first byte of a streamed answer went out, a failing stream is not retried: the
/// client sees the stream end early and no other backend is called.
#[tokio::test]
async fn never_retries_after_the_stream_started() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::stream_abort_after(2)).unwrap();
    b.inject(Fault::stream_abort_after(2)).unwrap();
    let mut response = proxy.stream("p").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(
        outcome.is_err(),
        "the truncated stream surfaces as an error"
    );
    assert!(
        String::from_utf8_lossy(&received).contains("data: "),
        "the first chunks arrived"
    );
    assert!(!String::from_utf8_lossy(&received).contains("[DONE]"));
    assert_eq!(
        a.request_count() + b.request_count(),
        1,
        "no retry after the first byte"
    );
}

/// A backend that refuses its key (401) makes the proxy re-read the secret once and, if it
/// changed, send again with the new key; an unchanged secret passes the 401 on.
#[tokio::test]
async fn an_upstream_401_rereads_the_secret_and_retries_once() {
    let a = mock("a").await;
    let proxy = TestProxy::start(&pool_yaml("p", "", &[(&a, "")]), &[&a]).await;
    assert_eq!(proxy.chat("p").send().await.unwrap().status(), 200);

    // The key was rotated: the file holds a new one, the backend now refuses the old one.
    proxy.rotate_secret(&a, "key-a-rotated");
    a.inject(Fault::status(401).once()).unwrap();
    let response = proxy.chat("p").send().await.unwrap();
    let seen: Vec<_> = a
        .requests()
        .iter()
        .map(|r| r.api_key().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        seen[1..],
        ["key-a", "key-a-rotated"],
        "one retry, with the re-read key"
    );
    assert_eq!(
        response.status(),
        401,
        "the mock still expects key-a, so the retry is refused too"
    );
    assert_eq!(
        attempts(&response),
        1,
        "the re-send is part of the same attempt"
    );

    // The file now holds the key the backend accepts. The refusal above ejected the backend
    // for a second; after that its 401 is recovered transparently.
    proxy.rotate_secret(&a, "key-a");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(proxy.chat("p").send().await.unwrap().status(), 200);
    assert_eq!(a.request_count(), 5);

    // An unchanged secret is not re-sent; with no other backend the 401 goes to the client.
    a.inject(Fault::status(401).once()).unwrap();
    assert_eq!(proxy.chat("p").send().await.unwrap().status(), 401);
    assert_eq!(a.request_count(), 6);
}

/// A backend that keeps refusing its key is failed over and ejected, whatever `retry_on` says.
#[tokio::test]
async fn a_refused_backend_key_fails_over_and_ejects_the_backend() {
    let (a, b) = (mock("a").await, mock("b").await);
    let pool = pool_yaml("p", "retry: { retry_on: [503] }", &[(&a, ""), (&b, "")]);
    let proxy = TestProxy::start(&pool, &[&a, &b]).await;
    a.inject(Fault::status(401)).unwrap();
    for _ in 0..4 {
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response), "b");
    }
    assert_eq!(a.request_count(), 1, "ejected after refusing its key");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_retries_total{pool="p",reason="key_rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_backend_state{pool="p",backend="a",state="ejected"} 1"#),
        "{metrics}"
    );
}
