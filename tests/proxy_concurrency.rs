//! The proxy's workers and its cap on in-flight requests: a request counts until its response
//! body is done, one past the cap gets a 503 it can retry, and the flags reach the listener.

mod support;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use reqwest::{StatusCode, Version};
use sluice_data_plane::ListenerOptions;
use sluice_testkit::azure::TestCa;
use sluice_testkit::mock_upstream::MockConfig;
use support::eventually;
use support::process::ProxyProcess;
use support::proxy::{ProxySettings, TestProxy, mock_with, pool_yaml};

#[tokio::test]
async fn a_request_past_the_cap_gets_a_503_to_retry_and_is_counted() {
    // Streams of ten seconds, as long generations are.
    let backend = mock_with(
        MockConfig::named("busy")
            .tokens_per_second(10.0)
            .completion_tokens(100),
    )
    .await;
    let proxy = TestProxy::start_configured(
        &pool_yaml("p", "", &[(&backend, "")]),
        &[&backend],
        &[],
        ProxySettings {
            listener: ListenerOptions {
                workers: NonZeroUsize::new(1),
                max_concurrent_requests: NonZeroUsize::new(2),
                tls: None,
            },
            ..ProxySettings::default()
        },
    )
    .await;
    assert_eq!(proxy.metric("sluice_concurrency_limit").await, 2.0);
    assert_eq!(proxy.metric("sluice_proxy_workers").await, 1.0);

    let first = proxy.stream("p").send().await.unwrap();
    let second = proxy.stream("p").send().await.unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    // Their heads are out, their bodies are still being sent: both count.
    assert_eq!(proxy.metric("sluice_inflight_requests").await, 2.0);

    let refused = proxy.chat("p").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["x-should-retry"], "true");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "too_many_concurrent_requests",
        "{body}"
    );
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(proxy.metric("sluice_concurrency_rejected_total").await, 1.0);
    assert_eq!(
        backend.request_count(),
        2,
        "a refused request never reaches a backend"
    );

    // A client that leaves ends its request (the proxy's next write fails); its room is free.
    drop(first);
    eventually(
        Duration::from_secs(10),
        "the stream to stop counting",
        || async { proxy.metric("sluice_inflight_requests").await == 1.0 },
    )
    .await;
    let admitted = proxy.chat("p").send().await.unwrap();
    assert_eq!(admitted.status(), StatusCode::OK);
    drop(second);
    eventually(Duration::from_secs(10), "nothing in flight", || async {
        proxy.metric("sluice_inflight_requests").await == 0.0
    })
    .await;
    assert_eq!(proxy.metric("sluice_concurrency_rejected_total").await, 1.0);
}

/// Threads named `sluice-proxy-N` in the process: the workers.
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("sluice-proxy-"))
        .count()
}

#[tokio::test]
async fn the_binary_takes_its_workers_cap_and_certificate_from_flags() {
    let ca = TestCa::new().unwrap();
    let pem = ca.server_pem(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let args = [
        ("--config", path("sluice.yaml", "pools: []\n")),
        ("--tls-cert", path("tls.crt", &pem.chain)),
        ("--tls-key", path("tls.key", &pem.key)),
        ("--workers", "3".to_owned()),
        ("--max-concurrent-requests", "5".to_owned()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .chain(["--allow-anonymous".to_owned()])
    .collect::<Vec<_>>();
    let proxy = ProxyProcess::start("workers", &args, &HashMap::new()).await;

    // The address is logged as the workers start: give them a moment to be named.
    eventually(Duration::from_secs(10), "three worker threads", || {
        let threads = worker_threads(proxy.pid());
        async move { threads == 3 }
    })
    .await;
    assert_eq!(proxy.metric("sluice_proxy_workers").await, Some(3.0));
    // Each worker takes its share of 5, rounded up: 2 each.
    assert_eq!(proxy.metric("sluice_concurrency_limit").await, Some(6.0));

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&ca.ca_der()).unwrap()])
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let models = client
        .get(format!("https://localhost:{}/v1/models", proxy.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), StatusCode::OK);
    assert_eq!(models.version(), Version::HTTP_2);
}
