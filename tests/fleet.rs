//! The fleet as one: proxies on different control-plane replicas show up on every replica,
//! their reports fold into usage history and pool status in the shared database, and
//! proxies that stop show as gone.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::ACCEPT;
use serde_json::{Value, json};
use sluice_control_plane::store::{
    FleetBatch, Store, StoreOptions, TrafficRow, UsageCounts, UsageFilter, UsageRow,
};
use sluice_model::proto::proxy_message::Kind;
use sluice_model::proto::{BackendReport, BackendState, Report, UsageReport};
use support::proxy::TestProxy;
use support::wire::WirePeer;
use support::{
    TestControlPlane, TestDatabase, backend_json, eventually, expect_error, expect_status,
    test_config,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn usage(key: &str, pool: &str, requests: u64, input: u64, output: u64, cost: u64) -> UsageReport {
    UsageReport {
        client_key: key.into(),
        pool: pool.into(),
        requests,
        input_tokens: input,
        output_tokens: output,
        cost_micro_usd: cost,
        rate_limited: 0,
    }
}

fn backend(
    name: &str,
    state: BackendState,
    until: u64,
    requests: u64,
    errors: u64,
) -> BackendReport {
    BackendReport {
        pool: "gpt-4o".into(),
        backend: name.into(),
        state: state.into(),
        until_unix_ms: until,
        requests,
        errors,
    }
}

fn listed<'a>(proxies: &'a Value, node: &str) -> Option<&'a Value> {
    proxies["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == node)
}

async fn proxies(cp: &TestControlPlane) -> Value {
    expect_status(cp.get("/api/v1/proxies").await, 200).await
}

/// Two replicas on one Postgres: each lists the proxies of both, with the replica each is
/// on and the revision it applied; a proxy that stops shows as gone on the other replica.
#[tokio::test]
async fn every_replica_lists_the_whole_fleet() {
    let (a, b) = support::replicas_on_postgres().await;
    expect_status(
        a.post(
            "/api/v1/pools",
            &json!({"name": "p", "backends": [backend_json("x")]}),
        )
        .await,
        201,
    )
    .await;
    let revision = a.revision().await;
    let dir = tempfile::tempdir().unwrap();
    let on_a = TestProxy::follow(a.grpc_addr, "on-a", &dir.path().join("a")).await;
    let on_b = TestProxy::follow(b.grpc_addr, "on-b", &dir.path().join("b")).await;

    for replica in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "both proxies on both replicas",
            || async {
                let listed_now = proxies(replica).await;
                ["on-a", "on-b"].iter().all(|node| {
                    listed(&listed_now, node).is_some_and(|p| {
                        p["state"] == "connected" && p["acked_revision"] == revision
                    })
                })
            },
        )
        .await;
    }
    let seen = proxies(&b).await;
    let (pa, pb) = (
        listed(&seen, "on-a").unwrap(),
        listed(&seen, "on-b").unwrap(),
    );
    assert_ne!(pa["replica"], pb["replica"], "{seen}");
    assert!(
        pa["replica"].as_str().unwrap().starts_with("replica-"),
        "{seen}"
    );

    on_b.stopped().await;
    eventually(
        Duration::from_secs(10),
        "the stopped proxy to be gone",
        || async { listed(&proxies(&a).await, "on-b").is_some_and(|p| p["state"] == "gone") },
    )
    .await;
    assert_eq!(
        listed(&proxies(&a).await, "on-a").unwrap()["state"],
        "connected"
    );
    drop(on_a);
}

/// A proxy's reports, sent to one replica, are what the other answers: usage history by
/// hour and day (JSON and CSV, filtered by key and pool) and each backend's fleet state.
#[tokio::test]
async fn reports_become_usage_history_and_pool_status_on_every_replica() {
    let (a, b) = support::replicas_on_postgres().await;
    expect_status(
        a.post(
            "/api/v1/pools",
            &json!({"name": "gpt-4o", "backends": [backend_json("eastus"), backend_json("westus")]}),
        )
        .await,
        201,
    )
    .await;
    let mut peer = WirePeer::connect(&b, "reporter", "0.0.9").await;
    let revision = peer.ack_next().await;
    let cooling_until = now_ms() + 60_000;
    peer.send(Kind::Report(Report {
        sequence: 1,
        revision,
        backends: vec![
            backend("eastus", BackendState::Cooling, cooling_until, 10, 4),
            backend("westus", BackendState::Available, 0, 6, 0),
        ],
        usage: vec![
            usage("team-a", "gpt-4o", 3, 100, 20, 1_500),
            usage("team-b", "gpt-4o", 1, 10, 2, 150),
        ],
        ..Default::default()
    }));
    peer.send(Kind::Report(Report {
        sequence: 2,
        revision,
        backends: vec![
            backend("eastus", BackendState::Cooling, cooling_until, 0, 0),
            backend("westus", BackendState::Available, 0, 2, 1),
        ],
        usage: vec![usage("team-a", "gpt-4o", 2, 50, 5, 750)],
        ..Default::default()
    }));

    eventually(
        Duration::from_secs(10),
        "both reports in the usage history",
        || async {
            let history = expect_status(a.get("/api/v1/usage?group_by=hour").await, 200).await;
            history["totals"]["requests"] == 6
        },
    )
    .await;
    let history = expect_status(a.get("/api/v1/usage?key=team-a&group_by=hour").await, 200).await;
    let buckets = history["buckets"].as_array().unwrap();
    // Both reports may straddle an hour; the sums are what matter.
    let sum = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (
            sum("requests"),
            sum("input_tokens"),
            sum("output_tokens"),
            sum("cost_micro_usd")
        ),
        (5, 150, 25, 2_250),
        "{history}"
    );
    assert!(
        buckets
            .iter()
            .all(|b| b["key"] == "team-a" && b["pool"] == "gpt-4o")
    );
    assert_eq!(history["totals"]["cost_usd"], 0.00225);
    assert_eq!(history["group_by"], "hour");

    let daily = expect_status(a.get("/api/v1/usage").await, 200).await;
    assert_eq!(daily["group_by"], "day");
    assert!(
        daily["buckets"][0]["start"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z"),
        "{daily}"
    );
    let other_pool = expect_status(a.get("/api/v1/usage?pool=other").await, 200).await;
    assert_eq!(other_pool["buckets"], json!([]));

    let csv = a
        .request(reqwest::Method::GET, "/api/v1/usage?key=team-b")
        .header(ACCEPT, "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"sluice-usage-")
    );
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "start,key,pool,requests,input_tokens,output_tokens,cost_usd,rate_limited"
    );
    assert!(
        lines[1].ends_with(",team-b,gpt-4o,1,10,2,0.000150,0"),
        "{csv}"
    );
    assert_eq!(lines.len(), 2, "{csv}");

    let status = expect_status(a.get("/api/v1/pools/gpt-4o/status").await, 200).await;
    assert_eq!(status["reporting_proxies"], 1, "{status}");
    let eastus = &status["backends"][0];
    assert_eq!(eastus["name"], "eastus");
    assert_eq!(eastus["proxies"]["cooling"], 1, "{status}");
    assert_eq!(eastus["proxies"]["available"], 0);
    assert!(eastus["unavailable_until_soonest"].is_string(), "{status}");
    assert_eq!(eastus["traffic"]["requests"], 10);
    assert_eq!(eastus["traffic"]["errors"], 4);
    let westus = &status["backends"][1];
    assert_eq!(westus["proxies"]["available"], 1);
    assert_eq!(westus["traffic"]["requests"], 8);
    assert!(westus.get("unavailable_until_soonest").is_none());

    let reporter = listed(&proxies(&a).await, "reporter").cloned().unwrap();
    assert!(reporter["last_report"].is_string(), "{reporter}");
    assert_eq!(reporter["acked_revision"], revision);
}

/// A proxy of the version before reports (Hello and ACKs only) is listed as connected,
/// with no report; pool status counts no proxy for it.
#[tokio::test]
async fn a_proxy_that_predates_reports_is_listed_without_them() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    expect_status(
        cp.post(
            "/api/v1/pools",
            &json!({"name": "gpt-4o", "backends": [backend_json("eastus")]}),
        )
        .await,
        201,
    )
    .await;
    let mut peer = WirePeer::connect(&cp, "old-proxy", "0.0.9").await;
    let revision = peer.ack_next().await;
    eventually(Duration::from_secs(10), "the old proxy's ack", || async {
        listed(&proxies(&cp).await, "old-proxy").is_some_and(|p| p["acked_revision"] == revision)
    })
    .await;
    let old = listed(&proxies(&cp).await, "old-proxy").cloned().unwrap();
    assert_eq!(old["state"], "connected");
    assert!(old.get("last_report").is_none(), "{old}");
    let status = expect_status(cp.get("/api/v1/pools/gpt-4o/status").await, 200).await;
    assert_eq!(status["reporting_proxies"], 0);
    assert_eq!(status["backends"][0]["reported_by"], 0);
}

/// A replica that stops takes its proxies' streams down: the other replica shows them as
/// gone, and a proxy nothing is heard of for `gone_after` is gone too.
#[tokio::test]
async fn proxies_of_a_stopped_replica_turn_gone() {
    let db = TestDatabase::postgres().await;
    let url = db.url().to_owned();
    let mut config = test_config(url.clone());
    config.fleet.gone_after = Duration::from_secs(1);
    let a = TestControlPlane::start_config(db, config).await;
    let mut config = test_config(url);
    config.fleet.gone_after = Duration::from_secs(1);
    let b = TestControlPlane::start_config(TestDatabase::sqlite(), config).await;
    let mut peer = WirePeer::connect(&b, "on-b", "0.0.9").await;
    peer.ack_next().await;
    eventually(Duration::from_secs(10), "the proxy on b", || async {
        listed(&proxies(&a).await, "on-b").is_some_and(|p| p["state"] == "connected")
    })
    .await;
    // Heartbeats keep a quiet but connected proxy connected past gone_after.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        listed(&proxies(&a).await, "on-b").unwrap()["state"],
        "connected"
    );
    b.stop().await;
    eventually(Duration::from_secs(10), "the proxy to be gone", || async {
        listed(&proxies(&a).await, "on-b").is_some_and(|p| p["state"] == "gone")
    })
    .await;
    drop(peer);
}

/// Every bad query names its field; a pool that does not exist is a 404.
#[tokio::test]
async fn fleet_queries_refuse_bad_input() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    for (query, field) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-02-30", "to"),
        ("from=2026-12-02&to=2026-12-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "from"),
        ("key=no%20spaces", "key"),
    ] {
        let url = format!("/api/v1/usage?{query}");
        expect_error(cp.get(&url).await, 400, "invalid_query", Some(field)).await;
    }
    let message = expect_error(
        cp.get("/api/v1/usage?unknown=1").await,
        400,
        "invalid_query",
        None,
    )
    .await;
    assert!(message.contains("unknown"), "{message}");
    expect_error(
        cp.get("/api/v1/pools/nope/status").await,
        404,
        "not_found",
        None,
    )
    .await;
    expect_status(
        cp.post(
            "/api/v1/pools",
            &json!({"name": "p", "backends": [backend_json("x")]}),
        )
        .await,
        201,
    )
    .await;
    let too_long = cp.get("/api/v1/pools/p/status?minutes=61").await;
    expect_error(too_long, 400, "invalid_query", Some("minutes")).await;
    let anonymous = cp
        .anonymous(reqwest::Method::GET, "/api/v1/usage")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Retention: usage hours past the retention, traffic minutes past their window and
/// proxies unseen for long are deleted; newer rows stay. On both databases.
#[tokio::test]
async fn retention_sweeps_old_rows_on_postgres_and_sqlite() {
    for db in [TestDatabase::sqlite(), TestDatabase::postgres().await] {
        let store = Store::connect(db.url(), StoreOptions::default())
            .await
            .unwrap();
        let hour = 3_600_000;
        let now = (now_ms() as i64) / hour * hour;
        let row = |start: i64| UsageRow {
            start_unix_ms: start,
            client_key: "k".into(),
            pool: "p".into(),
            counts: UsageCounts {
                requests: 1,
                ..Default::default()
            },
        };
        let traffic = |minute: i64| TrafficRow {
            minute_unix_ms: minute,
            pool: "p".into(),
            backend: "b".into(),
            requests: 1,
            errors: 0,
        };
        let batch = FleetBatch {
            usage: vec![row(now - 100 * 24 * hour), row(now)],
            traffic: vec![traffic(now - 3 * hour), traffic(now)],
            ..Default::default()
        };
        store.record_fleet(&batch).await.unwrap();
        // Written twice, counted twice: a batch is only retried when its write failed.
        store
            .record_fleet(&FleetBatch {
                usage: vec![row(now)],
                ..Default::default()
            })
            .await
            .unwrap();
        let pruned = store
            .prune_fleet(now - 90 * 24 * hour, now - 2 * hour, now - 24 * hour)
            .await
            .unwrap();
        assert_eq!(
            (pruned.usage_rows, pruned.traffic_rows),
            (1, 1),
            "{}",
            db.url()
        );
        let left = store
            .usage_history(&UsageFilter {
                client_key: None,
                pool: None,
                from_unix_ms: 0,
                to_unix_ms: now + hour,
                bucket_ms: hour,
                max_rows: 10,
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].counts.requests, 2);
        assert_eq!(store.backend_traffic(Some("p"), 0).await.unwrap().len(), 1);
    }
}
