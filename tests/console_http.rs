//! The admin console's security over plain HTTP (no browser): sessions, CSRF and origin
//! checks, cookie attributes, expiry, token rotation, security headers.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::console::{Visitor, form, location, session_cookie};
use support::{ADMIN_TOKEN, TestControlPlane, TestDatabase, expect_status, test_config};

const OTHER_TOKEN: &str = "test-admin-token-other-0123456789";

async fn signed_in(cp: &TestControlPlane) -> Visitor {
    let mut visitor = Visitor::new(cp.addr);
    let response = visitor.sign_in(ADMIN_TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/ui/");
    visitor
}

async fn pool_names(cp: &TestControlPlane) -> Vec<String> {
    let pools = expect_status(cp.get("/api/v1/pools").await, 200).await;
    pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn without_a_session_pages_redirect_and_changes_are_refused() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let visitor = Visitor::new(cp.addr);
    let page = visitor.get("/ui/").await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&page), "/ui/sign-in");
    let change = visitor
        .post(
            "/ui/pools",
            form(&[("name", "p"), ("strategy", "round_robin")]),
        )
        .await;
    assert_eq!(change.status(), StatusCode::UNAUTHORIZED);
    let forged = Visitor {
        cookie: Some("sluice_console=forged-session-id".into()),
        ..Visitor::new(cp.addr)
    };
    assert_eq!(
        forged.get("/ui/pools").await.status(),
        StatusCode::SEE_OTHER
    );
    let htmx = visitor
        .client
        .get(format!("{}/ui/proxies", visitor.base))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(htmx.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(htmx.headers()["hx-redirect"], "/ui/sign-in");
    assert!(pool_names(&cp).await.is_empty());
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_scoped() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let mut visitor = Visitor::new(cp.addr);
    let response = visitor.sign_in(ADMIN_TOKEN).await;
    let cookie = session_cookie(&response).expect("sign-in sets the session cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for expected in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(
            attributes.contains(&expected),
            "{expected} missing: {cookie}"
        );
    }
    assert!(!attributes.contains(&"Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(ADMIN_TOKEN));

    // Behind a TLS-terminating proxy the cookie is Secure.
    let tls = visitor
        .client
        .post(format!("{}/ui/sign-in", visitor.base))
        .header("origin", format!("https://{}", cp.addr))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", ADMIN_TOKEN)]))
        .send()
        .await
        .unwrap();
    assert_eq!(tls.status(), StatusCode::SEE_OTHER);
    let secure = session_cookie(&tls).unwrap();
    assert!(secure.split(';').any(|a| a.trim() == "Secure"), "{secure}");

    // Signing out clears the cookie and ends the session on the server too.
    let csrf = visitor.csrf("/ui/").await;
    let out = visitor.post("/ui/sign-out", form(&[("csrf", &csrf)])).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&out).unwrap().contains("Max-Age=0"));
    assert_eq!(visitor.get("/ui/").await.status(), StatusCode::SEE_OTHER);
}

on_both_databases! {
    /// Changes need the session's CSRF token; with it they land, audited under the token id.
    async fn changes_need_the_sessions_csrf_token(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        let visitor = signed_in(&cp).await;
        let pool = [("name", "gpt-4o"), ("strategy", "round_robin")];

        let missing = visitor.post("/ui/pools", form(&pool)).await;
        assert_eq!(missing.status(), StatusCode::FORBIDDEN);
        let wrong = [pool[0], pool[1], ("csrf", "not-the-token")];
        assert_eq!(visitor.post("/ui/pools", form(&wrong)).await.status(), StatusCode::FORBIDDEN);
        // Another session's token is no better.
        let other = signed_in(&cp).await;
        let others_token = other.csrf("/ui/pools").await;
        let foreign = [pool[0], pool[1], ("csrf", others_token.as_str())];
        assert_eq!(visitor.post("/ui/pools", form(&foreign)).await.status(), StatusCode::FORBIDDEN);
        assert!(pool_names(&cp).await.is_empty());

        let csrf = visitor.csrf("/ui/pools").await;
        let good = [pool[0], pool[1], ("csrf", csrf.as_str())];
        let created = visitor.post("/ui/pools", form(&good)).await;
        assert_eq!(created.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&created), "/ui/pools/gpt-4o");
        assert_eq!(pool_names(&cp).await, ["gpt-4o"]);

        // The header form of the token (htmx) works too.
        let by_header = visitor
            .client
            .post(format!("{}/ui/pools", visitor.base))
            .header("origin", &visitor.base)
            .header("cookie", visitor.cookie.as_deref().unwrap())
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("name", "gpt-4o-mini"), ("strategy", "weighted")]))
            .send()
            .await
            .unwrap();
        assert_eq!(by_header.status(), StatusCode::SEE_OTHER);

        let audit = expect_status(cp.get("/api/v1/audit").await, 200).await;
        let entry = &audit["entries"][0];
        assert_eq!(entry["resource"], "pools/gpt-4o");
        let actor = entry["actor"].as_str().unwrap();
        assert!(actor.starts_with("admin:") && actor.len() == 14, "{actor}");
    }
}

#[tokio::test]
async fn foreign_or_missing_origins_are_refused() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let visitor = signed_in(&cp).await;
    let csrf = visitor.csrf("/ui/pools").await;
    let body = || form(&[("name", "p"), ("strategy", "round_robin"), ("csrf", &csrf)]);
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let response = visitor.post_from(origin, "/ui/pools", body()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
    }
    // Another port on the same host is another origin.
    let port = cp.addr.port().wrapping_add(1);
    let sibling = format!("http://127.0.0.1:{port}");
    let response = visitor.post_from(Some(&sibling), "/ui/pools", body()).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(pool_names(&cp).await.is_empty());

    // Login CSRF: another site cannot sign a browser in, even with a valid token.
    let stranger = Visitor::new(cp.addr);
    let login = stranger
        .post_from(
            Some("http://evil.example"),
            "/ui/sign-in",
            form(&[("token", ADMIN_TOKEN)]),
        )
        .await;
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(&login).is_none());
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_a_clear_message() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let mut visitor = Visitor::new(cp.addr);
    let response = visitor.sign_in("not-the-admin-token-at-all").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(session_cookie(&response).is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains("That admin token is not accepted"), "{html}");
    assert!(
        !html.contains("not-the-admin-token-at-all"),
        "the typed token is not echoed"
    );
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let visitor = signed_in(&cp).await;
    let csrf = visitor.csrf("/ui/").await;
    let mut db = cp.database.connect().await;
    sqlx::query("UPDATE console_sessions SET expires_at = 0")
        .execute(&mut db)
        .await
        .unwrap();
    let page = visitor.get("/ui/").await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&page), "/ui/sign-in");
    let change = visitor
        .post(
            "/ui/pools",
            form(&[("name", "p"), ("strategy", "round_robin"), ("csrf", &csrf)]),
        )
        .await;
    assert_eq!(change.status(), StatusCode::UNAUTHORIZED);
}

/// Sessions live in the database: every replica with the token accepts them, and a replica
/// from which the token was rotated away refuses them (and forgets them).
#[tokio::test]
async fn sessions_span_replicas_and_end_with_their_token() {
    let database = TestDatabase::sqlite();
    let url = database.url().to_owned();
    let both = vec![ADMIN_TOKEN.to_owned(), OTHER_TOKEN.to_owned()];
    let first = TestControlPlane::start_config(
        database,
        sluice_control_plane::ControlPlaneConfig {
            admin_tokens: both.clone(),
            ..test_config(url.clone())
        },
    )
    .await;
    let mut visitor = Visitor::new(first.addr);
    assert_eq!(
        visitor.sign_in(OTHER_TOKEN).await.status(),
        StatusCode::SEE_OTHER
    );
    let cookie = visitor.cookie.clone();

    let second = TestControlPlane::start_config(
        TestDatabase::sqlite(),
        sluice_control_plane::ControlPlaneConfig {
            admin_tokens: both,
            ..test_config(url.clone())
        },
    )
    .await;
    let on_second = Visitor {
        cookie: cookie.clone(),
        ..Visitor::new(second.addr)
    };
    assert_eq!(on_second.get("/ui/").await.status(), StatusCode::OK);

    // The rotation finished: only ADMIN_TOKEN is configured now.
    let rotated = TestControlPlane::start_config(
        TestDatabase::sqlite(),
        sluice_control_plane::ControlPlaneConfig {
            admin_tokens: vec![ADMIN_TOKEN.to_owned()],
            ..test_config(url)
        },
    )
    .await;
    let on_rotated = Visitor {
        cookie,
        ..Visitor::new(rotated.addr)
    };
    let refused = on_rotated.get("/ui/").await;
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&refused), "/ui/sign-in");
    assert_eq!(
        on_second.get("/ui/").await.status(),
        StatusCode::SEE_OTHER,
        "the refused session was deleted, so no replica honours it any more"
    );
}

#[tokio::test]
async fn responses_carry_security_headers_and_assets_cache_for_long() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let visitor = signed_in(&cp).await;
    for path in ["/ui/sign-in", "/ui/", "/ui/keys", "/ui/no-such-page"] {
        let response = visitor.get(path).await;
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
    }
    let html = visitor.get("/ui/").await.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline code"
    );
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/ui/assets/"))
        .collect();
    assert_eq!(assets.len(), 3, "{assets:?}");
    assert!(assets.contains(&"/ui/assets/htmx-2.0.4.min.js"));
    for asset in assets {
        let response = visitor.get(asset).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
    assert_eq!(
        visitor.get("/ui/no-such-page").await.status(),
        StatusCode::NOT_FOUND
    );
    // The console is not part of the API and stays out of its document.
    let doc: Value = expect_status(cp.get("/openapi.json").await, 200).await;
    assert!(
        doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|p| !p.starts_with("/ui"))
    );
}

/// `--insecure-no-admin-auth` (as `sluice dev` runs): no sign-in, but changes still need to
/// come from the console's own origin.
#[tokio::test]
async fn without_admin_auth_the_console_opens_but_still_checks_origins() {
    let database = TestDatabase::sqlite();
    let config = sluice_control_plane::ControlPlaneConfig {
        admin_tokens: Vec::new(),
        insecure_no_admin_auth: true,
        ..test_config(database.url().to_owned())
    };
    let cp = TestControlPlane::start_config(database, config).await;
    let visitor = Visitor::new(cp.addr);
    let page = visitor.get("/ui/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Authentication off"));
    assert_eq!(location(&visitor.get("/ui/sign-in").await), "/ui/");
    let body = || form(&[("name", "p"), ("strategy", "round_robin")]);
    let foreign = visitor
        .post_from(Some("http://evil.example"), "/ui/pools", body())
        .await;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        visitor.post_from(None, "/ui/pools", body()).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        visitor.post("/ui/pools", body()).await.status(),
        StatusCode::SEE_OTHER
    );
    let audit: Value = expect_status(
        visitor
            .client
            .get(format!("{}/api/v1/audit", visitor.base))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(audit["entries"][0]["actor"], "anonymous");
}
