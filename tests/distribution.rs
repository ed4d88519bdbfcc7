//! Config distribution end to end: control planes in-process, proxies following them over
//! gRPC on ephemeral ports, mock upstreams behind them.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sluice_testkit::mock_upstream::MockHandle;
use support::proxy::{TestProxy, mock};
use support::{
    PROXY_TOKEN, TestControlPlane, TestDatabase, eventually, expect_status, test_config,
};

/// A pool over `mocks` whose backend keys live in files under `secrets`.
fn pool(name: &str, mocks: &[&MockHandle], secrets: &Path) -> Value {
    let backends: Vec<Value> = mocks
        .iter()
        .map(|mock| {
            let file = secrets.join(format!("key-{}", mock.name()));
            std::fs::write(&file, format!("key-{}", mock.name())).unwrap();
            json!({"name": mock.name(), "url": mock.url(), "kind": "azure_openai",
                   "auth": {"type": "api_key", "secret": format!("file://{}", file.display())}})
        })
        .collect();
    json!({"name": name, "backends": backends})
}

/// `n` proxies following `cp`, each with its own cache under `dir`.
async fn followers(cp: &TestControlPlane, n: usize, dir: &Path) -> Vec<TestProxy> {
    let mut proxies = Vec::with_capacity(n);
    for i in 0..n {
        let cache = dir.join(format!("cache-{i}"));
        proxies.push(TestProxy::follow(cp.grpc_addr, &format!("proxy-{i}"), &cache).await);
    }
    proxies
}

async fn create_pool(cp: &TestControlPlane, pool: &Value) {
    expect_status(cp.post("/api/v1/pools", pool).await, 201).await;
}

async fn client_key(cp: &TestControlPlane) -> String {
    let created = expect_status(cp.post("/api/v1/keys", &json!({"id": "team-a"})).await, 201).await;
    created["secret"].as_str().unwrap().to_owned()
}

async fn call(proxy: &TestProxy, key: &str, pool: &str) -> reqwest::Response {
    proxy.chat_with_key(pool, key).send().await.unwrap()
}

async fn serves(proxy: &TestProxy, key: &str, pool: &str) -> bool {
    call(proxy, key, pool).await.status() == 200
}

/// A pool created through the admin API is routable through three proxies, which show up
/// in `/api/v1/proxies` with the revision they applied.
#[tokio::test]
async fn a_pool_created_through_the_admin_api_is_served_by_three_proxies() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let (a, b) = (mock("a").await, mock("b").await);
    let dir = tempfile::tempdir().unwrap();
    let proxies = followers(&cp, 3, dir.path()).await;
    create_pool(&cp, &pool("gpt-4o", &[&a, &b], dir.path())).await;
    let key = client_key(&cp).await;
    for proxy in &proxies {
        eventually(
            Duration::from_secs(5),
            "the pool to reach every proxy",
            || serves(proxy, &key, "gpt-4o"),
        )
        .await;
    }
    eventually(
        Duration::from_secs(5),
        "every proxy to ACK revision 2",
        || async {
            let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
            let proxies = listed["proxies"].as_array().unwrap().clone();
            proxies.len() == 3 && proxies.iter().all(|p| p["acked_revision"] == 2)
        },
    )
    .await;
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    assert_eq!(listed["proxies"][0]["node_id"], "proxy-0");
    let metrics = cp.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sluice_connected_proxies 3"), "{metrics}");
    assert!(
        listed["proxies"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(listed["proxies"][0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(listed["proxies"][0]["last_nack"].is_null());
}

/// A change reaches ten proxies quickly; the propagation times are printed for docs/architecture.md.
#[tokio::test]
async fn a_change_reaches_ten_proxies_within_milliseconds() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let proxies = followers(&cp, 10, dir.path()).await;
    create_pool(&cp, &pool("p", &[&a], dir.path())).await;
    let key = client_key(&cp).await;
    for proxy in &proxies {
        eventually(Duration::from_secs(5), "initial sync", || {
            serves(proxy, &key, "p")
        })
        .await;
    }
    let mut samples = Vec::new();
    for round in 0..10 {
        let name = format!("q{round}");
        let started = Instant::now();
        create_pool(&cp, &pool(&name, &[&a], dir.path())).await;
        // Sweep all proxies until each serves the new pool; note when each first did.
        let mut arrived = vec![None; proxies.len()];
        while arrived.iter().any(Option::is_none) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "propagation timed out"
            );
            for (proxy, seen) in proxies.iter().zip(arrived.iter_mut()) {
                if seen.is_none() && serves(proxy, &key, &name).await {
                    *seen = Some(started.elapsed());
                }
            }
        }
        samples.extend(arrived.into_iter().flatten());
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    println!(
        "config propagation to 10 proxies: p50 {p50:?}, p99 {p99:?} over {} samples",
        samples.len()
    );
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
}

/// A write on one replica reaches ten proxies spread over two replicas on one Postgres, and
/// the other replica's `/api/v1/proxies` shows every proxy's ACK of it. Prints p50/p99 of
/// each over 20 writes (the figures in docs/architecture.md); asserts only that it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_proxies_on_both_replicas_and_both_list_the_acks() {
    let (writer, other) = support::replicas_on_postgres().await;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxies = Vec::new();
    for i in 0..10 {
        let replica = if i % 2 == 0 { &writer } else { &other };
        let cache = dir.path().join(format!("cache-{i}"));
        proxies.push(Arc::new(
            TestProxy::follow(replica.grpc_addr, &format!("proxy-{i}"), &cache).await,
        ));
    }
    create_pool(&writer, &pool("p", &[&a], dir.path())).await;
    let key = client_key(&writer).await;
    for proxy in &proxies {
        eventually(Duration::from_secs(10), "initial sync", || {
            serves(proxy, &key, "p")
        })
        .await;
    }
    let (mut applied, mut listed) = (Vec::new(), Vec::new());
    for round in 0..20 {
        let name = format!("w{round}");
        let body = pool(&name, &[&a], dir.path());
        let started = Instant::now();
        // Watching from before the write: the time counts from the POST.
        let watchers: Vec<_> = proxies
            .iter()
            .map(|proxy| {
                let (proxy, key, name) = (proxy.clone(), key.clone(), name.clone());
                tokio::spawn(async move {
                    while !serves(&proxy, &key, &name).await {
                        assert!(
                            started.elapsed() < Duration::from_secs(10),
                            "propagation timed out"
                        );
                        // Polling flat out would starve the proxies being measured.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    started.elapsed()
                })
            })
            .collect();
        let created = writer.post("/api/v1/pools", &body).await;
        let revision: u64 = support::etag(&created).trim_matches('"').parse().unwrap();
        expect_status(created, 201).await;
        let mut slowest = Duration::ZERO;
        for watcher in watchers {
            slowest = slowest.max(watcher.await.unwrap());
        }
        applied.push(slowest);
        loop {
            let fleet = expect_status(other.get("/api/v1/proxies").await, 200).await;
            let acked = fleet["proxies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["acked_revision"].as_u64() >= Some(revision))
                .count();
            if acked == proxies.len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "acks never listed: {fleet}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        listed.push(started.elapsed());
    }
    let percentiles = |samples: &mut Vec<Duration>| {
        samples.sort();
        (
            samples[samples.len() / 2],
            samples[samples.len() * 99 / 100],
        )
    };
    let (applied_p50, applied_p99) = percentiles(&mut applied);
    let (listed_p50, listed_p99) = percentiles(&mut listed);
    println!(
        "write on one replica, 10 proxies on two replicas (Postgres), 20 writes: \
         every proxy applied p50 {applied_p50:?} p99 {applied_p99:?}; \
         the other replica lists every ACK p50 {listed_p50:?} p99 {listed_p99:?}"
    );
}

/// Steady load keeps succeeding while the control plane goes away; a proxy restarted during
/// the outage serves from its cache.
#[tokio::test]
async fn proxies_keep_serving_without_the_control_plane() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let (a, b) = (mock("a").await, mock("b").await);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let proxy = Arc::new(TestProxy::follow(cp.grpc_addr, "steady", &cache).await);
    create_pool(&cp, &pool("p", &[&a, &b], dir.path())).await;
    let key = client_key(&cp).await;
    eventually(Duration::from_secs(5), "sync", || serves(&proxy, &key, "p")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (proxy, key, stop, ok, failed) = (
            proxy.clone(),
            key.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let counter = if serves(&proxy, &key, "p").await {
                    &ok
                } else {
                    &failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cp.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} succeeded",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    eventually(
        Duration::from_secs(5),
        "the proxy to notice the control plane is gone",
        || async {
            proxy
                .metrics()
                .await
                .contains("sluice_control_plane_connected 0")
        },
    )
    .await;

    // A restart while the control plane is still down: the cache is all there is.
    let unreachable: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let restarted = TestProxy::follow(unreachable, "steady", &cache).await;
    assert!(restarted.is_ready().await);
    assert!(serves(&restarted, &key, "p").await);
}

/// A proxy whose control plane went away reconnects when it is back (same address) and
/// resumes from the revision it holds: the change made meanwhile arrives, acknowledged.
#[tokio::test]
async fn proxies_reconnect_and_resume_when_the_control_plane_returns() {
    let db = TestDatabase::sqlite();
    let url = db.url().to_owned();
    let first =
        TestControlPlane::start_via(TestDatabase::sqlite(), url.clone(), Default::default()).await;
    let grpc_addr = first.grpc_addr;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestProxy::follow(grpc_addr, "returning", &dir.path().join("cache")).await;
    create_pool(&first, &pool("p", &[&a], dir.path())).await;
    let key = client_key(&first).await;
    eventually(Duration::from_secs(5), "sync", || serves(&proxy, &key, "p")).await;
    first.stop().await;
    eventually(Duration::from_secs(5), "the disconnect to show", || async {
        proxy
            .metrics()
            .await
            .contains("sluice_control_plane_connected 0")
    })
    .await;

    let second = TestControlPlane::start_config(
        TestDatabase::sqlite(),
        sluice_control_plane::ControlPlaneConfig {
            grpc_addr,
            ..test_config(url)
        },
    )
    .await;
    create_pool(&second, &pool("q", &[&a], dir.path())).await;
    let revision = second.revision().await;
    eventually(
        Duration::from_secs(15),
        "the change made after the return",
        || serves(&proxy, &key, "q"),
    )
    .await;
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("sluice_control_plane_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("sluice_config_revision {revision}")),
        "{metrics}"
    );
    eventually(Duration::from_secs(5), "the acknowledgement", || async {
        let proxies = expect_status(second.get("/api/v1/proxies").await, 200).await;
        proxies
            .to_string()
            .contains(&format!("\"acked_revision\":{revision}"))
    })
    .await;
    assert!(
        serves(&proxy, &key, "p").await,
        "the earlier pool is still served"
    );
}

/// Two control planes on one Postgres: a write through A reaches a proxy connected to B.
#[tokio::test]
async fn replicas_on_one_postgres_serve_each_others_writes() {
    let db = TestDatabase::postgres().await;
    let url = db.url().to_owned();
    let replica_a = TestControlPlane::start(db).await;
    let replica_b =
        TestControlPlane::start_via(TestDatabase::sqlite(), url, Default::default()).await;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestProxy::follow(replica_b.grpc_addr, "on-b", &dir.path().join("cache")).await;
    expect_status(
        replica_a
            .post("/api/v1/pools", &pool("p", &[&a], dir.path()))
            .await,
        201,
    )
    .await;
    let key = client_key(&replica_a).await;
    eventually(
        Duration::from_secs(5),
        "A's write to reach the proxy on B",
        || serves(&proxy, &key, "p"),
    )
    .await;
    let on_b = expect_status(replica_b.get("/api/v1/config").await, 200).await;
    let on_a = expect_status(replica_a.get("/api/v1/config").await, 200).await;
    assert_eq!(on_a, on_b, "both replicas serve the identical snapshot");
}

/// Config changed ten times a second under load loses no request, and unchanged backends
/// keep their state across updates.
#[tokio::test]
async fn frequent_config_changes_under_load_lose_no_request() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let (a, b) = (mock("a").await, mock("b").await);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Arc::new(TestProxy::follow(cp.grpc_addr, "busy", &dir.path().join("cache")).await);
    create_pool(&cp, &pool("p", &[&a, &b], dir.path())).await;
    let key = client_key(&cp).await;
    eventually(Duration::from_secs(5), "sync", || serves(&proxy, &key, "p")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (proxy, key, stop, failed) = (proxy.clone(), key.clone(), stop.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let response = call(&proxy, &key, "p").await;
                if response.status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done += 1;
            }
            done
        }));
    }
    let mut weight = 1;
    for _ in 0..20 {
        weight = weight % 5 + 1;
        let mut backend = pool("p", &[&b], dir.path())["backends"][0].clone();
        backend["weight"] = json!(weight);
        expect_status(
            cp.send_json(Method::PUT, "/api/v1/pools/p/backends/b", &backend)
                .await,
            200,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        total += task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {total}");
    eventually(
        Duration::from_secs(5),
        "the last revision to be applied",
        || async {
            proxy
                .metrics()
                .await
                .contains(&format!("sluice_config_revision {}", cp.revision().await))
        },
    )
    .await;
}

/// A stream without the proxy token, or with garbage, is refused; connected proxies carry on.
#[tokio::test]
async fn unauthenticated_and_garbage_streams_are_refused_without_affecting_others() {
    use sluice_model::proto::config_discovery_client::ConfigDiscoveryClient;
    use sluice_model::proto::proxy_message::Kind;
    use sluice_model::proto::{Ack, Hello, ProxyMessage};

    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestProxy::follow(cp.grpc_addr, "good", &dir.path().join("cache")).await;
    create_pool(&cp, &pool("p", &[&a], dir.path())).await;
    let key = client_key(&cp).await;
    eventually(Duration::from_secs(5), "sync", || serves(&proxy, &key, "p")).await;

    let endpoint = format!("http://{}", cp.grpc_addr);
    let open = |token: Option<&'static str>, first: Option<Kind>| {
        let endpoint = endpoint.clone();
        async move {
            let mut client = ConfigDiscoveryClient::connect(endpoint).await.unwrap();
            let messages: Vec<ProxyMessage> = first
                .into_iter()
                .map(|kind| ProxyMessage { kind: Some(kind) })
                .collect();
            let mut request = tonic::Request::new(Messages(messages.into_iter()));
            if let Some(token) = token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            match client.stream_config(request).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    stream.message().await.map(|m| m.is_some())
                }
                Err(status) => Err(status),
            }
        }
    };
    let hello = || {
        Some(Kind::Hello(Hello {
            node_id: "intruder".into(),
            version: "x".into(),
            revision: 0,
        }))
    };
    let no_token = open(None, hello()).await.unwrap_err();
    assert_eq!(no_token.code(), tonic::Code::Unauthenticated);
    let wrong_token = open(Some("wrong-token-0123456789"), hello())
        .await
        .unwrap_err();
    assert_eq!(wrong_token.code(), tonic::Code::Unauthenticated);
    let not_hello = open(
        Some(PROXY_TOKEN),
        Some(Kind::Ack(Ack {
            revision: 1,
            nonce: "x".into(),
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(not_hello.code(), tonic::Code::InvalidArgument);
    let empty_id = open(Some(PROXY_TOKEN), Some(Kind::Hello(Hello::default())))
        .await
        .unwrap_err();
    assert_eq!(empty_id.code(), tonic::Code::InvalidArgument);

    // Raw garbage on the gRPC port: not even HTTP/2.
    let mut garbage = tokio::net::TcpStream::connect(cp.grpc_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GET / HTTP/1.0\r\n\r\n\x00\xff\x00garbage")
        .await
        .unwrap();
    drop(garbage);

    create_pool(&cp, &pool("q", &[&a], dir.path())).await;
    eventually(
        Duration::from_secs(5),
        "the good proxy to keep following",
        || serves(&proxy, &key, "q"),
    )
    .await;
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    let ids: Vec<_> = listed["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].clone())
        .collect();
    assert_eq!(ids, [json!("good")], "refused streams never registered");
}

/// A NACK from a proxy shows in `/api/v1/proxies` with its reason.
#[tokio::test]
async fn a_nack_shows_in_the_proxies_list() {
    use sluice_model::proto::Nack;
    use sluice_model::proto::proxy_message::Kind;

    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let mut peer = support::wire::WirePeer::connect(&cp, "picky", "9.9.9").await;
    let update = peer.next_update().await;
    let revision = update.snapshot.unwrap().revision;
    peer.send(Kind::Nack(Nack {
        revision,
        nonce: update.nonce,
        error: "unknown field in pools[0]".into(),
    }));
    eventually(Duration::from_secs(5), "the NACK to show", || async {
        let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
        listed["proxies"][0]["last_nack"]["error"] == "unknown field in pools[0]"
    })
    .await;
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    assert_eq!(listed["proxies"][0]["version"], "9.9.9");
    assert_eq!(listed["proxies"][0]["last_nack"]["revision"], revision);
    drop(peer);
}

/// A proxy that stops reading its stream is dropped after the send timeout, while the others
/// keep following every change.
#[tokio::test]
async fn a_stuck_proxy_is_dropped_without_holding_up_the_others() {
    use sluice_model::proto::config_discovery_client::ConfigDiscoveryClient;
    use sluice_model::proto::proxy_message::Kind;
    use sluice_model::proto::{Hello, ProxyMessage};

    let db = TestDatabase::sqlite();
    let mut config = support::test_config(db.url().to_owned());
    config.proxy_send_timeout = Duration::from_millis(300);
    let cp = TestControlPlane::start_config(db, config).await;
    let a = mock("a").await;
    let dir = tempfile::tempdir().unwrap();
    let good = TestProxy::follow(cp.grpc_addr, "good", &dir.path().join("cache")).await;

    // A small receive window, as a proxy under memory pressure would have.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc_addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = ConfigDiscoveryClient::new(channel);
    let hello = Kind::Hello(Hello {
        node_id: "stuck".into(),
        version: "x".into(),
        revision: 0,
    });
    let mut request = tonic::Request::new(Messages(
        vec![ProxyMessage { kind: Some(hello) }].into_iter(),
    ));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {PROXY_TOKEN}").parse().unwrap(),
    );
    // Never read: HTTP/2 flow control soon stops the control plane's sends to this proxy.
    let _stuck = client.stream_config(request).await.unwrap().into_inner();
    eventually(
        Duration::from_secs(5),
        "the stuck proxy to register",
        || async {
            let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
            listed["proxies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["node_id"] == "stuck")
        },
    )
    .await;

    // Snapshots grow by ~10 KB per pool: 3 MB in all, far past the stream's flow-control
    // window and HTTP/2 send buffer.
    let key = client_key(&cp).await;
    let many: Vec<&MockHandle> = std::iter::repeat_n(&a, 1).collect();
    for i in 0..25 {
        let mut body = pool(&format!("bulk-{i}"), &many, dir.path());
        let backend = body["backends"][0].clone();
        body["backends"] = Value::Array(
            (0..40)
                .map(|j| {
                    let mut b = backend.clone();
                    b["name"] = json!(format!("b{j}"));
                    b
                })
                .collect(),
        );
        create_pool(&cp, &body).await;
        // Let each snapshot go out on its own instead of being coalesced with the next.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    eventually(
        Duration::from_secs(10),
        "the stuck proxy to be dropped",
        || async {
            let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
            listed["proxies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["node_id"] == "stuck" && p["state"] == "gone")
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the good proxy to have every pool",
        || serves(&good, &key, "bulk-24"),
    )
    .await;
}

/// Outbound messages for a hand-driven stream.
struct Messages(std::vec::IntoIter<sluice_model::proto::ProxyMessage>);

impl futures_core::Stream for Messages {
    type Item = sluice_model::proto::ProxyMessage;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // Keep the stream open after the scripted messages, as a real proxy would.
        match self.0.next() {
            Some(message) => std::task::Poll::Ready(Some(message)),
            None => std::task::Poll::Pending,
        }
    }
}
