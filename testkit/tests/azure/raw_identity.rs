//! The fake Entra ID token endpoint's wire behaviour, with raw HTTPS requests.

use reqwest::Response;
use serde_json::Value;
use sluice_testkit::azure::{FAKE_FEDERATED_TOKEN, FakeAzure, VAULT_SCOPE};

use crate::support::{TempDir, fake};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn post_form(fake: &FakeAzure, tenant: &str, form: &[(&str, &str)]) -> Response {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", fake.authority_host());
    let body: String = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace(':', "%3A").replace('/', "%2F").replace(' ', "+")
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    fake.http_client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("sent")
}

async fn json_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The success shape the SDK parses, and the token it describes.
#[tokio::test]
async fn answers_like_entra() {
    let fake = fake().await;
    let client_id = fake.client_id();
    let (status, body) = json_of(
        post_form(
            &fake,
            &fake.tenant_id(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("scope", VAULT_SCOPE),
                ("client_assertion", FAKE_FEDERATED_TOKEN),
                ("client_assertion_type", ASSERTION_TYPE),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    let token = body["access_token"].as_str().expect("token");
    assert!(token.starts_with("fake-aad-vault-azure-net-"), "{token}");
    assert!(fake.identity().is_valid(token, VAULT_SCOPE));
    assert_eq!(fake.identity().issued(VAULT_SCOPE)[0].client_id, client_id);
}

/// Entra's error shape: `error`, `AADSTS…` description, numeric codes.
#[tokio::test]
async fn errors_have_entra_shape() {
    let fake = fake().await;
    let client_id = fake.client_id();
    let (status, body) = json_of(
        post_form(
            &fake,
            &fake.tenant_id(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("scope", VAULT_SCOPE),
                ("client_secret", "wrong"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], serde_json::json!([7000215]));
    let description = body["error_description"].as_str().expect("description");
    assert!(
        description.starts_with("AADSTS7000215: Invalid client secret"),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "));
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());

    let (status, body) = json_of(post_form(&fake, "nobody", &[]).await).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(90002))
    );
    let (status, body) = json_of(
        post_form(
            &fake,
            &fake.tenant_id(),
            &[("grant_type", "client_credentials")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(900144))
    );
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("'client_id'"))
    );
}

#[tokio::test]
async fn non_form_bodies_and_wrong_methods_are_refused() {
    let fake = fake().await;
    let url = fake.identity().token_url();
    let json_body = fake
        .http_client()
        .post(&url)
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .expect("sent");
    let (status, body) = json_of(json_body).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(900144))
    );

    let (status, body) = json_of(fake.http_client().get(&url).send().await.expect("sent")).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(900561))
    );

    let other = format!("{}/common/oauth2/token", fake.authority_host());
    let (status, body) = json_of(fake.http_client().post(other).send().await.expect("sent")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    assert_eq!(
        fake.identity().token_requests(),
        1,
        "only POSTs to the token path count"
    );
}

#[tokio::test]
async fn writes_a_federated_token_file() {
    let fake = fake().await;
    let dir = TempDir::new();
    let nested = dir.path().join("var/run/secrets/azure/tokens");
    let path = fake.write_federated_token_file(&nested).expect("written");
    assert!(path.ends_with("azure-identity-token"));
    let content = std::fs::read_to_string(&path).expect("read");
    assert_eq!(content, FAKE_FEDERATED_TOKEN);
    assert_eq!(content.split('.').count(), 3, "JWT-shaped");
}
