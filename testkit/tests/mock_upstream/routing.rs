//! Which paths the mock serves and how it refuses the others.

use serde_json::json;
use sluice_testkit::mock_upstream::MockConfig;

use crate::support::{azure_url, chat_body, client, json_of, post, start};

/// Azure classic paths answer with the deployment as the model.
#[tokio::test]
async fn azure_classic_chat_echoes_the_deployment() {
    let mock = start(MockConfig::default()).await;
    let response = post(
        &azure_url(&mock, "gpt-4o-eastus", "chat/completions"),
        &chat_body(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["model"], "gpt-4o-eastus");
    assert_eq!(body["object"], "chat.completion");
}

/// `/v1/…` and `/openai/v1/…` take the model from the body.
#[tokio::test]
async fn v1_paths_route_by_body_model() {
    let mock = start(MockConfig::default()).await;
    for prefix in ["/v1", "/openai/v1"] {
        let mut body = chat_body();
        body["model"] = json!("gpt-4o-mini");
        let url = format!("{}{prefix}/chat/completions", mock.url());
        let response = post(&url, &body).await;
        assert_eq!(response.status(), 200, "{prefix}");
        assert_eq!(json_of(response).await["model"], "gpt-4o-mini", "{prefix}");
    }
}

/// Azure answers a call without `api-version` with a plain 404.
#[tokio::test]
async fn missing_api_version_is_resource_not_found() {
    let mock = start(MockConfig::default()).await;
    let url = format!("{}/openai/deployments/gpt-4o/chat/completions", mock.url());
    let response = post(&url, &chat_body()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        json_of(response).await,
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
}

/// A `/v1` call without `model` is a 400 naming the parameter.
#[tokio::test]
async fn missing_model_is_an_openai_400() {
    let mock = start(MockConfig::default()).await;
    for prefix in ["/v1", "/openai/v1"] {
        let url = format!("{}{prefix}/embeddings", mock.url());
        let response = post(&url, &json!({"input": "hi"})).await;
        assert_eq!(response.status(), 400);
        let error = &json_of(response).await["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], "model");
        assert_eq!(error["code"], json!(null));
        assert!(error["message"].is_string());
    }
}

/// Unknown paths get the 404 of the service they imitate.
#[tokio::test]
async fn unknown_paths_are_404_in_the_services_shape() {
    let mock = start(MockConfig::default()).await;
    let azure = post(
        &format!(
            "{}/openai/deployments/x/audio/speech?api-version=1",
            mock.url()
        ),
        &json!({}),
    )
    .await;
    assert_eq!(azure.status(), 404);
    assert_eq!(json_of(azure).await["error"]["code"], "404");

    let openai = post(&format!("{}/v1/images/generations", mock.url()), &json!({})).await;
    assert_eq!(openai.status(), 404);
    let error = &json_of(openai).await["error"];
    assert_eq!(
        error["message"],
        "Invalid URL (POST /v1/images/generations)"
    );
    assert_eq!(error["type"], "invalid_request_error");

    let elsewhere = post(&format!("{}/healthz", mock.url()), &json!({})).await;
    assert_eq!(elsewhere.status(), 404);
}

/// Inference paths only take POST.
#[tokio::test]
async fn get_on_an_inference_path_is_405() {
    let mock = start(MockConfig::default()).await;
    let response = client()
        .get(format!("{}/v1/chat/completions", mock.url()))
        .send()
        .await
        .expect("request reaches the mock");
    assert_eq!(response.status(), 405);
    assert_eq!(
        json_of(response).await["error"]["message"],
        "Invalid method for URL (GET /v1/chat/completions)"
    );
}
