use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use clap::builder::TypedValueParser as _;
use sluice_data_plane::azure::{AzureOptions, CredentialKind, IdentityConfig, VaultUrlTemplate};
use sluice_data_plane::backend::RefreshPolicy;
use sluice_data_plane::proxy::ProxyOptions;
use sluice_data_plane::{
    ClientTls, ConfigSource, ControlPlaneSource, DataPlane, DataPlaneConfig, ListenerOptions,
    QuotaOptions,
};

use super::{listener_tls, read_pem};
use crate::shutdown;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics_export::MetricsSource;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "control_plane"])))]
pub struct ProxyArgs {
    /// Static config file: the admin API's model as YAML (pools, backends, client keys).
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Control plane to follow over gRPC, e.g. http://sluice-control-plane:9091.
    #[arg(long, env = "SLUICE_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// Token for the config stream (the control plane's SLUICE_PROXY_TOKEN).
    #[arg(long, env = "SLUICE_PROXY_TOKEN", hide_env_values = true)]
    proxy_token: Option<String>,
    /// This proxy's name in the control plane's /api/v1/proxies (default: HOSTNAME).
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<String>,
    /// Keeps the last applied config so a restart during a control-plane outage still serves.
    #[arg(
        long,
        env = "SLUICE_CACHE_DIR",
        default_value = "./.sluice/proxy-cache"
    )]
    cache_dir: PathBuf,
    /// How often the proxy reports its backends' states and per-key usage to the control
    /// plane (also soon after a backend changes state); 0 turns reports off.
    #[arg(long, env = "SLUICE_REPORT_INTERVAL_MS", default_value_t = 5000)]
    report_interval_ms: u64,
    /// PEM CA for a control plane served over https:// (system roots otherwise).
    #[arg(long, env = "SLUICE_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// PEM client certificate for control planes that require mTLS.
    #[arg(long, env = "SLUICE_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key for --client-cert.
    #[arg(long, env = "SLUICE_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Client-facing address (HTTP/1.1 and h2c; HTTPS with --tls-cert).
    #[arg(long, env = "SLUICE_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// PEM certificate chain to serve clients over HTTPS (HTTP/2 by ALPN, and HTTP/1.1); the
    /// file is re-read when it changes, as when cert-manager renews it.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most client requests served at once, streams counted until they end; past it clients
    /// get 503 with retry-after. Split evenly over the workers. 0: no cap.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_REQUESTS", default_value_t = 0)]
    max_concurrent_requests: usize,
    /// Threads serving clients, each with its own listening socket (default: one per CPU).
    #[arg(long, env = "SLUICE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Operations address: /healthz, /readyz, /metrics.
    #[arg(long, env = "SLUICE_OPS_ADDR", default_value = "0.0.0.0:8081")]
    ops_addr: SocketAddr,
    /// Serve clients that present no key. Off by default.
    #[arg(long, env = "SLUICE_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Largest request body, kept in memory for retries; larger bodies get 413.
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Upstream TCP + TLS connect timeout.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT_MS", default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests (streams included) before closing.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,
    #[command(flatten)]
    azure: AzureArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

/// Where client-key limits are counted.
#[derive(Args, Debug)]
pub struct LimitsArgs {
    /// Redis or Valkey that the proxies share client-key limits through: redis://HOST:6379,
    /// rediss:// for TLS, or comma-separated seed nodes of a cluster. Without it each proxy
    /// counts alone, so every limit holds per proxy.
    #[arg(long, env = "SLUICE_REDIS_URL", value_delimiter = ',')]
    redis_url: Vec<String>,
    /// How often a proxy settles its counts with Redis (the request path never waits on it).
    #[arg(
        long,
        env = "SLUICE_LIMITS_SYNC_MS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(10..=10_000)
    )]
    limits_sync_ms: u64,
}

impl LimitsArgs {
    /// `node` names this proxy; a per-process suffix keeps two processes that share a host
    /// name (a laptop, a test) from counting as one proxy.
    pub fn options(&self, node: &str) -> QuotaOptions {
        QuotaOptions {
            redis_urls: self.redis_url.clone(),
            sync_interval: Duration::from_millis(self.limits_sync_ms),
            node_id: format!("{node}#{:08x}", rand_suffix()),
        }
    }
}

/// Key Vault and Entra ID: how the proxy's own Azure identity is found and used.
#[derive(Args, Debug)]
pub struct AzureArgs {
    /// Vault URL for keyvault://VAULT/… references; change it for sovereign clouds or
    /// private endpoints.
    #[arg(
        long,
        env = "SLUICE_KEYVAULT_URL_TEMPLATE",
        default_value_t = VaultUrlTemplate::default()
    )]
    keyvault_url_template: VaultUrlTemplate,
    /// Azure credential for Key Vault and entra_id backends: auto tries client-secret
    /// (AZURE_CLIENT_SECRET), client-certificate (AZURE_CLIENT_CERTIFICATE_PATH, PEM),
    /// workload-identity (AZURE_FEDERATED_TOKEN_FILE), managed-identity,
    /// then azure-cli, and logs the one that worked.
    #[arg(
        long,
        env = "SLUICE_AZURE_CREDENTIAL",
        default_value_t = CredentialKind::Auto,
        value_parser = clap::builder::PossibleValuesParser::new(CredentialKind::NAMES)
            .map(|name| name.parse::<CredentialKind>().unwrap_or_default())
    )]
    azure_credential: CredentialKind,
    /// How often backend keys are re-read from Key Vault, files or the environment (Entra ID
    /// tokens are renewed before they expire regardless).
    #[arg(
        long,
        env = "SLUICE_SECRET_REFRESH_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    secret_refresh_secs: u64,
}

impl AzureArgs {
    pub fn options(&self) -> AzureOptions {
        AzureOptions {
            vault_url_template: self.keyvault_url_template.clone(),
            identity: IdentityConfig::from_env(self.azure_credential),
            ..AzureOptions::default()
        }
    }

    pub fn refresh(&self) -> RefreshPolicy {
        RefreshPolicy {
            interval: Duration::from_secs(self.secret_refresh_secs),
        }
    }
}

impl ProxyArgs {
    pub async fn run(self, telemetry: &Telemetry) -> anyhow::Result<()> {
        let source = self.source()?;
        let data_plane = DataPlane::bind(DataPlaneConfig {
            addr: self.addr,
            ops_addr: self.ops_addr,
            listener: ListenerOptions {
                workers: self.workers.and_then(|n| NonZeroUsize::new(n.into())),
                max_concurrent_requests: NonZeroUsize::new(self.max_concurrent_requests),
                tls: listener_tls(&self.tls_cert, &self.tls_key),
            },
            source,
            options: ProxyOptions {
                allow_anonymous: self.allow_anonymous,
                max_body_bytes: self.max_body_bytes,
            },
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            azure: self.azure.options(),
            credential_refresh: self.azure.refresh(),
            quota: self
                .limits
                .options(&self.node_id.clone().unwrap_or_else(default_node_id)),
        })
        .await
        .context("proxy failed to start")?;
        let export = telemetry.export_metrics(vec![MetricsSource::new(
            "sluice.proxy",
            data_plane.metrics_reader(),
        )])?;
        // The last export runs after the drain, so it counts the last requests.
        let served = data_plane.serve(shutdown::signal()).await;
        export.finish().await;
        served.context("proxy server failed")
    }

    fn source(&self) -> anyhow::Result<ConfigSource> {
        let Some(url) = &self.control_plane else {
            let path = self
                .config
                .clone()
                .context("--config or --control-plane is required")?;
            return Ok(ConfigSource::File(path));
        };
        let proxy_token = self
            .proxy_token
            .clone()
            .context("--control-plane needs --proxy-token (SLUICE_PROXY_TOKEN)")?;
        let tls = match (&self.control_plane_ca, &self.client_cert, &self.client_key) {
            (None, None, _) if !url.starts_with("https://") => None,
            (ca, certificate, key) => Some(ClientTls {
                ca: ca
                    .as_deref()
                    .map(|p| read_pem("--control-plane-ca", p))
                    .transpose()?,
                identity: match (certificate, key) {
                    (Some(c), Some(k)) => {
                        Some((read_pem("--client-cert", c)?, read_pem("--client-key", k)?))
                    }
                    _ => None,
                },
            }),
        };
        Ok(ConfigSource::ControlPlane(ControlPlaneSource {
            url: url.clone(),
            proxy_token,
            node_id: self.node_id.clone().unwrap_or_else(default_node_id),
            cache_dir: Some(self.cache_dir.clone()),
            tls,
            report_interval: Duration::from_millis(self.report_interval_ms),
        }))
    }
}

/// Kubernetes sets HOSTNAME to the pod name, which is what operators want to see.
fn default_node_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("proxy-{:08x}", rand_suffix()))
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id()) as u32
}
