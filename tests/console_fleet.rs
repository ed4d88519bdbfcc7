//! The console's fleet and usage views in a real browser, against a real control plane, a
//! real proxy following it and a mock upstream: an operator builds a pool, a backend and a
//! key through the console, traffic flows through the proxy, the pool page turns the backend
//! from available to cooling on its own, and the usage page charts and tables the key's calls
//! and hands out the same CSV as the API. With SLUICE_UPDATE_SCREENSHOTS=1 it refreshes the
//! overview, pool and usage screenshots in docs/screenshots/.

mod support;

use std::time::Duration;

use serde_json::Value;
use sluice_testkit::mock_upstream::Fault;
use support::browser::{
    Browser, click, field_value, fill, navigate, path, screenshots, sign_in, text, wait_for_text,
};
use support::proxy::{ProxySettings, TestProxy, mock};
use support::{ADMIN_TOKEN, TestControlPlane, TestDatabase, eventually, expect_status};

/// Calls `pool` through the proxy with `key`; the status that came back.
async fn call(proxy: &TestProxy, key: &str, pool: &str) -> u16 {
    let response = proxy.chat_with_key(pool, key).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn an_operator_watches_a_backend_cool_down_and_the_keys_usage() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let east = mock("east").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("east-key");
    std::fs::write(&secret, "key-east").unwrap();
    let proxy = TestProxy::follow_configured(
        format!("http://{}", cp.grpc_addr),
        "edge-1",
        &dir.path().join("edge-1"),
        None,
        ProxySettings {
            report_interval: Some(Duration::from_millis(200)),
            ..ProxySettings::default()
        },
    )
    .await;
    let browser = Browser::start().await;
    let client = &browser.client;
    let ui = |path: &str| cp.url(path);

    client.goto(&ui("/ui/")).await.unwrap();
    sign_in(client, ADMIN_TOKEN).await;
    wait_for_text(
        client,
        "#overview",
        "Proxies connected",
        Duration::from_secs(1),
    )
    .await;

    // The proxies page lists the proxy from the fleet table, connected and in sync.
    client.goto(&ui("/ui/proxies")).await.unwrap();
    let row = wait_for_text(
        client,
        "#proxy-edge-1",
        "Connected",
        Duration::from_secs(10),
    )
    .await;
    assert!(row.contains("In sync"), "{row}");

    // A pool with a backend on the mock, and a key for it, all through the console.
    client.goto(&ui("/ui/pools")).await.unwrap();
    fill(client, "#f-name", "gpt-4o").await;
    navigate(client, "form[action='/ui/pools'] button[type=submit]").await;
    fill(client, "#f-name", "east").await;
    fill(client, "#f-url", &east.url()).await;
    fill(client, "#f-secret", &format!("file://{}", secret.display())).await;
    navigate(client, "form[action$='/backends'] button[type=submit]").await;
    assert!(
        text(client, "#backend-east .badge")
            .await
            .contains("Enabled")
    );
    client.goto(&ui("/ui/keys")).await.unwrap();
    fill(client, "#f-id", "team-a").await;
    click(client, "input[name=pools][value='gpt-4o']").await;
    navigate(client, "form[action='/ui/keys'] button[type=submit]").await;
    let key = field_value(client, "#secret").await;

    // Traffic through the proxy: the first admitted call succeeds (the key reaches the proxy
    // after the pool), so exactly four calls are counted.
    eventually(Duration::from_secs(10), "the key to be served", || async {
        call(&proxy, &key, "gpt-4o").await == 200
    })
    .await;
    for _ in 0..3 {
        assert_eq!(call(&proxy, &key, "gpt-4o").await, 200);
    }

    // The pool page shows the backend available, then cooling once the mock throttles it,
    // refreshed in place: the page is never reloaded.
    client.goto(&ui("/ui/pools/gpt-4o")).await.unwrap();
    let state = wait_for_text(client, "#fleet-east", "Available", Duration::from_secs(10)).await;
    assert!(state.contains("Available on 1 of 1 proxy"), "{state}");
    wait_for_text(client, "#fleet-east", "attempts", Duration::from_secs(10)).await;
    client
        .execute("window.sluiceNotReloaded = true", vec![])
        .await
        .unwrap();
    east.inject(Fault::rate_limited(Duration::from_secs(120)))
        .unwrap();
    assert_ne!(call(&proxy, &key, "gpt-4o").await, 200);
    let state = wait_for_text(client, "#fleet-east", "Cooling", Duration::from_secs(15)).await;
    assert!(
        state.contains("Cooling on 1 of 1 proxy, until") && state.contains("UTC"),
        "{state}"
    );
    let badge = text(client, "#fleet-east .badge").await;
    assert!(
        badge.contains("Cooling"),
        "the state reads in words: {badge}"
    );
    let same_page = client
        .execute("return window.sluiceNotReloaded === true", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, Value::Bool(true), "the page was reloaded");
    screenshots(&browser, &ui("/ui/pools/gpt-4o"), "pool").await;

    // Five calls were admitted (the last one throttled upstream); wait until they are stored.
    eventually(
        Duration::from_secs(10),
        "five calls in the usage history",
        || async {
            let usage = expect_status(cp.get("/api/v1/usage?key=team-a").await, 200).await;
            usage["totals"]["requests"] == 5
        },
    )
    .await;

    // The overview counts the fleet.
    client.goto(&ui("/ui/")).await.unwrap();
    let states = text(client, "#backend-states").await;
    assert!(
        states.contains("Cooling\n1") || states.contains("Cooling 1"),
        "{states}"
    );
    let fleet = text(client, "#overview").await;
    assert!(fleet.contains("1\nProxies connected"), "{fleet}");
    assert!(fleet.contains("5\nRequests since"), "{fleet}");
    screenshots(&browser, &ui("/ui/"), "overview").await;

    // The key's page leads to its usage: a chart drawn by uPlot and the rows as a table.
    client.goto(&ui("/ui/keys/team-a")).await.unwrap();
    navigate(client, "#key-usage").await;
    assert_eq!(path(client).await, "/ui/usage");
    let rows = text(client, "#usage-rows tbody").await;
    assert!(rows.contains("team-a") && rows.contains("gpt-4o"), "{rows}");
    let requests = text(client, "#usage-rows tbody td.num").await;
    assert_eq!(requests, "5");
    let size = client
        .execute(
            "const c = document.querySelector('#chart-requests canvas'); \
             return c ? [c.getBoundingClientRect().width, c.getBoundingClientRect().height] : null",
            vec![],
        )
        .await
        .unwrap();
    let (width, height) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    assert!(width > 100.0 && height > 100.0, "chart is {size}");
    let legend = text(client, "#chart-requests .u-legend").await;
    assert!(
        legend.contains("team-a"),
        "the legend names the series: {legend}"
    );
    screenshots(
        &browser,
        &ui("/ui/usage?key=team-a&group_by=hour#usage-results"),
        "usage",
    )
    .await;

    // The download is the API's CSV, fetched with the session cookie alone.
    let fetched = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(document.getElementById('download-csv').href) \
               .then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fetched[0], 200);
    assert_eq!(fetched[1], "text/csv; charset=utf-8");
    let csv = fetched[2].as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "start,key,pool,requests,input_tokens,output_tokens,cost_usd,rate_limited"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    let fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&fields[1..4], ["team-a", "gpt-4o", "5"], "{csv}");
    let api = cp.usage_csv("key=team-a&group_by=hour").await;
    assert_eq!(csv, api, "the console's CSV is the API's");

    navigate(client, "form[action='/ui/sign-out'] button").await;
    assert_eq!(path(client).await, "/ui/sign-in");
    browser.stop().await;
}
