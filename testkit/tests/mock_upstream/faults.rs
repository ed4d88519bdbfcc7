//! Injected faults, from Rust.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_testkit::mock_upstream::{Fault, MockConfig, Operation};

use crate::support::{azure_url, chat_body, client, header, json_of, post, start};

/// A rate-limit fault sends Azure's 429 with every retry signal, once.
#[tokio::test]
async fn rate_limit_fault_sends_azure_429_once() {
    let mock = start(MockConfig::named("eastus")).await;
    mock.inject(Fault::rate_limited(Duration::from_secs(2)).once())
        .expect("valid fault");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let limited = post(&url, &chat_body()).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after-ms"), Some("2000"));
    assert_eq!(header(&limited, "retry-after"), Some("2"));
    assert_eq!(header(&limited, "x-ratelimit-reset-requests"), Some("2s"));
    assert_eq!(header(&limited, "x-mock-upstream"), Some("eastus"));
    assert_eq!(header(&limited, "content-type"), Some("application/json"));
    let error = &json_of(limited).await["error"];
    assert_eq!(error["code"], "429");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit"
    ));
    assert!(
        message.contains("Please retry after 2 seconds."),
        "{message}"
    );

    assert_eq!(post(&url, &chat_body()).await.status(), 200);
    assert_eq!(mock.faults_applied(), 1);
}

/// 500 and 503 faults carry Azure's error shapes; custom headers and bodies are sent as given.
#[tokio::test]
async fn server_error_faults() {
    let mock = start(MockConfig::default()).await;
    mock.inject_all([
        Fault::status(500).once(),
        Fault::status(503).once(),
        Fault::status(502)
            .header("x-should-retry", "false")
            .header("x-ms-region", "nowhere")
            .body(json!({"error": {"code": "Custom"}}))
            .once(),
    ])
    .expect("valid faults");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let internal = post(&url, &chat_body()).await;
    assert_eq!(internal.status(), 500);
    assert_eq!(
        json_of(internal).await["error"]["code"],
        "InternalServerError"
    );
    let unavailable = post(&url, &chat_body()).await;
    assert_eq!(unavailable.status(), 503);
    assert_eq!(
        json_of(unavailable).await["error"]["code"],
        "ServiceUnavailable"
    );
    let custom = post(&url, &chat_body()).await;
    assert_eq!(custom.status(), 502);
    assert_eq!(header(&custom, "x-should-retry"), Some("false"));
    assert_eq!(header(&custom, "x-ms-region"), Some("nowhere"));
    assert_eq!(json_of(custom).await, json!({"error": {"code": "Custom"}}));
}

/// A reset closes the connection without a response; the next request is served.
#[tokio::test]
async fn reset_fault_fails_the_request() {
    let mock = start(MockConfig::default()).await;
    mock.inject(Fault::reset().once()).expect("valid fault");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let result = client().post(&url).json(&chat_body()).send().await;
    let error = result.expect_err("no response after a reset");
    assert!(!error.is_timeout(), "{error}");
    assert_eq!(post(&url, &chat_body()).await.status(), 200);
}

/// A latency fault delays one answer; the configured latency delays all.
#[tokio::test]
async fn latency_faults_and_configured_latency() {
    let mock = start(MockConfig::default().latency(Duration::from_millis(30))).await;
    mock.inject(Fault::latency(Duration::from_millis(300)).once())
        .expect("valid fault");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let start = Instant::now();
    assert_eq!(post(&url, &chat_body()).await.status(), 200);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(330), "{elapsed:?}");
    let start = Instant::now();
    assert_eq!(post(&url, &chat_body()).await.status(), 200);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
    // Generous: it only has to show that the one-off delay is gone.
    assert!(elapsed < Duration::from_millis(300), "{elapsed:?}");
}

/// A stream abort sends some events, then breaks the body: the client sees an error.
#[tokio::test]
async fn stream_abort_truncates_the_body() {
    let mock = start(MockConfig::default()).await;
    mock.inject(Fault::stream_abort_after(2).once())
        .expect("valid fault");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");

    // A non-streaming request does not consume the fault.
    assert_eq!(post(&url, &chat_body()).await.status(), 200);

    let mut body = chat_body();
    body["stream"] = json!(true);
    let mut response = post(&url, &body).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!(
                "stream ended cleanly: {}",
                String::from_utf8_lossy(&received)
            ),
            Err(error) => break error,
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error}");
    let received = String::from_utf8_lossy(&received);
    assert_eq!(received.matches("data: ").count(), 2, "{received}");
    assert!(!received.contains("[DONE]"));

    let complete = post(&url, &body)
        .await
        .text()
        .await
        .expect("later streams complete");
    assert!(complete.ends_with("data: [DONE]\n\n"));
}

/// How long a stalled response is watched for anything more: far more than the mock needs to
/// send a ready chunk, far less than a test's patience.
const SILENCE: Duration = Duration::from_millis(300);

/// A stall sends some events, then nothing while the connection stays open, until the client
/// goes away; the stall is armed over HTTP like any other fault.
#[tokio::test]
async fn stall_after_hangs_a_stream_until_the_client_leaves() {
    let mock = start(MockConfig::default()).await;
    let posted = client()
        .post(format!("{}/_mock/faults", mock.url()))
        .json(&json!({"kind": "stall_after", "chunks": 2, "times": 1}))
        .send()
        .await
        .expect("control request reaches the mock");
    assert_eq!(posted.status(), 200);
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let mut body = chat_body();
    body["stream"] = json!(true);
    let mut response = post(&url, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    let mut received = String::new();
    while received.matches("data: ").count() < 2 {
        let chunk = response.chunk().await.expect("events before the stall");
        let chunk = chunk.expect("the stream stays open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let more = tokio::time::timeout(SILENCE, response.chunk()).await;
    assert!(more.is_err(), "nothing after the stall: {more:?}");
    assert_eq!(received.matches("data: ").count(), 2, "{received}");
    assert!(
        received.ends_with("\n\n"),
        "whole events only: {received:?}"
    );
    assert_eq!(mock.faults_applied(), 1);

    // The fault was used once: the next stream completes.
    let complete = post(&url, &body).await.text().await.expect("complete");
    assert!(complete.ends_with("data: [DONE]\n\n"));

    // Once the client is gone, the hanging response ends: shutdown has nothing to wait for.
    drop(response);
    let stopped = tokio::time::timeout(Duration::from_secs(5), mock.shutdown()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the stalled response ended with its client: {stopped:?}"
    );
}

/// A stalled plain answer announces its full length, sends half of it, then hangs.
#[tokio::test]
async fn stall_after_hangs_a_plain_answer_half_way() {
    let mock = start(MockConfig::default()).await;
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let full = post(&url, &chat_body()).await.bytes().await.expect("body");
    mock.inject(Fault::stall_after(3).once())
        .expect("valid fault");
    let mut response = post(&url, &chat_body()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    // Ids and timestamps keep their length, so the announced length is the full body's.
    assert_eq!(response.content_length(), Some(full.len() as u64));
    let mut received = Vec::new();
    while received.len() < full.len() / 2 {
        let chunk = response.chunk().await.expect("the first half");
        received.extend_from_slice(&chunk.expect("the body stays open"));
    }
    let more = tokio::time::timeout(SILENCE, response.chunk()).await;
    assert!(more.is_err(), "nothing after the first half: {more:?}");
    assert_eq!(received.len(), full.len() / 2);
    assert!(serde_json::from_slice::<serde_json::Value>(&received).is_err());

    drop(response);
    let stopped = tokio::time::timeout(Duration::from_secs(5), mock.shutdown()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

/// `times` counts matching requests; faults queue in order; None lasts until cleared.
#[tokio::test]
async fn times_counts_and_faults_queue_in_order() {
    let mock = start(MockConfig::default()).await;
    mock.inject_all([Fault::status(429).times(2), Fault::status(500).once()])
        .expect("valid faults");
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post(&url, &chat_body()).await.status().as_u16());
    }
    assert_eq!(statuses, [429, 429, 500, 200]);

    mock.inject(Fault::status(503)).expect("valid fault");
    for _ in 0..3 {
        assert_eq!(post(&url, &chat_body()).await.status(), 503);
    }
    assert_eq!(mock.pending_faults().len(), 1);
    assert_eq!(mock.clear_faults(), 1);
    assert_eq!(post(&url, &chat_body()).await.status(), 200);
}

/// Faults can target one deployment or operation.
#[tokio::test]
async fn faults_match_deployment_and_operation() {
    let mock = start(MockConfig::default()).await;
    mock.inject_all([
        Fault::status(429).deployment("busy").once(),
        Fault::status(500).operation(Operation::Embeddings).once(),
    ])
    .expect("valid faults");
    let idle = post(&azure_url(&mock, "idle", "chat/completions"), &chat_body()).await;
    assert_eq!(idle.status(), 200);
    let busy = post(&azure_url(&mock, "busy", "chat/completions"), &chat_body()).await;
    assert_eq!(busy.status(), 429);
    let embeddings = post(
        &azure_url(&mock, "idle", "embeddings"),
        &json!({"input": "x"}),
    )
    .await;
    assert_eq!(embeddings.status(), 500);
}

/// Invalid faults are refused up front.
#[tokio::test]
async fn invalid_faults_are_refused() {
    let mock = start(MockConfig::default()).await;
    assert!(mock.inject(Fault::status(99)).is_err());
    assert!(mock.inject(Fault::reset().times(0)).is_err());
    assert!(mock.pending_faults().is_empty());
}
