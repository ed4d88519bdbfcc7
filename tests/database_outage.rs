//! The admin API when Postgres stops answering: prompt 503s, never a hang, and recovery on
//! its own once the database is back.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use sluice_control_plane::store::StoreOptions;
use support::database::postgres_server_url;
use support::process::metric_value;
use support::relay::{Link, TcpRelay};
use support::{TestControlPlane, TestDatabase, expect_error, expect_status, pool_json};

/// The bound for a clear error while the database is down, with scheduling slack.
const ANSWER_WITHIN: Duration = Duration::from_millis(2500);

async fn control_plane_behind_relay() -> (TestControlPlane, TcpRelay) {
    let db = TestDatabase::postgres().await;
    let server: SocketAddr = postgres_server_url()
        .rsplit('@')
        .next()
        .and_then(|host| host.parse().ok())
        .expect("SLUICE_TEST_POSTGRES_URL names host:port by IP");
    let relay = TcpRelay::start(server).await;
    let url = db.url_via(relay.addr);
    let cp = TestControlPlane::start_via(db, url, StoreOptions::default()).await;
    (cp, relay)
}

/// A partitioned database (packets vanish, nothing is refused) gives 503 within the bound
/// on reads, writes and readiness, and the API heals when the network does.
#[tokio::test]
async fn partitioned_database_answers_503_promptly_and_recovers() {
    let (cp, relay) = control_plane_behind_relay().await;
    expect_status(cp.post("/api/v1/pools", &pool_json("p", &["a"])).await, 201).await;

    relay.set(Link::Partitioned);
    for (method, path) in [
        (Method::GET, "/api/v1/pools"),
        (Method::POST, "/api/v1/pools"),
        (Method::GET, "/api/v1/config"),
        (Method::GET, "/readyz"),
    ] {
        let started = Instant::now();
        let response = cp
            .request(method.clone(), path)
            .json(&pool_json("q", &[]))
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let message = expect_error(response, 503, "database_unavailable", None).await;
        assert!(message.contains("retry"), "{message}");
        assert!(elapsed < ANSWER_WITHIN, "{method} {path} took {elapsed:?}");
    }
    expect_status(cp.get("/healthz").await, 200).await;
    // The periodic check notices without any admin call.
    wait_for_database_up(&cp, 0.0).await;

    relay.set(Link::Up);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = cp.get("/api/v1/pools").await;
        if response.status() == 200 {
            let pools = expect_status(response, 200).await;
            assert_eq!(pools["pools"][0]["name"], "p", "nothing was lost");
            break;
        }
        assert!(Instant::now() < deadline, "the API did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_status(cp.post("/api/v1/pools", &pool_json("q", &[])).await, 201).await;
    expect_status(cp.get("/readyz").await, 200).await;
    wait_for_database_up(&cp, 1.0).await;
}

/// `sluice_database_up` reaches `value` within two check periods and a ping's timeout.
async fn wait_for_database_up(cp: &TestControlPlane, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = cp.get("/metrics").await.text().await.unwrap();
        if metric_value(&text, "sluice_database_up") == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sluice_database_up never became {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
