//! Shared setup: start a mock, call it, read SSE.

use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use sluice_testkit::mock_upstream::{MockConfig, MockHandle, MockUpstream};

pub const API_VERSION: &str = "2024-10-21";

pub async fn start(config: MockConfig) -> MockHandle {
    MockUpstream::start_local(config)
        .await
        .expect("mock starts on an ephemeral port")
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

pub fn azure_url(mock: &MockHandle, deployment: &str, operation: &str) -> String {
    format!(
        "{}/openai/deployments/{deployment}/{operation}?api-version={API_VERSION}",
        mock.url()
    )
}

pub fn chat_body() -> Value {
    json!({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]})
}

/// Characters in [`chat_body`]'s messages, hence 6 prompt tokens.
pub const CHAT_BODY_CHARS: usize = 23;

pub async fn post(url: &str, body: &Value) -> Response {
    client()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("request reaches the mock")
}

pub async fn json_of(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

pub fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name)?.to_str().ok()
}

/// The `data:` payloads of an SSE body; panics on anything that is not an SSE data event.
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body ends with a blank line: {body:?}"
    );
    body.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

pub fn sse_json(event: &str) -> Value {
    serde_json::from_str(event).unwrap_or_else(|error| panic!("{error}: {event}"))
}
