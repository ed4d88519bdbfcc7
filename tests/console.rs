//! The admin console in a real browser (headless Chromium through chromedriver): an operator
//! signs in, builds a pool, manages a backend and a client key, reads the audit log and signs
//! out. With SLUICE_UPDATE_SCREENSHOTS=1 it also refreshes docs/screenshots/keys-*.png.

mod support;

use std::time::Duration;

use fantoccini::Locator;
use serde_json::Value;
use support::browser::{
    Browser, click, field_value, fill, navigate, path, screenshots, sign_in, text,
};
use support::{ADMIN_TOKEN, TestControlPlane, TestDatabase, expect_status};

#[tokio::test]
async fn an_operator_manages_pools_backends_and_keys() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let browser = Browser::start().await;
    let client = &browser.client;
    let ui = |path: &str| cp.url(path);

    // Signed out, the console sends the browser to sign in; the skip link comes first.
    client.goto(&ui("/ui/")).await.unwrap();
    assert_eq!(path(client).await, "/ui/sign-in");
    sign_in(client, ADMIN_TOKEN).await;
    assert_eq!(path(client).await, "/ui/");
    assert_eq!(text(client, "main h1").await, "Overview");
    let htmx = client.execute("return typeof htmx", vec![]).await.unwrap();
    assert_eq!(htmx, "object", "htmx loads under the CSP");
    let first_focus = client
        .execute(
            "return document.querySelector('a, button, input, select, textarea').className",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first_focus, "skip-link");

    // A pool, then a backend; a bad URL is explained next to its field.
    client.goto(&ui("/ui/pools")).await.unwrap();
    fill(client, "#f-name", "gpt-4o").await;
    navigate(client, "form[action='/ui/pools'] button[type=submit]").await;
    assert_eq!(path(client).await, "/ui/pools/gpt-4o");
    assert!(text(client, "main").await.contains("no backends yet"));

    fill(client, "#f-name", "eastus").await;
    fill(client, "#f-url", "ftp://aoai-eastus.example").await;
    fill(client, "#f-secret", "keyvault://my-vault/aoai-eastus-key").await;
    navigate(client, "form[action$='/backends'] button[type=submit]").await;
    let url_field = client.find(Locator::Css("#f-url")).await.unwrap();
    assert_eq!(
        url_field.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(text(client, "#e-url").await.contains("http or https"));
    fill(client, "#f-url", "https://aoai-eastus.openai.azure.com").await;
    fill(client, "#f-deployments", "gpt-4o = gpt-4o-2024-08-06").await;
    navigate(client, "form[action$='/backends'] button[type=submit]").await;
    assert_eq!(path(client).await, "/ui/pools/gpt-4o");
    fill(client, "#f-name", "westus").await;
    fill(client, "#f-url", "https://aoai-westus.openai.azure.com").await;
    fill(client, "#f-secret", "keyvault://my-vault/aoai-westus-key").await;
    fill(client, "#f-priority", "1").await;
    navigate(client, "form[action$='/backends'] button[type=submit]").await;
    assert!(
        text(client, "#backend-eastus .badge")
            .await
            .contains("Enabled")
    );

    // Disable and enable again: the state reads in words, not colour alone.
    navigate(client, "#backend-eastus form[action$='/enabled'] button").await;
    assert!(
        text(client, "#backend-eastus .badge")
            .await
            .contains("Disabled")
    );
    let backend = expect_status(cp.get("/api/v1/pools/gpt-4o/backends/eastus").await, 200).await;
    assert_eq!(backend["enabled"], false);
    navigate(client, "#backend-eastus form[action$='/enabled'] button").await;
    assert!(
        text(client, "#backend-eastus .badge")
            .await
            .contains("Enabled")
    );

    // Weight and priority.
    fill(client, "#w-eastus", "5").await;
    fill(client, "#p-eastus", "2").await;
    navigate(client, "#backend-eastus form[action$='/balance'] button").await;
    let backend = expect_status(cp.get("/api/v1/pools/gpt-4o/backends/eastus").await, 200).await;
    assert_eq!(
        (backend["weight"].as_u64(), backend["priority"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(backend["deployments"]["gpt-4o"], "gpt-4o-2024-08-06");

    // A key: its secret is shown once, with a copy button, and never again.
    client.goto(&ui("/ui/keys")).await.unwrap();
    fill(client, "#f-id", "team-a").await;
    click(client, "input[name=pools][value='gpt-4o']").await;
    fill(client, "#f-requests_per_minute", "600").await;
    navigate(client, "form[action='/ui/keys'] button[type=submit]").await;
    let secret = field_value(client, "#secret").await;
    assert!(secret.starts_with("sk-sluice-"), "{secret}");
    assert!(
        text(client, "main")
            .await
            .contains("only time the key is shown")
    );
    client
        .find(Locator::Css("button[data-copy=secret]"))
        .await
        .unwrap();
    for page in ["/ui/keys/team-a", "/ui/keys"] {
        client.goto(&ui(page)).await.unwrap();
        let html = client.source().await.unwrap();
        assert!(!html.contains(&secret), "{page} shows the secret again");
        assert!(
            html.contains(&secret[secret.len() - 4..]),
            "{page} shows the hint"
        );
    }

    // Edit its limits: a bad value is refused next to its field, a good one saved.
    client.goto(&ui("/ui/keys/team-a")).await.unwrap();
    fill(client, "#f-requests_per_minute", "0").await;
    navigate(client, "form[action='/ui/keys/team-a'] button[type=submit]").await;
    assert!(
        text(client, "#e-requests_per_minute")
            .await
            .contains("between 1 and")
    );
    fill(client, "#f-requests_per_minute", "1200").await;
    fill(client, "#f-quota_tokens", "1000000").await;
    client
        .find(Locator::Css("#f-quota_period option[value=day]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    navigate(client, "form[action='/ui/keys/team-a'] button[type=submit]").await;
    assert!(text(client, ".notice.ok").await.contains("Saved"));
    assert_eq!(
        text(client, "#key-limits").await,
        "1200 requests/min · 1000000 tokens/day"
    );
    let key = expect_status(cp.get("/api/v1/keys/team-a").await, 200).await;
    assert_eq!(key["limits"]["token_quota"]["period"], "day");
    assert_eq!(key["pools"], serde_json::json!(["gpt-4o"]));

    // A second key for the screenshots, then the screenshots.
    client.goto(&ui("/ui/keys")).await.unwrap();
    fill(client, "#f-id", "batch-jobs").await;
    fill(client, "#f-tokens_per_minute", "200000").await;
    navigate(client, "form[action='/ui/keys'] button[type=submit]").await;
    // The overview, pool and usage screenshots show a fleet: tests/console_fleet.rs.
    screenshots(&browser, &ui("/ui/keys"), "keys").await;

    // Revoke, through the confirmation page.
    client.goto(&ui("/ui/keys/team-a")).await.unwrap();
    navigate(client, "a[href='/ui/keys/team-a/revoke']").await;
    assert!(
        text(client, "main h1")
            .await
            .contains("Revoke client key team-a?")
    );
    navigate(
        client,
        "form[action='/ui/keys/team-a/revoke'] button[type=submit]",
    )
    .await;
    assert_eq!(path(client).await, "/ui/keys");
    assert!(!text(client, "#keys").await.contains("team-a"));
    expect_status(cp.get("/api/v1/keys/team-a").await, 404).await;

    // Every change is in the audit log under the admin token's id.
    client.goto(&ui("/ui/audit")).await.unwrap();
    let audit = text(client, "#audit").await;
    for resource in [
        "keys/team-a",
        "pools/gpt-4o/backends/eastus",
        "pools/gpt-4o",
    ] {
        assert!(audit.contains(resource), "{resource} missing from {audit}");
    }
    let api: Value = expect_status(cp.get("/api/v1/audit").await, 200).await;
    let entries = api["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 10, "{api}");
    assert!(
        entries
            .iter()
            .all(|e| e["actor"].as_str().unwrap().starts_with("admin:"))
    );

    // Signing out ends the session: the console asks to sign in again.
    navigate(client, "form[action='/ui/sign-out'] button").await;
    assert_eq!(path(client).await, "/ui/sign-in");
    client.goto(&ui("/ui/pools")).await.unwrap();
    assert_eq!(path(client).await, "/ui/sign-in");
    browser.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_explained_and_nothing_opens() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let browser = Browser::start().await;
    let client = &browser.client;
    client.goto(&cp.url("/ui/sign-in")).await.unwrap();
    sign_in(client, "this-is-not-the-admin-token").await;
    assert_eq!(path(client).await, "/ui/sign-in");
    assert!(
        text(client, "#sign-in-error")
            .await
            .contains("That admin token is not accepted")
    );
    let token = client.find(Locator::Css("#f-token")).await.unwrap();
    assert_eq!(
        token.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    client.goto(&cp.url("/ui/keys")).await.unwrap();
    assert_eq!(path(client).await, "/ui/sign-in");
    tokio::time::sleep(Duration::from_millis(10)).await;
    browser.stop().await;
}
