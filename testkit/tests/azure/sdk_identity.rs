//! The real credentials against the fake Entra ID, and the vault's view of their tokens.

use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::time::OffsetDateTime;
use sluice_testkit::azure::{FakeAzure, VAULT_SCOPE};

use crate::support::{
    TempDir, error_code, fake, get, secret_client, secret_credential, workload_credential,
};

const MANAGEMENT_SCOPE: &str = "https://management.azure.com/.default";

fn assert_credential_error(error: &azure_core::Error, needle: &str) {
    assert!(
        matches!(error.kind(), ErrorKind::Credential),
        "not a credential error: {error:?}"
    );
    assert!(
        error.to_string().contains(needle),
        "{needle} not in: {error}"
    );
}

/// A wrong client secret fails in the credential; the vault never sees a token.
#[tokio::test]
async fn a_wrong_client_secret_is_a_credential_error() {
    let fake = fake().await;
    fake.key_vault()
        .set_secret("myvault", "k", "v")
        .expect("set");
    let credential = secret_credential(&fake, "not-the-secret");
    let direct = credential
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("refused");
    assert_credential_error(&direct, "AADSTS7000215");

    let client = secret_client(&fake, "myvault", credential);
    let error = get(&client, "k", None).await.expect_err("no token");
    assert_credential_error(&error, "Invalid client secret provided");
    assert!(fake.key_vault().requests().iter().all(|r| !r.bearer_token));
    assert!(fake.identity().issued_all().is_empty());
}

/// A rotated client secret: new credentials with the old one are refused.
#[tokio::test]
async fn a_rotated_client_secret_refuses_the_old_one() {
    let fake = fake().await;
    let old = fake.client_secret();
    fake.identity()
        .set_client_secret("rotated")
        .expect("rotate");
    let stale = secret_credential(&fake, &old)
        .get_token(&[VAULT_SCOPE], None)
        .await;
    assert_credential_error(&stale.expect_err("old secret"), "AADSTS7000215");
    let fresh = secret_credential(&fake, "rotated")
        .get_token(&[VAULT_SCOPE], None)
        .await;
    assert!(fresh.is_ok(), "{fresh:?}");
}

/// Credentials built for the identity's tenant and client, which then change.
#[tokio::test]
async fn unknown_tenant_or_client_are_refused() {
    let fake = fake().await;
    let credential = secret_credential(&fake, &fake.client_secret());
    fake.identity()
        .set_tenant_id("another-tenant")
        .expect("tenant");
    let error = credential
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("tenant");
    assert_credential_error(&error, "AADSTS90002");

    let fake = crate::support::fake().await;
    let dir = TempDir::new();
    let file = fake.write_federated_token_file(dir.path()).expect("file");
    let credential = workload_credential(&fake, file);
    fake.identity()
        .set_client_id("someone-else")
        .expect("client");
    let error = credential
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("client");
    assert_credential_error(&error, "AADSTS700016");
}

/// An empty federated token is a missing assertion to Entra.
#[tokio::test]
async fn an_empty_federated_token_is_refused() {
    let fake = fake().await;
    let dir = TempDir::new();
    let file = dir.path().join("empty-token");
    std::fs::write(&file, "").expect("write");
    let error = workload_credential(&fake, file)
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("empty assertion");
    assert_credential_error(&error, "AADSTS7000218");
}

#[tokio::test]
async fn an_identity_outage_is_a_credential_error() {
    let fake = fake().await;
    fake.identity().set_down(true);
    let credential = secret_credential(&fake, &fake.client_secret());
    let error = credential
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("down");
    assert_credential_error(&error, "AADSTS90033");
    assert_eq!(fake.identity().token_requests(), 1);
    fake.identity().set_down(false);
    assert!(credential.get_token(&[VAULT_SCOPE], None).await.is_ok());
}

/// `expires_in` reaches the SDK's `expires_on`; expired tokens stop being valid; and with a
/// lifetime under the SDK's five-minute refresh window every call fetches a new token.
#[tokio::test]
async fn the_token_lifetime_is_honoured() {
    let fake = fake().await;
    fake.identity()
        .set_token_lifetime(Duration::from_secs(1))
        .expect("lifetime");
    let credential = secret_credential(&fake, &fake.client_secret());
    let token = credential
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect("token");
    let left = token.expires_on - OffsetDateTime::now_utc();
    assert!(
        left.whole_milliseconds() > 0 && left.whole_milliseconds() <= 1000,
        "{left}"
    );
    let issued = fake.identity().issued(VAULT_SCOPE);
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].token, token.token.secret());
    let sdk_expiry = SystemTime::from(token.expires_on);
    let skew = sdk_expiry
        .duration_since(issued[0].expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_millis(500), "{skew:?}");
    assert!(fake.identity().is_valid(token.token.secret(), VAULT_SCOPE));

    fake.key_vault()
        .set_secret("myvault", "k", "v")
        .expect("set");
    let client = secret_client(&fake, "myvault", credential);
    get(&client, "k", None).await.expect("first");
    get(&client, "k", None).await.expect("second");
    assert_eq!(
        fake.identity().token_requests(),
        3,
        "short-lived tokens are refreshed on every call"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!fake.identity().is_valid(token.token.secret(), VAULT_SCOPE));
    let response = vault_get(&fake, "/secrets/k?api-version=7.5", token.token.secret()).await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["message"], "The access token has expired.");
}

/// A real token for another resource is refused by the vault with the challenge.
#[tokio::test]
async fn a_token_for_another_scope_is_refused() {
    let fake = fake().await;
    fake.key_vault()
        .set_secret("myvault", "k", "v")
        .expect("set");
    let credential = secret_credential(&fake, &fake.client_secret());
    let token = credential
        .get_token(&[MANAGEMENT_SCOPE], None)
        .await
        .expect("token");
    assert!(
        fake.identity()
            .is_valid(token.token.secret(), MANAGEMENT_SCOPE)
    );
    assert!(!fake.identity().is_valid(token.token.secret(), VAULT_SCOPE));

    let response = vault_get(
        &fake,
        "/secrets/k/?api-version=2025-07-01",
        token.token.secret(),
    )
    .await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert_eq!(
        body["error"]["message"],
        "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com."
    );
}

/// azure_identity 1.0.0 reads Entra's `error_description` as a borrowed `&str`, which fails
/// on the `\r\n` real Entra puts before "Trace ID": the credential error then wraps a
/// `DataConversion` error (no status, no `error_code`) whose text still holds the AADSTS
/// message. The fake sends what Entra sends, so tests see what production sees. If this
/// test fails after an SDK upgrade, the SDK got fixed: errors then carry status and code.
#[tokio::test]
async fn entra_errors_reach_the_sdk_as_text_only() {
    let fake = fake().await;
    let error = secret_credential(&fake, "wrong")
        .get_token(&[VAULT_SCOPE], None)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("AADSTS7000215"), "{error}");
    let inner = error.into_inner().expect("wraps the cause");
    let cause = inner
        .downcast_ref::<azure_core::Error>()
        .expect("azure_core error inside");
    assert!(
        matches!(cause.kind(), ErrorKind::DataConversion),
        "SDK behaviour changed: {cause:?}"
    );
    assert_eq!(error_code(cause), None);
}

/// A raw GET on vault `myvault` with `token`, for what the SDK would not send.
async fn vault_get(fake: &FakeAzure, path_and_query: &str, token: &str) -> reqwest::Response {
    fake.http_client()
        .get(format!("{}{path_and_query}", fake.vault_url("myvault")))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
}
