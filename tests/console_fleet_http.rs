//! The console's fleet and usage views over plain HTTP: the live fragments and the CSV
//! download need a session, the download is the API's CSV, and bad usage filters are
//! explained on the page next to their field.

mod support;

use reqwest::StatusCode;
use sluice_control_plane::store::{
    FleetBatch, Store, StoreOptions, UsageCounts, UsageRow, unix_millis,
};
use support::console::{Visitor, location};
use support::{ADMIN_TOKEN, TestControlPlane, TestDatabase};

const HOUR_MS: i64 = 3_600_000;

async fn signed_in(cp: &TestControlPlane) -> Visitor {
    let mut visitor = Visitor::new(cp.addr);
    let response = visitor.sign_in(ADMIN_TOKEN).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    visitor
}

/// Usage of team-a in gpt-4o this hour, as a replica writes it from reports.
async fn record_usage(cp: &TestControlPlane) {
    let store = Store::connect(cp.database.url(), StoreOptions::default())
        .await
        .unwrap();
    let now = unix_millis();
    store
        .record_fleet(&FleetBatch {
            usage: vec![UsageRow {
                start_unix_ms: now - now % HOUR_MS,
                client_key: "team-a".into(),
                pool: "gpt-4o".into(),
                counts: UsageCounts {
                    requests: 7,
                    input_tokens: 700,
                    output_tokens: 70,
                    cost_micro_usd: 1_500,
                    rate_limited: 1,
                },
            }],
            ..FleetBatch::default()
        })
        .await
        .unwrap();
}

const SIGNED_IN_ONLY: [&str; 5] = [
    "/ui/usage.csv?key=team-a",
    "/ui/usage?key=team-a",
    "/ui/overview/live",
    "/ui/proxies/live",
    "/ui/pools/gpt-4o/live",
];

#[tokio::test]
async fn fragments_and_the_usage_download_need_a_session() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    record_usage(&cp).await;
    let stranger = Visitor::new(cp.addr);
    for path in SIGNED_IN_ONLY {
        let page = stranger.get(path).await;
        assert_eq!(page.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&page), "/ui/sign-in", "{path}");
        assert!(!page.text().await.unwrap().contains("team-a"), "{path}");
        let fragment = stranger
            .client
            .get(format!("{}{path}", stranger.base))
            .header("hx-request", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(fragment.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(fragment.headers()["hx-redirect"], "/ui/sign-in", "{path}");
    }

    let visitor = signed_in(&cp).await;
    let download = visitor.get("/ui/usage.csv?key=team-a&group_by=hour").await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(
        download.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let disposition = download.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"sluice-usage-"),
        "{disposition}"
    );
    let csv = download.text().await.unwrap();
    let api = cp.usage_csv("key=team-a&group_by=hour").await;
    assert_eq!(csv, api);
    assert!(
        csv.contains(",team-a,gpt-4o,7,700,70,0.001500,1\r\n"),
        "{csv}"
    );

    let page = visitor.get("/ui/usage?key=team-a&group_by=hour").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("data-chart=\""),
        "the chart's data is on the page"
    );
    assert!(
        html.contains("<td class=\"num\">7</td>"),
        "the table holds the row"
    );
    assert!(
        html.contains("href=\"/ui/usage.csv?key=team-a&#38;group_by=hour\""),
        "{html}"
    );
    assert!(!html.contains("<script>"), "no inline script");

    let overview = visitor.get("/ui/overview/live").await;
    assert_eq!(overview.status(), StatusCode::OK);
    let fragment = overview.text().await.unwrap();
    assert!(
        fragment.trim_start().starts_with("<div id=\"overview\""),
        "a fragment, not a page"
    );
    assert!(!fragment.contains("<html"));
    assert!(fragment.contains("Requests since"));
    let proxies = visitor.get("/ui/proxies/live").await;
    assert_eq!(proxies.status(), StatusCode::OK);
    assert!(
        proxies
            .text()
            .await
            .unwrap()
            .contains("No proxy has connected yet")
    );
    let missing = visitor.get("/ui/pools/gpt-4o/live").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND, "no such pool");
}

#[tokio::test]
async fn bad_usage_filters_are_explained_next_to_their_field() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let visitor = signed_in(&cp).await;
    for (query, field, words) in [
        ("from=yesterday", "from", "from must be an RFC 3339 time"),
        ("to=2025-13-01", "to", "to must be an RFC 3339 time"),
        ("group_by=week", "group_by", "group_by must be hour or day"),
        (
            "from=2025-12-02&to=2025-12-01",
            "from",
            "from must be before to",
        ),
        (
            "from=2020-01-01&to=2025-12-01",
            "from",
            "at most 400 days apart",
        ),
        ("key=not+a+name", "key", ""),
        ("split=colour", "split", "chart by key or by pool"),
    ] {
        let page = visitor.get(&format!("/ui/usage?{query}")).await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST, "{query}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains(&format!("id=\"e-{field}\"")),
            "{query}: {html}"
        );
        assert!(html.contains(words), "{query}");
        assert!(
            html.contains("<form method=\"get\" action=\"/ui/usage\""),
            "{query}"
        );
        assert!(!html.contains("id=\"usage-results\""), "{query}");
    }
    let refused = visitor.get("/ui/usage.csv?from=yesterday").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let html = refused.text().await.unwrap();
    assert!(html.contains("from must be an RFC 3339 time"), "{html}");
}
