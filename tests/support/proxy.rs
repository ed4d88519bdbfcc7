//! A proxy in-process on ephemeral ports, in front of mock upstreams, configured by a YAML
//! file written the way an operator writes it. Secrets are `file://` references (tests share
//! a process, so they must not touch the environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Response;
use sluice_data_plane::azure::AzureOptions;
use sluice_data_plane::backend::RefreshPolicy;
use sluice_data_plane::proxy::ProxyOptions;
use sluice_data_plane::{
    ClientTls, ConfigSource, ControlPlaneSource, DEFAULT_REPORT_INTERVAL, DataPlane,
    DataPlaneConfig, ListenerOptions, QuotaOptions,
};
use sluice_testkit::mock_upstream::{MockConfig, MockHandle, MockUpstream};
use tempfile::TempDir;

pub const CLIENT_KEY: &str = "sk-client-team-a-0123456789";

/// What a test may change about a proxy beyond its config.
#[derive(Default)]
pub struct ProxySettings {
    pub allow_anonymous: bool,
    pub azure: AzureOptions,
    pub refresh: RefreshPolicy,
    /// Redis for client-key limits; empty: counted in the proxy.
    pub redis_urls: Vec<String>,
    /// How often a proxy following a control plane reports; the default when `None`.
    pub report_interval: Option<Duration>,
    /// The client port: TLS, workers, the cap on in-flight requests.
    pub listener: ListenerOptions,
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub client: reqwest::Client,
    running: super::server::Running,
    dir: TempDir,
}

/// A mock backend and the key it expects (`key-<name>`).
pub async fn mock(name: &str) -> MockHandle {
    mock_with(MockConfig::named(name)).await
}

pub async fn mock_with(config: MockConfig) -> MockHandle {
    let name = config.name.clone();
    MockUpstream::start_local(config.api_key(format!("key-{name}")))
        .await
        .unwrap()
}

/// One backend line of a pool's YAML, pointing at `mock` with its key from a secret file.
pub fn backend_yaml(mock: &MockHandle, extra: &str) -> String {
    let auth = format!(
        "{{ type: api_key, secret: \"file://SECRETS/key-{}\" }}",
        mock.name()
    );
    backend_yaml_with_auth(mock, &auth, extra)
}

/// One backend line of a pool's YAML, pointing at `mock` and authenticated by `auth` (YAML,
/// e.g. `{ type: entra_id }` or a `keyvault://` reference).
pub fn backend_yaml_with_auth(mock: &MockHandle, auth: &str, extra: &str) -> String {
    format!(
        "{{ name: {name}, url: \"{url}\", kind: azure_openai, auth: {auth}{extra} }}",
        name = mock.name(),
        url = mock.url(),
    )
}

/// One pool's YAML list entry: `settings` (e.g. `strategy: weighted`, may be empty) and its
/// backends, each with extra fields (e.g. `, weight: 3`).
pub fn pool_yaml(name: &str, settings: &str, backends: &[(&MockHandle, &str)]) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|(mock, extra)| backend_yaml(mock, extra))
        .collect();
    pool_yaml_of(name, settings, &backends)
}

/// [`pool_yaml`] with backend lines made by the caller (e.g. [`backend_yaml_with_auth`]).
pub fn pool_yaml_of(name: &str, settings: &str, backends: &[String]) -> String {
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!("    {settings}\n")
    };
    format!(
        "  - name: {name}\n{settings}    backends: [{}]",
        backends.join(", ")
    )
}

impl TestProxy {
    /// Starts a proxy with `pools_yaml` (the `pools:` list) and one client key for all pools.
    pub async fn start(pools_yaml: &str, mocks: &[&MockHandle]) -> Self {
        Self::start_with(pools_yaml, mocks, &[], false).await
    }

    /// Also configures `limited_keys`: (id, pools) pairs whose key is `sk-<id>`.
    pub async fn start_with(
        pools_yaml: &str,
        mocks: &[&MockHandle],
        limited_keys: &[(&str, &[&str])],
        allow_anonymous: bool,
    ) -> Self {
        let settings = ProxySettings {
            allow_anonymous,
            ..ProxySettings::default()
        };
        Self::start_configured(pools_yaml, mocks, limited_keys, settings).await
    }

    /// [`Self::start_with`] with every setting open to the test (Azure access, refresh).
    pub async fn start_configured(
        pools_yaml: &str,
        mocks: &[&MockHandle],
        limited_keys: &[(&str, &[&str])],
        settings: ProxySettings,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        for mock in mocks {
            std::fs::write(
                secrets.join(format!("key-{}", mock.name())),
                format!("key-{}\n", mock.name()),
            )
            .unwrap();
        }
        std::fs::write(secrets.join("client"), CLIENT_KEY).unwrap();
        let mut yaml = format!(
            "pools:\n{pools_yaml}\nclient_keys:\n  - {{ id: team-a, secret: \"file://SECRETS/client\" }}\n"
        );
        for (id, pools) in limited_keys {
            std::fs::write(secrets.join(format!("client-{id}")), format!("sk-{id}")).unwrap();
            yaml.push_str(&format!(
                "  - {{ id: {id}, secret: \"file://SECRETS/client-{id}\", pools: [{}] }}\n",
                pools.join(", ")
            ));
        }
        let yaml = yaml.replace("SECRETS", secrets.to_str().unwrap());
        let config_file: PathBuf = dir.path().join("sluice.yaml");
        std::fs::write(&config_file, yaml).unwrap();
        Self::start_source(ConfigSource::File(config_file), dir, settings).await
    }

    /// A proxy following the control plane at `grpc` as `node_id`, caching in `cache_dir`.
    pub async fn follow(grpc: SocketAddr, node_id: &str, cache_dir: &std::path::Path) -> Self {
        Self::follow_url(format!("http://{grpc}"), node_id, cache_dir, None).await
    }

    /// Follows a control plane at `url` (https:// with `tls`).
    pub async fn follow_url(
        url: String,
        node_id: &str,
        cache_dir: &std::path::Path,
        tls: Option<ClientTls>,
    ) -> Self {
        Self::follow_configured(url, node_id, cache_dir, tls, ProxySettings::default()).await
    }

    /// [`Self::follow_url`] with every setting open to the test (Azure access, refresh).
    pub async fn follow_configured(
        url: String,
        node_id: &str,
        cache_dir: &std::path::Path,
        tls: Option<ClientTls>,
        settings: ProxySettings,
    ) -> Self {
        let source = ConfigSource::ControlPlane(ControlPlaneSource {
            url,
            proxy_token: super::PROXY_TOKEN.to_owned(),
            node_id: node_id.to_owned(),
            cache_dir: Some(cache_dir.to_owned()),
            tls,
            report_interval: settings.report_interval.unwrap_or(DEFAULT_REPORT_INTERVAL),
        });
        Self::start_source(source, tempfile::tempdir().unwrap(), settings).await
    }

    async fn start_source(source: ConfigSource, dir: TempDir, settings: ProxySettings) -> Self {
        let data_plane = DataPlane::bind(DataPlaneConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ops_addr: "127.0.0.1:0".parse().unwrap(),
            listener: settings.listener,
            source,
            options: ProxyOptions {
                allow_anonymous: settings.allow_anonymous,
                max_body_bytes: 64 * 1024,
            },
            connect_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            azure: settings.azure,
            credential_refresh: settings.refresh,
            quota: QuotaOptions {
                redis_urls: settings.redis_urls,
                sync_interval: Duration::from_millis(100),
                node_id: format!("test-proxy-{}", std::process::id()),
            },
        })
        .await
        .expect("proxy starts");
        let (addr, ops_addr) = (data_plane.addr().unwrap(), data_plane.ops_addr().unwrap());
        Self {
            addr,
            ops_addr,
            client: super::server::http_client(),
            running: super::server::Running::spawn(|shutdown| data_plane.serve(shutdown)),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An Azure-style chat completion for `deployment` with the client key.
    pub fn chat(&self, deployment: &str) -> reqwest::RequestBuilder {
        self.chat_with_key(deployment, CLIENT_KEY)
    }

    /// The same with another client key.
    pub fn chat_with_key(&self, deployment: &str, key: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(&format!(
                "/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
            )))
            .header("api-key", key)
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "hello there"}]}))
    }

    pub fn stream(&self, deployment: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(&format!(
                "/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
            )))
            .header("api-key", CLIENT_KEY)
            .json(&serde_json::json!({
                "messages": [{"role": "user", "content": "hello there"}],
                "stream": true,
                "stream_options": {"include_usage": true},
            }))
    }

    /// Sends `n` chat calls one after another and returns who answered each.
    pub async fn backends_of(&self, deployment: &str, n: usize) -> Vec<String> {
        let mut served = Vec::with_capacity(n);
        for _ in 0..n {
            let response = self.chat(deployment).send().await.unwrap();
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
            served.push(served_by(&response));
        }
        served
    }

    pub async fn metrics(&self) -> String {
        super::ops_metrics(self.ops_addr).await
    }

    /// One series' value from `/metrics`; panics, showing the text, when it is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        super::process::metric_value(&text, series)
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    /// SIGTERM-style shutdown: stop accepting, let in-flight requests finish.
    pub fn begin_shutdown(&mut self) {
        self.running.begin_stop();
    }

    pub async fn stopped(self) {
        self.running.stop().await;
    }

    /// Rewrites a backend's secret file (`key-<mock name>`), as a rotated mounted secret.
    pub fn rotate_secret(&self, mock: &MockHandle, value: &str) {
        let path = self
            .dir
            .path()
            .join("secrets")
            .join(format!("key-{}", mock.name()));
        std::fs::write(path, value).unwrap();
    }

    /// `/readyz` on the ops port answers 200 (a config is loaded).
    pub async fn is_ready(&self) -> bool {
        reqwest::get(format!("http://{}/readyz", self.ops_addr))
            .await
            .is_ok_and(|r| r.status() == 200)
    }
}

pub fn served_by(response: &Response) -> String {
    response.headers()["x-sluice-backend"]
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn attempts(response: &Response) -> u32 {
    response.headers()["x-sluice-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
