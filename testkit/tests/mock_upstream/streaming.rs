//! SSE streams: framing, chunk order, usage, pacing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::MockConfig;

use crate::support::{
    CHAT_BODY_CHARS, azure_url, chat_body, client, header, json_of, post, sse_events, sse_json,
    start,
};

fn stream_body(include_usage: bool) -> Value {
    let mut body = chat_body();
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Azure's stream: filter chunk, token chunks, finish, usage, `[DONE]`.
#[tokio::test]
async fn azure_chat_stream_in_order_with_usage() {
    let mock = start(MockConfig::default().completion_tokens(3)).await;
    let response = post(
        &azure_url(&mock, "gpt-4o", "chat/completions"),
        &stream_body(true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&response, "cache-control"), Some("no-cache"));
    let body = response.text().await.expect("complete stream");
    assert!(
        !body.lines().any(|line| line.starts_with(':')),
        "no SSE comments"
    );
    let events = sse_events(&body);
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1, "{body}");

    let filter = sse_json(&events[0]);
    assert_eq!(
        (
            &filter["id"],
            &filter["object"],
            &filter["created"],
            &filter["model"]
        ),
        (&json!(""), &json!(""), &json!(0), &json!(""))
    );
    assert_eq!(filter["choices"], json!([]));
    assert!(filter["prompt_filter_results"].is_array());

    let mut content = String::new();
    for (index, event) in events[1..4].iter().enumerate() {
        let chunk = sse_json(event);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o");
        assert_eq!(chunk["usage"], Value::Null);
        let choice = &chunk["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["finish_reason"], Value::Null);
        let role = (index == 0).then_some("assistant");
        assert_eq!(choice["delta"]["role"].as_str(), role);
        content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
    }
    assert_eq!(content, "Sluice mock reply: ");

    let finish = sse_json(&events[4]);
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");

    let usage = sse_json(&events[5]);
    assert_eq!(usage["choices"], json!([]));
    let prompt_tokens = CHAT_BODY_CHARS.div_ceil(4) as u64;
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": 3, "total_tokens": prompt_tokens + 3})
    );
    assert_eq!(events[6], "[DONE]");
}

/// Streamed deltas add up to the non-streamed content, and without include_usage there is
/// no usage chunk and no `usage` field.
#[tokio::test]
async fn openai_stream_matches_the_plain_answer() {
    let mock = start(MockConfig::default()).await;
    let url = format!("{}/v1/chat/completions", mock.url());
    let mut plain = chat_body();
    plain["model"] = json!("gpt-4o");
    let expected =
        json_of(post(&url, &plain).await).await["choices"][0]["message"]["content"].clone();

    let mut streamed = stream_body(false);
    streamed["model"] = json!("gpt-4o");
    let body = post(&url, &streamed)
        .await
        .text()
        .await
        .expect("complete stream");
    let events = sse_events(&body);
    assert_eq!(events.len(), 16 + 2, "OpenAI sends no filter chunk");
    let chunks: Vec<Value> = events[..17].iter().map(|e| sse_json(e)).collect();
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
    let content: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(json!(content), expected);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

/// Completions stream `text_completion` chunks.
#[tokio::test]
async fn completions_stream() {
    let mock = start(MockConfig::default().completion_tokens(2)).await;
    let body = json!({"prompt": "hi", "stream": true, "max_tokens": 1, "stream_options": {"include_usage": true}});
    let response = post(&azure_url(&mock, "davinci", "completions"), &body).await;
    let events = sse_events(&response.text().await.expect("complete stream"));
    assert_eq!(events.len(), 1 + 1 + 1 + 1 + 1);
    let token = sse_json(&events[1]);
    assert_eq!(token["object"], "text_completion");
    assert_eq!(token["choices"][0]["text"], "Sluice ");
    assert_eq!(
        sse_json(&events[2])["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(sse_json(&events[3])["usage"]["completion_tokens"], 1);
}

/// With tokens_per_second set, chunks arrive one by one rather than all at the end.
#[tokio::test]
async fn paced_stream_arrives_incrementally() {
    let mock = start(
        MockConfig::default()
            .completion_tokens(10)
            .tokens_per_second(50.0),
    )
    .await;
    let start = Instant::now();
    let mut response = client()
        .post(azure_url(&mock, "gpt-4o", "chat/completions"))
        .json(&stream_body(false))
        .send()
        .await
        .expect("request reaches the mock");
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("stream completes") {
        arrivals.push(start.elapsed());
        body.extend_from_slice(&chunk);
    }
    let events = sse_events(&String::from_utf8(body).expect("utf-8"));
    assert_eq!(events.len(), 1 + 10 + 2);
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    // 10 tokens at 50/s take 200 ms; the first chunk must not wait for them.
    assert!(arrivals.len() >= 5, "only {} reads", arrivals.len());
    assert!(
        last >= Duration::from_millis(180),
        "stream too fast: {last:?}"
    );
    assert!(
        last - first >= Duration::from_millis(100),
        "first {first:?}, last {last:?}"
    );
}
