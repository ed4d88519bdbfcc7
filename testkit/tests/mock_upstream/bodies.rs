//! Response bodies, usage numbers and headers of non-streamed calls.

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::MockConfig;

use crate::support::{CHAT_BODY_CHARS, azure_url, chat_body, client, header, json_of, post, start};

/// A chat completion looks like Azure's, with deterministic usage.
#[tokio::test]
async fn chat_completion_body_and_usage() {
    let mock = start(MockConfig::default().completion_tokens(5)).await;
    let response = post(
        &azure_url(&mock, "gpt-4o", "chat/completions"),
        &chat_body(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["created"]
            .as_u64()
            .is_some_and(|created| created > 1_700_000_000)
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "Sluice mock reply: the quick "
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    let prompt_tokens = CHAT_BODY_CHARS.div_ceil(4) as u64;
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": prompt_tokens + 5})
    );
    assert_eq!(body["prompt_filter_results"][0]["prompt_index"], 0);
}

/// `max_tokens` and `max_completion_tokens` cap the completion and finish it with "length".
#[tokio::test]
async fn token_caps_shorten_the_completion() {
    let mock = start(MockConfig::default()).await;
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    for cap in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat_body();
        body[cap] = json!(3);
        let body = json_of(post(&url, &body).await).await;
        assert_eq!(body["usage"]["completion_tokens"], 3, "{cap}");
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{cap}");
    }
    let mut body = chat_body();
    body["max_tokens"] = json!(1000);
    let body = json_of(post(&url, &body).await).await;
    assert_eq!(body["usage"]["completion_tokens"], 16);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

/// Legacy completions answer with `text_completion` and `choices[].text`.
#[tokio::test]
async fn completions_body() {
    let mock = start(MockConfig::default().completion_tokens(2)).await;
    let response = post(
        &azure_url(&mock, "davinci", "completions"),
        &json!({"prompt": "Once upon a time"}),
    )
    .await;
    let body = json_of(response).await;
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("cmpl-"))
    );
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "davinci");
    assert_eq!(body["choices"][0]["text"], "Sluice mock ");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 6);
}

/// One embedding per input, of the configured length.
#[tokio::test]
async fn embeddings_one_per_input() {
    let mock = start(MockConfig::default().embedding_dims(4)).await;
    let url = format!("{}/v1/embeddings", mock.url());
    let body =
        json_of(post(&url, &json!({"model": "emb", "input": ["abcd", "efghi"]})).await).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "emb");
    let data = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 2);
    for (index, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], index);
        assert_eq!(item["embedding"].as_array().map(Vec::len), Some(4));
    }
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );

    let single = json_of(post(&url, &json!({"model": "emb", "input": "hello"})).await).await;
    assert_eq!(single["data"].as_array().map(Vec::len), Some(1));
}

/// Every answer carries Azure's headers and the mock's name.
#[tokio::test]
async fn responses_carry_azure_headers() {
    let mock = start(MockConfig::named("westus-1").region("westus")).await;
    let response = post(
        &azure_url(&mock, "gpt-4o", "chat/completions"),
        &chat_body(),
    )
    .await;
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(header(&response, "x-mock-upstream"), Some("westus-1"));
    assert_eq!(header(&response, "x-ms-region"), Some("westus"));
    assert!(header(&response, "x-ratelimit-remaining-requests").is_some());
    assert!(header(&response, "x-ratelimit-remaining-tokens").is_some());
    let request_id = header(&response, "x-request-id").map(str::to_owned);
    let apim_id = header(&response, "apim-request-id").map(str::to_owned);
    assert!(request_id.as_ref().is_some_and(|id| id.len() == 36));
    assert!(apim_id.is_some());
    assert_ne!(request_id, apim_id);

    let again = post(
        &azure_url(&mock, "gpt-4o", "chat/completions"),
        &chat_body(),
    )
    .await;
    assert_ne!(
        header(&again, "x-request-id").map(str::to_owned),
        request_id
    );
}

/// Broken JSON and wrongly typed fields are OpenAI-shaped 400s.
#[tokio::test]
async fn invalid_bodies_are_400() {
    let mock = start(MockConfig::default()).await;
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    for body in [
        "{not json",
        "",
        r#"{"messages": [], "stream": "yes"}"#,
        "[1]",
    ] {
        let response = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches the mock");
        assert_eq!(response.status(), 400, "{body:?}");
        let error = &json_of(response).await["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body:?}");
        assert!(error["message"].is_string());
    }
    let no_messages = post(&url, &json!({"model": "x"})).await;
    assert_eq!(no_messages.status(), 400);
    assert_eq!(json_of(no_messages).await["error"]["param"], "messages");
}
