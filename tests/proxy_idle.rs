//! A backend that goes silent in the middle of a response body: past the pool's
//! `idle_timeout_ms` a stream ends with an error event and a plain body breaks off, the backend
//! is ejected for a while; a slow but steady stream is left alone.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::mock_upstream::{Fault, MockConfig, MockHandle};
use support::eventually;
use support::logs::CapturedLogs;
use support::proxy::{TestProxy, attempts, mock, mock_with, pool_yaml, served_by};

const IDLE: Duration = Duration::from_millis(300);

/// `a` preferred (priority 0) over `b`, with a short idle timeout.
async fn pool_preferring_a(a: &MockHandle, b: &MockHandle) -> TestProxy {
    let pool = pool_yaml(
        "p",
        &format!("retry: {{ idle_timeout_ms: {} }}", IDLE.as_millis()),
        &[(a, ", priority: 0"), (b, ", priority: 1")],
    );
    TestProxy::start(&pool, &[a, b]).await
}

/// The `data:` payloads of an SSE body, blank lines between events ignored.
fn sse_data(body: &str) -> Vec<&str> {
    body.split("\n\n")
        .map(str::trim)
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?} in {body:?}"))
        })
        .collect()
}

/// The backend went silent, so it is ejected (counted) and the next call, though `a` is
/// preferred, is served by `b`.
async fn a_is_ejected_for_idling(proxy: &TestProxy, a: &MockHandle) {
    let ejected = r#"sluice_backend_ejections_total{pool="p",backend="a",reason="idle_timeout"} 1"#;
    eventually(
        Duration::from_secs(5),
        "the idle ejection metric",
        || async { proxy.metrics().await.contains(ejected) },
    )
    .await;
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b", "a is ejected");
    assert_eq!(attempts(&response), 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(a.request_count(), 1);
}

/// A stream whose backend stalls after two events ends, after the idle timeout, with an
/// error event in OpenAI's shape (what the SDKs raise on) and a clean end of the body.
#[tokio::test]
async fn a_stalled_stream_ends_with_an_idle_timeout_event() {
    let logs = CapturedLogs::install();
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = pool_preferring_a(&a, &b).await;
    a.inject(Fault::stall_after(2)).unwrap();

    let started = Instant::now();
    let response = proxy.stream("p").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "a");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.expect("the stream ends cleanly");
    assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());

    let events = sse_data(&body);
    assert_eq!(events.len(), 3, "two events, then the error: {body:?}");
    let filter: Value = serde_json::from_str(events[0]).unwrap();
    assert!(filter["prompt_filter_results"].is_array(), "{body}");
    let token: Value = serde_json::from_str(events[1]).unwrap();
    assert_eq!(token["choices"][0]["delta"]["role"], "assistant", "{body}");
    let error: Value = serde_json::from_str(events[2]).unwrap();
    let error = &error["error"];
    assert_eq!(error["code"], "upstream_idle_timeout", "{body}");
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["param"], Value::Null);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("sent nothing")),
        "{error}"
    );
    assert!(!body.contains("[DONE]"));

    a_is_ejected_for_idling(&proxy, &a).await;
    let warned = logs.lines_with(&["WARN", "went silent", "backend.name=a"]);
    assert_eq!(warned.len(), 1, "{}", logs.text());
}

/// A plain (non-streamed) body whose backend stalls half-way is broken off: the client's
/// read fails rather than returning a short body that looks complete.
#[tokio::test]
async fn a_stalled_plain_body_breaks_off() {
    let (a, b) = (mock("a").await, mock("b").await);
    let proxy = pool_preferring_a(&a, &b).await;
    a.inject(Fault::stall_after(2)).unwrap();

    let started = Instant::now();
    let response = proxy.chat("p").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "a");
    let error = match response.bytes().await {
        Ok(body) => panic!(
            "a body cut short is an error, not {:?}",
            String::from_utf8_lossy(&body)
        ),
        Err(error) => error,
    };
    assert!(
        !error.is_timeout(),
        "the proxy broke the body off, the client did not give up: {error:?}"
    );
    assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());

    a_is_ejected_for_idling(&proxy, &a).await;
}

/// A stream slower than the idle timeout overall, but never silent for that long, is passed
/// on in full and ejects nothing.
#[tokio::test]
async fn a_slow_steady_stream_is_not_cut() {
    // A token every 50 ms, ten of them: half a second in all, against a 300 ms idle timeout.
    let slow = mock_with(
        MockConfig::named("slow")
            .tokens_per_second(20.0)
            .completion_tokens(10),
    )
    .await;
    let pool = pool_yaml(
        "p",
        &format!("retry: {{ idle_timeout_ms: {} }}", IDLE.as_millis()),
        &[(&slow, "")],
    );
    let proxy = TestProxy::start(&pool, &[&slow]).await;

    let started = Instant::now();
    let response = proxy.stream("p").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("the stream completes");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(!body.contains("upstream_idle_timeout"), "{body}");
    let events = sse_data(&body);
    // Filter chunk, ten tokens, finish, usage, [DONE].
    assert_eq!(events.len(), 14, "{body}");

    let metrics = proxy.metrics().await;
    let line = r#"sluice_backend_ejections_total{pool="p",backend="slow",reason="idle_timeout"} 0"#;
    assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    assert!(
        metrics.contains(r#"sluice_backend_state{pool="p",backend="slow",state="available"} 1"#),
        "{metrics}"
    );
}
