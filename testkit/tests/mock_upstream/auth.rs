//! Key checks on Azure and OpenAI paths.

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::MockConfig;

use crate::support::{azure_url, chat_body, client, json_of, start};

const AZURE_401: &str = "Access denied due to invalid subscription key or wrong API endpoint. \
Make sure to provide a valid key for an active subscription and use a correct regional API \
endpoint for your resource.";

fn v1_body() -> Value {
    let mut body = chat_body();
    body["model"] = json!("gpt-4o");
    body
}

/// The configured key is accepted as `api-key` or bearer token, on both path styles.
#[tokio::test]
async fn accepts_the_key_in_either_header() {
    let mock = start(MockConfig::default().api_key("secret")).await;
    let azure = azure_url(&mock, "gpt-4o", "chat/completions");
    let v1 = format!("{}/v1/chat/completions", mock.url());
    for url in [&azure, &v1] {
        for (name, value) in [("api-key", "secret"), ("authorization", "Bearer secret")] {
            let response = client()
                .post(url)
                .header(name, value)
                .json(&v1_body())
                .send()
                .await
                .expect("request reaches the mock");
            assert_eq!(response.status(), 200, "{url} with {name}");
        }
    }
}

/// A wrong key gets Azure's 401; a missing one a 401 too.
#[tokio::test]
async fn refuses_wrong_or_missing_keys() {
    let mock = start(MockConfig::default().api_key("secret")).await;
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let wrong = client()
        .post(&url)
        .header("api-key", "nope")
        .json(&chat_body())
        .send()
        .await
        .expect("request reaches the mock");
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        json_of(wrong).await,
        json!({"error": {"code": "401", "message": AZURE_401}})
    );

    let missing = client()
        .post(&url)
        .json(&chat_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 401);
    assert_eq!(json_of(missing).await["error"]["code"], "401");

    let v1 = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .bearer_auth("nope")
        .json(&v1_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(v1.status(), 401);
    assert_eq!(json_of(v1).await["error"]["code"], "invalid_api_key");
}

/// Without a configured key, any key and no key are fine.
#[tokio::test]
async fn no_configured_key_accepts_anything() {
    let mock = start(MockConfig::default()).await;
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let with_key = client()
        .post(&url)
        .header("api-key", "whatever")
        .json(&chat_body());
    assert_eq!(with_key.send().await.expect("sent").status(), 200);
    let without = client().post(&url).json(&chat_body());
    assert_eq!(without.send().await.expect("sent").status(), 200);
}

/// A running mock's key can be rotated (and turned off and on); the config keeps the
/// starting key.
#[tokio::test]
async fn the_key_can_change_while_running() {
    let mock = start(MockConfig::default().api_key("old")).await;
    let url = azure_url(&mock, "gpt-4o", "chat/completions");
    let status_with = |key: &'static str| {
        let request = client()
            .post(&url)
            .header("api-key", key)
            .json(&chat_body());
        async move { request.send().await.expect("sent").status() }
    };
    assert_eq!(status_with("old").await, 200);

    mock.set_api_key(Some("new".to_owned()));
    assert_eq!(mock.api_key().as_deref(), Some("new"));
    assert_eq!(mock.config().api_key.as_deref(), Some("old"));
    assert_eq!(status_with("old").await, 401);
    assert_eq!(status_with("new").await, 200);

    mock.set_api_key(None);
    assert_eq!(status_with("anything").await, 200);
    let without = client().post(&url).json(&chat_body());
    assert_eq!(without.send().await.expect("sent").status(), 200);

    mock.set_api_key(Some("again".to_owned()));
    assert_eq!(status_with("new").await, 401);
}
