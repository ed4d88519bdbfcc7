//! What a client's calls leave on the proxy's `/metrics`: one counter for every call, the
//! proxy's own refusals included, by pool, client key, status class and error code; the
//! end-to-end duration; stream token times; the build and the config revisions; and the
//! standard process metrics of the proxy process itself.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sluice_testkit::mock_upstream::{MockConfig, MockUpstream};
use support::process::{ProxyProcess, metric_value};
use support::proxy::TestProxy;

const TEAM_KEY: &str = "sk-test-team-a-0123456789abcdef";
const LIMITED_KEY: &str = "sk-test-limited-0123456789abcdef";

fn counter(pool: &str, key: &str, class: &str, code: &str) -> String {
    format!(
        r#"sluice_client_requests_total{{pool="{pool}",client_key="{key}",class="{class}",code="{code}"}}"#
    )
}

async fn started_proxy() -> (ProxyProcess, sluice_testkit::mock_upstream::MockHandle) {
    let mock = MockUpstream::start_local(MockConfig::named("east"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.yaml");
    std::fs::write(
        &file,
        format!(
            "pools:\n  - {{ name: gpt-4o, backends: [{{ name: east, url: \"{}\", kind: azure_openai, auth: {{ type: none }} }}] }}\n\
             client_keys:\n  - {{ id: team-a, secret: \"env://SLUICE_TEST_TEAM\" }}\n\
             \x20 - {{ id: limited, secret: \"env://SLUICE_TEST_LIMITED\", limits: {{ requests_per_minute: 1 }} }}\n",
            mock.url()
        ),
    )
    .unwrap();
    let env = HashMap::from([
        ("SLUICE_TEST_TEAM".to_owned(), TEAM_KEY.to_owned()),
        ("SLUICE_TEST_LIMITED".to_owned(), LIMITED_KEY.to_owned()),
    ]);
    let args = ["--config".to_owned(), file.display().to_string()];
    let proxy = ProxyProcess::start("client-metrics", &args, &env).await;
    // The config file is read at start; the directory may go.
    drop(dir);
    (proxy, mock)
}

async fn chat(proxy: &ProxyProcess, deployment: &str, key: Option<&str>, stream: bool) -> u16 {
    let mut request = reqwest::Client::new()
        .post(proxy.url(&format!(
            "/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
        )))
        .json(&json!({
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 5,
            "stream": stream,
            "stream_options": stream.then(|| json!({"include_usage": true})),
        }));
    if let Some(key) = key {
        request = request.header("api-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // Read to the end: the duration is taken when the body ends.
    response.bytes().await.unwrap();
    status
}

/// A 200, a 401, a 404 for an unknown deployment and a 429 from a key's limit each count
/// under the pool and key known when the call was answered, with the proxy's error code.
#[tokio::test]
async fn every_call_counts_under_its_pool_key_class_and_code() {
    let (proxy, _mock) = started_proxy().await;
    assert_eq!(chat(&proxy, "gpt-4o", Some(TEAM_KEY), false).await, 200);
    assert_eq!(chat(&proxy, "gpt-4o", None, false).await, 401);
    assert_eq!(chat(&proxy, "gpt-4o", Some("sk-wrong"), false).await, 401);
    assert_eq!(chat(&proxy, "nope", Some(TEAM_KEY), false).await, 404);
    assert_eq!(chat(&proxy, "gpt-4o", Some(LIMITED_KEY), false).await, 200);
    assert_eq!(chat(&proxy, "gpt-4o", Some(LIMITED_KEY), false).await, 429);
    assert_eq!(chat(&proxy, "gpt-4o", Some(TEAM_KEY), true).await, 200);

    let expected = [
        (counter("gpt-4o", "team-a", "2xx", "none"), 2.0),
        (counter("_none", "_none", "4xx", "invalid_api_key"), 2.0),
        (counter("_none", "team-a", "4xx", "DeploymentNotFound"), 1.0),
        (counter("gpt-4o", "limited", "2xx", "none"), 1.0),
        (counter("gpt-4o", "limited", "4xx", "rate_limit_exceeded"), 1.0),
        (
            r#"sluice_client_request_duration_seconds_count{pool="gpt-4o",client_key="team-a",class="2xx"}"#.to_owned(),
            2.0,
        ),
        (
            r#"sluice_client_request_duration_seconds_count{pool="_none",client_key="_none",class="4xx"}"#.to_owned(),
            2.0,
        ),
        (
            r#"sluice_time_to_first_token_seconds_count{pool="gpt-4o"}"#.to_owned(),
            1.0,
        ),
    ];
    // The last body's end is counted as the proxy's side of it finishes: allow a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut text = proxy.metrics().await;
    while std::time::Instant::now() < deadline
        && !expected
            .iter()
            .all(|(series, value)| metric_value(&text, series) == Some(*value))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = proxy.metrics().await;
    }
    for (series, value) in &expected {
        assert_eq!(
            metric_value(&text, series),
            Some(*value),
            "{series}\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "sluice_build_info{{version=\"{}\",",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // A static config was offered and applied: no lag.
    assert_eq!(
        metric_value(&text, "sluice_config_revision_offered"),
        metric_value(&text, "sluice_config_revision"),
        "{text}"
    );
}

/// The process metrics are read from the proxy's `/proc` when scraped: sane values, and a
/// start time of moments ago.
#[tokio::test]
async fn the_proxy_process_is_measured() {
    let (proxy, _mock) = started_proxy().await;
    assert_eq!(chat(&proxy, "gpt-4o", Some(TEAM_KEY), false).await, 200);
    let text = proxy.metrics().await;
    let value =
        |name: &str| metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    let resident = value("process_resident_memory_bytes");
    assert!(resident > 0.0, "{text}");
    assert!(value("process_virtual_memory_bytes") >= resident, "{text}");
    assert!(value("process_cpu_seconds_total") > 0.0, "{text}");
    // Its listeners and the backend connection at least.
    let open = value("process_open_fds");
    assert!(open >= 3.0, "{text}");
    assert!(value("process_max_fds") >= open, "{text}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "started at {started}, now is {now}"
    );
}

/// A proxy that has no config yet answers 503 `not_ready`, counted with no pool or key.
#[tokio::test]
async fn calls_before_the_first_config_count_as_not_ready() {
    // A control plane that never answers: a port held for the whole test, never accepted from.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let proxy = TestProxy::follow(silent.local_addr().unwrap(), "metrics-node", cache.path()).await;
    let response = proxy.chat("gpt-4o").send().await.unwrap();
    assert_eq!(response.status(), 503);
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(&text, &counter("_none", "_none", "5xx", "not_ready")),
        Some(1.0),
        "{text}"
    );
}
