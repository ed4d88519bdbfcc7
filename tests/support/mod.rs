//! Shared end-to-end test kit: fresh databases, an in-process control plane on an ephemeral
//! port, and an HTTP client that speaks to it as an operator would.
#![allow(dead_code)] // each test binary uses a different part of the kit

pub mod browser;
pub mod console;
pub mod database;
pub mod logs;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod relay;
pub mod server;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sluice_control_plane::fleet::FleetSettings;
use sluice_control_plane::store::StoreOptions;
use sluice_control_plane::{ControlPlane, ControlPlaneConfig, GrpcTls};

pub use database::TestDatabase;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const PROXY_TOKEN: &str = "test-proxy-token-0123456789";

/// Runs the test body once on SQLite and once on a fresh Postgres database.
#[macro_export]
macro_rules! on_both_databases {
    ($(#[$meta:meta])* async fn $name:ident($db:ident: TestDatabase) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($db: $crate::support::TestDatabase) $body

            #[tokio::test]
            async fn sqlite() {
                run($crate::support::TestDatabase::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                run($crate::support::TestDatabase::postgres().await).await
            }
        }
    };
}

/// The control-plane config tests use: ephemeral loopback ports, the test tokens.
/// The Prometheus text a proxy's ops port serves.
pub async fn ops_metrics(ops_addr: SocketAddr) -> String {
    reqwest::get(format!("http://{ops_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn test_config(database_url: String) -> ControlPlaneConfig {
    ControlPlaneConfig {
        database_url,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        admin_tls: None,
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        admin_tokens: vec![ADMIN_TOKEN.to_owned()],
        insecure_no_admin_auth: false,
        proxy_tokens: vec![PROXY_TOKEN.to_owned()],
        grpc_tls: None,
        proxy_send_timeout: Duration::from_secs(10),
        store: StoreOptions::default(),
        redis_url: None,
        fleet: FleetSettings {
            replica: format!("replica-{}", REPLICAS.fetch_add(1, Ordering::Relaxed)),
            ..FleetSettings::default()
        },
        console: Default::default(),
    }
}

/// Numbers the replicas of one test binary, so two in one test are told apart.
static REPLICAS: AtomicU32 = AtomicU32::new(1);

/// A control plane serving on 127.0.0.1 with an ephemeral port; stopped on drop.
pub struct TestControlPlane {
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    client: reqwest::Client,
    token: Option<String>,
    running: server::Running,
    pub database: TestDatabase,
}

impl TestControlPlane {
    pub async fn start(database: TestDatabase) -> Self {
        Self::start_with(database, StoreOptions::default()).await
    }

    pub async fn start_with(database: TestDatabase, store: StoreOptions) -> Self {
        let url = database.url().to_owned();
        Self::start_via(database, url, store).await
    }

    /// Starts on `database` reached through `database_url` (e.g. a [`relay::TcpRelay`]).
    pub async fn start_via(
        database: TestDatabase,
        database_url: String,
        store: StoreOptions,
    ) -> Self {
        Self::start_full(database, database_url, store, None).await
    }

    /// Serves the config stream over TLS (mTLS when `tls` names a client CA).
    pub async fn start_with_tls(database: TestDatabase, tls: GrpcTls) -> Self {
        let url = database.url().to_owned();
        Self::start_full(database, url, StoreOptions::default(), Some(tls)).await
    }

    async fn start_full(
        database: TestDatabase,
        database_url: String,
        store: StoreOptions,
        grpc_tls: Option<GrpcTls>,
    ) -> Self {
        let config = ControlPlaneConfig {
            store,
            grpc_tls,
            ..test_config(database_url)
        };
        Self::start_config(database, config).await
    }

    /// Starts with a config made by the caller (tokens and addresses as the other starters).
    pub async fn start_config(database: TestDatabase, config: ControlPlaneConfig) -> Self {
        let control_plane = ControlPlane::bind(config)
            .await
            .expect("control plane starts");
        let addr = control_plane.admin_addr().unwrap();
        let grpc_addr = control_plane.grpc_addr().unwrap();
        Self {
            addr,
            grpc_addr,
            client: server::http_client(),
            token: Some(ADMIN_TOKEN.to_owned()),
            running: server::Running::spawn(|shutdown| control_plane.serve(shutdown)),
            database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the admin token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// A request without any credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// `GET /api/v1/usage?{query}` as CSV.
    pub async fn usage_csv(&self, query: &str) -> String {
        let path = format!("/api/v1/usage?{query}");
        let response = self.request(Method::GET, &path);
        let response = response.header("accept", "text/csv").send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.unwrap()
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path).json(body).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.unwrap()
    }

    /// The config revision as the API reports it.
    pub async fn revision(&self) -> u64 {
        let config: Value = expect_status(self.get("/api/v1/config").await, 200).await;
        config["revision"].as_u64().unwrap()
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// Two control-plane replicas on one fresh Postgres, as production runs them.
pub async fn replicas_on_postgres() -> (TestControlPlane, TestControlPlane) {
    let db = TestDatabase::postgres().await;
    let url = db.url().to_owned();
    let first = TestControlPlane::start(db).await;
    let second =
        TestControlPlane::start_via(TestDatabase::sqlite(), url, StoreOptions::default()).await;
    (first, second)
}

/// Asserts the status and returns the JSON body (or `Value::Null` for an empty body).
pub async fn expect_status(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
    }
}

/// Asserts an API error: status, `error.code` and (when given) `error.field`.
pub async fn expect_error(
    response: Response,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> String {
    let body = expect_status(response, status).await;
    assert_eq!(body["error"]["code"], code, "{body}");
    if let Some(field) = field {
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// The `ETag` header, which must be present.
pub fn etag(response: &Response) -> String {
    response
        .headers()
        .get("etag")
        .expect("response has an ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn backend_json(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "url": format!("https://aoai-{name}.openai.azure.com"),
        "kind": "azure_openai",
        "auth": {"type": "api_key", "secret": format!("keyvault://my-vault/aoai-{name}-key")}
    })
}

pub fn pool_json(name: &str, backends: &[&str]) -> Value {
    serde_json::json!({
        "name": name,
        "backends": backends.iter().map(|b| backend_json(b)).collect::<Vec<_>>(),
    })
}

/// Polls `check` every 20 ms until it holds, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
