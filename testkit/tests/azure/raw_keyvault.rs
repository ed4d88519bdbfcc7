//! The fake Key Vault's wire behaviour, with raw HTTPS requests.

use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};
use sluice_testkit::azure::{FakeAzure, SUPPORTED_API_VERSIONS, VAULT_SCOPE};

use crate::support::fake;

async fn fake_with_secret() -> FakeAzure {
    let fake = fake().await;
    fake.key_vault()
        .set_secret("myvault", "api-key", "s3cret-value")
        .expect("set");
    fake
}

fn authed(fake: &FakeAzure, request: RequestBuilder) -> RequestBuilder {
    request.bearer_auth(fake.identity().mint_token(VAULT_SCOPE).token)
}

/// GET `url` with a valid vault token: status and JSON body.
async fn authed_get(fake: &FakeAzure, url: &str) -> (u16, Value) {
    json_of(
        authed(fake, fake.http_client().get(url))
            .send()
            .await
            .expect("sent"),
    )
    .await
}

async fn json_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The challenge, exactly as Key Vault sends it.
#[tokio::test]
async fn no_token_gets_the_challenge() {
    let fake = fake_with_secret().await;
    let url = format!(
        "{}/secrets/api-key/?api-version=2025-07-01",
        fake.vault_url("myvault")
    );
    let response = fake.http_client().get(&url).send().await.expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            fake.tenant_id()
        )
        .as_str()
    );
    assert_eq!(
        json_of(response).await.1,
        json!({"error": {"code": "Unauthorized",
            "message": "AKV10000: Request is missing a Bearer or PoP token."}})
    );
}

#[tokio::test]
async fn made_up_tokens_are_refused() {
    let fake = fake_with_secret().await;
    let url = format!(
        "{}/secrets/api-key?api-version=7.5",
        fake.vault_url("myvault")
    );
    let response = fake
        .http_client()
        .get(&url)
        .bearer_auth("fake-aad-vault-azure-net-1-0000000000000000")
        .send()
        .await
        .expect("sent");
    assert!(response.headers().contains_key("www-authenticate"));
    let (status, body) = json_of(response).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "The access token was not issued by the fake identity."
    );
}

/// The secret shape, with or without the trailing slash, on every supported api-version.
#[tokio::test]
async fn serves_key_vault_shapes_on_supported_versions() {
    let fake = fake_with_secret().await;
    for version in SUPPORTED_API_VERSIONS {
        for path in ["/secrets/api-key", "/secrets/api-key/", "/secrets/API-KEY"] {
            let url = format!("{}{path}?api-version={version}", fake.vault_url("myvault"));
            let (status, body) = authed_get(&fake, &url).await;
            assert_eq!(status, 200, "{url}: {body}");
            assert_eq!(body["value"], "s3cret-value");
            let id = body["id"].as_str().expect("id");
            assert!(
                id.starts_with("https://myvault.vault.azure.net/secrets/api-key/"),
                "{id}"
            );
            assert_eq!(body["attributes"]["enabled"], true);
            assert_eq!(body["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
            assert!(body["attributes"]["created"].is_u64());
            assert_eq!(body["tags"], json!({}));
        }
    }
}

#[tokio::test]
async fn missing_or_unknown_api_versions_are_bad_parameters() {
    let fake = fake_with_secret().await;
    let base = format!("{}/secrets/api-key/", fake.vault_url("myvault"));
    let cases = [
        (
            format!("{base}?api-version=2016-10-01"),
            "The specified version (2016-10-01) is not recognized. Consider using the latest \
             supported version (2025-07-01).",
        ),
        (
            base.clone(),
            "The api-version query parameter is missing. Consider using the latest supported \
             version (2025-07-01).",
        ),
    ];
    for (url, message) in cases {
        let (status, body) = authed_get(&fake, &url).await;
        assert_eq!(status, 400, "{url}");
        assert_eq!(
            body,
            json!({"error": {"code": "BadParameter", "message": message}})
        );
    }
}

/// Each bad request gets its own clear error.
#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let fake = fake_with_secret().await;
    let client = fake.http_client();
    let vault = fake.vault_url("myvault");
    let cases = [
        (
            format!("{vault}/secrets/bad_name?api-version=7.5"),
            400,
            "BadParameter",
        ),
        (format!("{vault}/keys/k?api-version=7.5"), 404, "NotFound"),
        (
            format!("{vault}/secrets?api-version=7.5&maxresults=99"),
            400,
            "BadParameter",
        ),
        (
            format!("{vault}/secrets?api-version=7.5&$skiptoken=x"),
            400,
            "BadParameter",
        ),
        (
            format!(
                "{}/secrets/k?api-version=7.5",
                fake.vault_url("nosuchvault")
            ),
            404,
            "VaultNotFound",
        ),
        (
            format!(
                "https://127.0.0.1:{}/secrets/k?api-version=7.5",
                fake.key_vault().port()
            ),
            404,
            "VaultNotFound",
        ),
    ];
    for (url, status, code) in cases {
        let (got, body) =
            json_of(authed(&fake, client.get(&url)).send().await.expect("sent")).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{url}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    let put = authed(
        &fake,
        client.put(format!("{vault}/secrets/k?api-version=7.5")),
    )
    .json(&json!({"value": "x"}));
    let (status, body) = json_of(put.send().await.expect("sent")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
}

#[tokio::test]
async fn an_outage_answers_503_json_to_everyone() {
    let fake = fake_with_secret().await;
    fake.key_vault().set_down(true);
    let url = format!(
        "{}/secrets/api-key?api-version=7.5",
        fake.vault_url("myvault")
    );
    let (status, body) = json_of(fake.http_client().get(&url).send().await.expect("sent")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "ServiceUnavailable");
}

/// The request log records what tests need and never a value or a token.
#[tokio::test]
async fn the_request_log_holds_no_secrets() {
    let fake = fake_with_secret().await;
    let token = fake.identity().mint_token(VAULT_SCOPE).token;
    let url = format!(
        "{}/secrets/api-key?api-version=7.5",
        fake.vault_url("myvault")
    );
    let response = fake
        .http_client()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await;
    assert_eq!(response.expect("sent").status(), 200);
    let requests = fake.key_vault().requests();
    assert_eq!(requests.len(), 1);
    let logged = format!("{requests:?}");
    assert!(
        !logged.contains("s3cret-value") && !logged.contains(&token),
        "{logged}"
    );
    assert_eq!(requests[0].method, "GET");
    assert!(requests[0].bearer_token);

    fake.key_vault().reset_requests();
    assert_eq!(fake.key_vault().request_count(), 0);
    assert!(fake.key_vault().requests().is_empty());
}

#[tokio::test]
async fn urls_use_the_real_vault_domain() {
    let fake = fake().await;
    let port = fake.key_vault().port();
    assert_eq!(
        fake.vault_url("myvault"),
        format!("https://myvault.vault.azure.net:{port}")
    );
    assert_eq!(
        fake.url_template(),
        format!("https://{{vault}}.vault.azure.net:{port}")
    );
}

#[tokio::test]
async fn test_controls_refuse_bad_input() {
    use sluice_testkit::azure::KeyVaultError;

    let fake = fake().await;
    let vault = fake.key_vault();
    assert_eq!(
        vault.set_secret("x", "k", "v"),
        Err(KeyVaultError::InvalidVaultName("x".to_owned()))
    );
    assert_eq!(
        vault.set_secret("myvault", "a.b", "v"),
        Err(KeyVaultError::InvalidSecretName("a.b".to_owned()))
    );
    assert_eq!(
        vault.disable_version("myvault", "k", "v1"),
        Err(KeyVaultError::UnknownVault("myvault".to_owned()))
    );
    vault.set_secret("myvault", "k", "v").expect("set");
    assert!(matches!(
        vault.disable_version("myvault", "other", "v1"),
        Err(KeyVaultError::UnknownSecret { .. })
    ));
    let error = vault
        .disable_version("myvault", "k", "v1")
        .expect_err("unknown version");
    assert_eq!(
        error.to_string(),
        "secret \"k\" in vault \"myvault\" has no version \"v1\""
    );
}

/// The vault comes from `:authority` over HTTP/2 (what the SDK's client negotiates) and from
/// `Host` over HTTP/1.1.
#[tokio::test]
async fn both_http_versions_name_the_vault() {
    use std::sync::Arc;

    use sluice_testkit::azure::LoopbackResolver;

    let fake = fake_with_secret().await;
    let url = format!(
        "{}/secrets/api-key?api-version=7.6",
        fake.vault_url("myvault")
    );
    let h2 = authed(&fake, fake.http_client().get(&url))
        .send()
        .await
        .expect("h2");
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), 200);

    let ca = reqwest::Certificate::from_der(&fake.ca().ca_der()).expect("CA");
    let http1 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .dns_resolver(Arc::new(LoopbackResolver))
        .no_proxy()
        .http1_only()
        .build()
        .expect("client");
    let h1 = authed(&fake, http1.get(&url)).send().await.expect("h1");
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);
    let vaults: Vec<Option<String>> = fake
        .key_vault()
        .requests()
        .into_iter()
        .map(|r| r.vault)
        .collect();
    assert_eq!(
        vaults,
        [Some("myvault".to_owned()), Some("myvault".to_owned())]
    );
}
