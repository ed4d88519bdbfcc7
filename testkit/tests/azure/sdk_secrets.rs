//! The real `SecretClient` against the fake Key Vault.

use std::sync::Arc;

use azure_core::http::StatusCode;
use azure_security_keyvault_secrets::ResourceExt as _;
use azure_security_keyvault_secrets::models::{
    SecretClientListSecretPropertiesOptions, SecretClientListSecretPropertiesVersionsOptions,
};
use sluice_testkit::azure::VAULT_SCOPE;

use crate::support::{
    TempDir, client_for, collect, error_code, fake, get, secret_client, workload_credential,
};

/// Workload identity end to end: token file → fake Entra → challenge → secret.
#[tokio::test]
async fn reads_the_latest_value_through_the_challenge() {
    let fake = fake().await;
    fake.key_vault()
        .set_secret("myvault", "api-key", "k1")
        .expect("set");
    let dir = TempDir::new();
    let token_file = fake
        .write_federated_token_file(dir.path())
        .expect("token file");
    let client = secret_client(&fake, "myvault", workload_credential(&fake, token_file));

    let secret = get(&client, "api-key", None).await.expect("secret");
    assert_eq!(secret.value.as_deref(), Some("k1"));
    let id = secret.resource_id().expect("id parses");
    assert_eq!(id.vault_url, "https://myvault.vault.azure.net");
    assert_eq!(id.name, "api-key");
    assert_eq!(id.version.as_ref().map(String::len), Some(32));
    let attributes = secret.attributes.expect("attributes");
    assert_eq!(attributes.enabled, Some(true));
    assert!(attributes.created.is_some() && attributes.updated.is_some());

    // The SDK's first request goes without a token, gets the challenge, then retries.
    let requests = fake.key_vault().requests();
    let seen: Vec<(bool, u16)> = requests
        .iter()
        .map(|r| (r.bearer_token, r.status))
        .collect();
    assert_eq!(seen, [(false, 401), (true, 200)]);
    assert_eq!(requests[0].path, "/secrets/api-key/");
    assert_eq!(requests[0].query.as_deref(), Some("api-version=2025-07-01"));
    assert_eq!(requests[0].vault.as_deref(), Some("myvault"));
    // One token, for the vault scope only.
    assert_eq!(fake.identity().token_requests(), 1);
    let issued = fake.identity().issued_all();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].scope, VAULT_SCOPE);

    // The token is cached: a second read is one request, no new token.
    get(&client, "api-key", None).await.expect("again");
    assert_eq!(fake.key_vault().request_count(), 3);
    assert_eq!(fake.identity().token_requests(), 1);
}

/// Rotation: a new version becomes the latest; the old one stays readable by version.
#[tokio::test]
async fn rotation_adds_a_version_and_keeps_the_old_one() {
    let fake = fake().await;
    let vault = fake.key_vault();
    let v1 = vault.set_secret("myvault", "api-key", "k1").expect("set");
    let client = client_for(&fake, "myvault");
    assert_eq!(
        get(&client, "api-key", None)
            .await
            .expect("latest")
            .value
            .as_deref(),
        Some("k1")
    );

    let v2 = vault
        .set_secret("myvault", "api-key", "k2")
        .expect("rotate");
    assert_ne!(v1, v2);
    let latest = get(&client, "api-key", None).await.expect("latest");
    assert_eq!(latest.value.as_deref(), Some("k2"));
    assert_eq!(latest.resource_id().expect("id").version, Some(v2.clone()));
    let old = get(&client, "api-key", Some(&v1)).await.expect("v1");
    assert_eq!(old.value.as_deref(), Some("k1"));
    assert_eq!(
        fake.key_vault().requests().last().map(|r| r.path.clone()),
        Some(format!("/secrets/api-key/{v1}"))
    );
}

#[tokio::test]
async fn a_missing_secret_or_version_is_a_404() {
    let fake = fake().await;
    fake.key_vault().create_vault("myvault").expect("vault");
    let client = client_for(&fake, "myvault");
    let error = get(&client, "nope", None).await.expect_err("missing");
    assert_eq!(error.http_status(), Some(StatusCode::NotFound));
    assert_eq!(error_code(&error), Some("SecretNotFound"));
    assert!(
        error
            .to_string()
            .contains("A secret with (name/id) nope was not found"),
        "{error}"
    );

    fake.key_vault()
        .set_secret("myvault", "k", "v")
        .expect("set");
    let error = get(&client, "k", Some("0123456789abcdef0123456789abcdef"))
        .await
        .expect_err("missing version");
    assert_eq!(error.http_status(), Some(StatusCode::NotFound));
    assert_eq!(error_code(&error), Some("SecretNotFound"));
}

#[tokio::test]
async fn an_unknown_vault_is_a_404() {
    let fake = fake().await;
    let client = client_for(&fake, "othervault");
    let error = get(&client, "k", None).await.expect_err("no such vault");
    assert_eq!(error.http_status(), Some(StatusCode::NotFound));
    assert_eq!(error_code(&error), Some("VaultNotFound"));
}

/// An outage is an error for the SDK (no retries in test options), and recovery works.
#[tokio::test]
async fn a_vault_outage_is_an_error_until_it_ends() {
    let fake = fake().await;
    fake.key_vault()
        .set_secret("myvault", "k", "v")
        .expect("set");
    let client = client_for(&fake, "myvault");
    fake.key_vault().set_down(true);
    let error = get(&client, "k", None).await.expect_err("down");
    assert_eq!(error.http_status(), Some(StatusCode::ServiceUnavailable));
    assert_eq!(error_code(&error), Some("ServiceUnavailable"));

    fake.key_vault().set_down(false);
    assert_eq!(
        get(&client, "k", None).await.expect("up").value.as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn a_disabled_version_is_forbidden() {
    let fake = fake().await;
    let vault = fake.key_vault();
    let v1 = vault.set_secret("myvault", "k", "one").expect("set");
    let v2 = vault.set_secret("myvault", "k", "two").expect("set");
    vault.disable_version("myvault", "k", &v2).expect("disable");
    let client = client_for(&fake, "myvault");
    let error = get(&client, "k", None)
        .await
        .expect_err("latest is disabled");
    assert_eq!(error.http_status(), Some(StatusCode::Forbidden));
    assert_eq!(error_code(&error), Some("Forbidden"));
    assert_eq!(
        get(&client, "k", Some(&v1))
            .await
            .expect("v1")
            .value
            .as_deref(),
        Some("one")
    );
    vault.enable_version("myvault", "k", &v2).expect("enable");
    assert_eq!(
        get(&client, "k", None)
            .await
            .expect("latest")
            .value
            .as_deref(),
        Some("two")
    );
}

/// Lists carry no values, and the SDK pages through `nextLink`s.
#[tokio::test]
async fn lists_secrets_and_versions_page_by_page() {
    let fake = fake().await;
    let vault = fake.key_vault();
    for name in ["a", "b", "c"] {
        vault.set_secret("myvault", name, "value").expect("set");
    }
    vault.set_secret("myvault", "b", "value2").expect("rotate");
    let client = client_for(&fake, "myvault");

    let one_per_page = SecretClientListSecretPropertiesOptions {
        maxresults: Some(1),
        ..Default::default()
    };
    let secrets = collect(
        client
            .list_secret_properties(Some(one_per_page))
            .expect("pager"),
    )
    .await
    .expect("list");
    let ids: Vec<String> = secrets.iter().filter_map(|s| s.id.clone()).collect();
    assert_eq!(
        ids,
        ["a", "b", "c"].map(|n| format!("https://myvault.vault.azure.net/secrets/{n}"))
    );

    let versions = collect(
        client
            .list_secret_properties_versions(
                "b",
                Some(SecretClientListSecretPropertiesVersionsOptions::default()),
            )
            .expect("pager"),
    )
    .await
    .expect("versions");
    assert_eq!(versions.len(), 2);
    let list_paths: Vec<String> = fake
        .key_vault()
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        list_paths,
        ["/secrets", "/secrets", "/secrets", "/secrets/b/versions"]
    );
}

/// The same credential serves two clients on two vaults: one token, two challenges.
#[tokio::test]
async fn one_server_serves_many_vaults() {
    let fake = fake().await;
    fake.key_vault()
        .set_secret("vault-one", "k", "1")
        .expect("set");
    fake.key_vault()
        .set_secret("vault-two", "k", "2")
        .expect("set");
    let credential = crate::support::secret_credential(&fake, &fake.client_secret());
    let one = secret_client(&fake, "vault-one", Arc::clone(&credential) as _);
    let two = secret_client(&fake, "vault-two", credential);
    assert_eq!(
        get(&one, "k", None).await.expect("1").value.as_deref(),
        Some("1")
    );
    assert_eq!(
        get(&two, "k", None).await.expect("2").value.as_deref(),
        Some("2")
    );
    assert_eq!(
        fake.identity().token_requests(),
        1,
        "the credential caches its token"
    );
}
