//! Proxies' reports on the config stream, against the real control plane in-process. The
//! control plane does not keep reports yet, so what is checked here is the proxy's side:
//! reports go out (its `sluice_reports_sent_total`), the stream they share with config
//! updates keeps working, and a proxy with reports off sends none.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::MockHandle;
use support::process::metric_value;
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
    proxy
        .client
        .post(proxy.url(&format!(
            "/openai/deployments/{pool}/chat/completions?api-version=2024-10-21"
        )))
        .header("api-key", key)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

/// When the control plane's current session with `node` began.
async fn connected_since(cp: &TestControlPlane, node: &str) -> Value {
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    let proxies = listed["proxies"].as_array().unwrap();
    let proxy = proxies.iter().find(|p| p["node_id"] == node).unwrap();
    proxy["connected_since"].clone()
}

async fn metric(proxy: &TestProxy, series: &str) -> f64 {
    metric_value(&proxy.metrics().await, series).unwrap_or_else(|| panic!("no {series}"))
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
        metric(&reporting, "sluice_reports_sent_total").await >= 5.0
    })
    .await;
    assert!(metric(&reporting, "sluice_report_bytes_total").await > 0.0);

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
    assert_eq!(metric(&silent, "sluice_reports_sent_total").await, 0.0);
    assert_eq!(metric(&silent, "sluice_report_bytes_total").await, 0.0);
}
