//! Proxies' reports on the config stream, against the real control plane in-process: reports
//! go out (the proxy's `sluice_reports_sent_total`), the stream they share with config updates
//! keeps working, a proxy with reports off sends none, and what a proxy on one replica reports
//! is what another replica shows as usage history and pool status.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::Fault;
use sluice_testkit::mock_upstream::MockHandle;
use support::proxy::{ProxySettings, TestProxy, mock};
use support::{TestControlPlane, TestDatabase, eventually, expect_status};

fn pool(name: &str, mock: &MockHandle, secrets: &Path) -> Value {
    let file = secrets.join(format!("key-{}", mock.name()));
    std::fs::write(&file, format!("key-{}", mock.name())).unwrap();
    json!({"name": name, "backends": [{"name": mock.name(), "url": mock.url(), "kind": "azure_openai",
           "auth": {"type": "api_key", "secret": format!("file://{}", file.display())}}]})
}

async fn follower(cp: &TestControlPlane, node: &str, dir: &Path, every: Duration) -> TestProxy {
    TestProxy::follow_configured(
        format!("http://{}", cp.grpc_addr),
        node,
        &dir.join(node),
        None,
        ProxySettings {
            report_interval: Some(every),
            ..ProxySettings::default()
        },
    )
    .await
}

async fn serves(proxy: &TestProxy, key: &str, pool: &str) -> bool {
    let response = proxy.chat_with_key(pool, key).send().await.unwrap();
    response.status() == 200
}

/// When the control plane's current session with `node` began.
async fn connected_since(cp: &TestControlPlane, node: &str) -> Value {
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    let proxies = listed["proxies"].as_array().unwrap();
    let proxy = proxies.iter().find(|p| p["node_id"] == node).unwrap();
    proxy["connected_since"].clone()
}

#[tokio::test]
async fn reports_share_the_config_stream_and_stay_off_at_interval_zero() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let reporting = follower(&cp, "reporting", dir.path(), Duration::from_millis(100)).await;
    let silent = follower(&cp, "silent", dir.path(), Duration::ZERO).await;
    expect_status(
        cp.post("/api/v1/pools", &pool("first", &a, dir.path()))
            .await,
        201,
    )
    .await;
    let created = expect_status(cp.post("/api/v1/keys", &json!({"id": "team-a"})).await, 201).await;
    let key = created["secret"].as_str().unwrap().to_owned();
    for proxy in [&reporting, &silent] {
        eventually(Duration::from_secs(5), "the pool to be served", || {
            serves(proxy, &key, "first")
        })
        .await;
    }
    let session = connected_since(&cp, "reporting").await;

    eventually(Duration::from_secs(5), "several reports", || async {
        reporting.metric("sluice_reports_sent_total").await >= 5.0
    })
    .await;
    assert!(reporting.metric("sluice_report_bytes_total").await > 0.0);

    // Updates still reach the reporting proxy, and its ACKs still reach the control plane.
    expect_status(
        cp.post("/api/v1/pools", &pool("second", &a, dir.path()))
            .await,
        201,
    )
    .await;
    let revision = cp.revision().await;
    eventually(Duration::from_secs(5), "the new pool to be served", || {
        serves(&reporting, &key, "second")
    })
    .await;
    eventually(Duration::from_secs(5), "both proxies to ACK it", || async {
        let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
        let proxies = listed["proxies"].as_array().unwrap().clone();
        proxies.len() == 2 && proxies.iter().all(|p| p["acked_revision"] == revision)
    })
    .await;
    assert_eq!(
        connected_since(&cp, "reporting").await,
        session,
        "the stream carrying reports never broke"
    );

    // Connected as long as the other one, through the same traffic and changes.
    assert_eq!(silent.metric("sluice_reports_sent_total").await, 0.0);
    assert_eq!(silent.metric("sluice_report_bytes_total").await, 0.0);
}

/// A proxy on replica B carries traffic for a key; replica A (same Postgres) shows it in the
/// usage history, and shows the backend the mock throttled as cooling in the pool's status.
#[tokio::test]
async fn traffic_through_a_proxy_on_one_replica_shows_on_the_other() {
    let (a, b) = support::replicas_on_postgres().await;
    let (east, west) = (mock("east").await, mock("west").await);
    let dir = tempfile::tempdir().unwrap();
    let mut body = pool("gpt-4o", &east, dir.path());
    let west_backend = pool("unused", &west, dir.path())["backends"][0].clone();
    body["backends"].as_array_mut().unwrap().push(west_backend);
    expect_status(a.post("/api/v1/pools", &body).await, 201).await;
    let created = expect_status(a.post("/api/v1/keys", &json!({"id": "team-a"})).await, 201).await;
    let key = created["secret"].as_str().unwrap().to_owned();
    let proxy = follower(&b, "on-b", dir.path(), Duration::from_millis(100)).await;
    eventually(Duration::from_secs(10), "the pool to be served", || {
        serves(&proxy, &key, "gpt-4o")
    })
    .await;
    for _ in 0..3 {
        assert!(serves(&proxy, &key, "gpt-4o").await);
    }

    eventually(
        Duration::from_secs(10),
        "four calls in the usage history",
        || async {
            let usage =
                expect_status(a.get("/api/v1/usage?key=team-a&group_by=hour").await, 200).await;
            usage["totals"]["requests"] == 4
        },
    )
    .await;
    let usage = expect_status(a.get("/api/v1/usage?key=team-a").await, 200).await;
    assert!(
        usage["totals"]["input_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert!(
        usage["totals"]["output_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert_eq!(usage["buckets"][0]["pool"], "gpt-4o");

    let status = expect_status(a.get("/api/v1/pools/gpt-4o/status").await, 200).await;
    assert_eq!(status["reporting_proxies"], 1, "{status}");
    for backend in status["backends"].as_array().unwrap() {
        assert_eq!(backend["proxies"]["available"], 1, "{status}");
    }

    east.inject(Fault::rate_limited(Duration::from_secs(60)))
        .unwrap();
    west.inject(Fault::rate_limited(Duration::from_secs(60)))
        .unwrap();
    // Round robin: within two calls each backend answers 429 once and cools down.
    for _ in 0..2 {
        let _ = serves(&proxy, &key, "gpt-4o").await;
    }
    eventually(
        Duration::from_secs(10),
        "both backends cooling in the fleet view",
        || async {
            let status = expect_status(a.get("/api/v1/pools/gpt-4o/status").await, 200).await;
            status["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["proxies"]["cooling"] == 1 && b["unavailable_until_soonest"].is_string())
        },
    )
    .await;
    // Traffic is written once a second, after the states.
    eventually(
        Duration::from_secs(10),
        "the attempts and the 429s counted",
        || async {
            let status = expect_status(a.get("/api/v1/pools/gpt-4o/status").await, 200).await;
            let sum = |field: &str| -> u64 {
                status["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["traffic"][field].as_u64().unwrap())
                    .sum()
            };
            sum("requests") >= 6 && sum("errors") >= 2
        },
    )
    .await;
}
