//! Sluice's data plane: a proxy that serves OpenAI and Azure OpenAI clients and spreads their
//! calls over a pool's backends, with priority tiers, cooldowns, ejection, retries on other
//! backends and streamed responses.

mod attempt;
pub mod azure;
pub mod backend;
pub mod balance;
mod body;
mod cache;
pub mod call;
mod canonical_path;
mod client_auth;
mod client_error;
pub mod clock;
mod concurrency;
pub mod config;
pub mod control_plane;
mod credential_refresh;
mod drain;
pub mod head_sampling;
mod headers;
mod idle_timer;
mod json_members;
pub mod metrics;
mod models;
mod per_worker;
pub mod proxy;
pub mod quota;
mod random;
pub mod report;
mod request_body;
mod routing;
pub mod secrets;
mod server;
pub mod trace;
pub mod upstream;
mod upstream_uri;
mod usage;
mod usage_event;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_protobuf::{self, prometheus_data_model::MetricFamily};
use sluice_tls::{Alpn, CertificateError, ServerTls, TlsSettings};
use tokio::net::TcpListener;

use crate::azure::{Azure, AzureOptions, IdentityError};
use crate::backend::RefreshPolicy;
use crate::cache::SnapshotCache;
use crate::concurrency::Load;
use crate::config::{ConfigBuilder, ConfigFileError};
use crate::control_plane::ControlPlaneClient;
use crate::metrics::ProxyMetrics;
use crate::proxy::{Proxy, ProxyOptions};
use crate::quota::sync::QuotaSync;
use crate::quota::{LocalCounts, Quotas, RedisCounts, SharedCounts};
use crate::report::{ReportLedger, Reporter};
use crate::secrets::{SecretResolver, Secrets};

/// Where the proxy's config comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A static YAML file (the admin API's model).
    File(PathBuf),
    /// The control plane's config stream.
    ControlPlane(ControlPlaneSource),
}

#[derive(Clone, Debug)]
pub struct ControlPlaneSource {
    /// `http://host:9091`, or `https://…` for TLS.
    pub url: String,
    pub proxy_token: String,
    pub node_id: String,
    /// Where the last applied snapshot is kept for restarts during an outage.
    pub cache_dir: Option<PathBuf>,
    pub tls: Option<ClientTls>,
    /// How often backend states and per-key usage are reported on the stream (also soon
    /// after a backend changes state); zero turns reports off.
    pub report_interval: Duration,
}

/// `--report-interval-ms`'s default.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// PEM material for the config stream over TLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// CA that signed the control plane's certificate (system roots when absent).
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, for control planes that require mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    /// How the client port serves: TLS, workers, the cap on in-flight requests.
    pub listener: ListenerOptions,
    pub source: ConfigSource,
    pub options: ProxyOptions,
    pub connect_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Key Vault and Entra ID access with the proxy's Azure identity.
    pub azure: AzureOptions,
    pub credential_refresh: RefreshPolicy,
    pub quota: QuotaOptions,
}

/// How the client port serves.
#[derive(Clone, Debug, Default)]
pub struct ListenerOptions {
    /// Threads serving clients, each with its own runtime and listening socket (one per core
    /// when `None`).
    pub workers: Option<NonZeroUsize>,
    /// In-flight client requests the process serves at once, split over the workers; more get
    /// 503. `None`: no cap.
    pub max_concurrent_requests: Option<NonZeroUsize>,
    /// HTTPS with HTTP/2 by ALPN instead of HTTP/1.1 and h2c.
    pub tls: Option<TlsSettings>,
}

impl ListenerOptions {
    fn worker_count(&self) -> NonZeroUsize {
        if cfg!(not(unix)) {
            // Without SO_REUSEPORT only one socket can listen on the address.
            return NonZeroUsize::MIN;
        }
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }
}

/// Where client-key limits are counted.
#[derive(Clone, Debug)]
pub struct QuotaOptions {
    /// Redis or Valkey: one URL, or several seed nodes of a cluster. Empty: counts stay in
    /// this proxy and every limit holds per proxy.
    pub redis_urls: Vec<String>,
    /// How often counts are settled with the shared store.
    pub sync_interval: Duration,
    /// This proxy's name among the proxies sharing the counts.
    pub node_id: String,
}

/// How long a config waits for new backends' credentials before it is served anyway.
const RESOLVE_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    #[error(transparent)]
    Tls(#[from] upstream::NoRootCertificates),
    #[error("invalid control plane address or TLS settings")]
    ControlPlane(#[from] tonic::transport::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    ListenerTls(#[from] CertificateError),
    #[error("invalid Redis URL for client-key limits")]
    QuotaStore(#[source] quota::store::StoreError),
    #[error("the proxy token cannot be sent as a header (it must be visible ASCII)")]
    ProxyToken,
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A proxy with its listeners bound and, when one is available, its config loaded.
pub struct DataPlane {
    proxy: Arc<Proxy>,
    quota_sync: Arc<QuotaSync>,
    credential_refresh: RefreshPolicy,
    follower: Option<ControlPlaneClient>,
    /// One socket per worker, all on the proxy address.
    listeners: server::ProxyListeners,
    ops_listener: TcpListener,
    drain_timeout: Duration,
}

impl DataPlane {
    pub async fn bind(config: DataPlaneConfig) -> Result<Self, StartError> {
        // A certificate that cannot be served stops the start before anything else is done.
        let tls = config
            .listener
            .tls
            .as_ref()
            .map(|settings| ServerTls::new(settings, Alpn::Http2AndHttp1))
            .transpose()?;
        let workers = config.listener.worker_count();
        per_worker::declare_workers(workers.get());
        let load = Arc::new(Load::new(workers, config.listener.max_concurrent_requests));
        let metrics = Arc::new(ProxyMetrics::new().with_listener(&load));
        let azure = Arc::new(Azure::new(config.azure)?);
        let resolver: Arc<dyn SecretResolver> = Arc::new(Secrets::new(azure));
        let store: Arc<dyn SharedCounts> = if config.quota.redis_urls.is_empty() {
            Arc::new(LocalCounts::default())
        } else {
            Arc::new(RedisCounts::new(&config.quota.redis_urls).map_err(StartError::QuotaStore)?)
        };
        let quotas = Arc::new(Quotas::new(store.is_shared(), config.quota.sync_interval));
        let quota_sync = Arc::new(QuotaSync::new(
            quotas.clone(),
            store,
            config.quota.node_id.clone(),
            config.quota.sync_interval,
            metrics.clone(),
        ));
        // Counters are kept for reports only when a control plane will get them.
        let ledger = Arc::new(match &config.source {
            ConfigSource::ControlPlane(source) if !source.report_interval.is_zero() => {
                ReportLedger::tracking()
            }
            _ => ReportLedger::untracked(),
        });
        let builder = Arc::new(ConfigBuilder {
            upstream: upstream::Upstream::new(config.connect_timeout)?,
            quotas,
            resolver: resolver.clone(),
            metrics: metrics.clone(),
            ledger,
            refresh: config.credential_refresh,
            resolve_budget: RESOLVE_BUDGET,
        });
        let proxy = Arc::new(Proxy::new(config.options, metrics));
        let follower = match config.source {
            ConfigSource::File(path) => {
                let snapshot = config::load_file(&path, resolver.as_ref()).await?;
                proxy.apply(builder.build(snapshot, None).await);
                None
            }
            ConfigSource::ControlPlane(source) => Some(follow(source, &proxy, builder).await?),
        };
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Self {
            proxy,
            quota_sync,
            credential_refresh: config.credential_refresh,
            follower,
            listeners: server::ProxyListeners {
                sockets: server::bind_workers(config.addr, workers).map_err(|source| {
                    StartError::Bind {
                        addr: config.addr,
                        source,
                    }
                })?,
                load,
                tls,
            },
            ops_listener: bind(config.ops_addr).await?,
            drain_timeout: config.drain_timeout,
        })
    }

    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners
            .sockets
            .first()
            .ok_or_else(|| std::io::Error::other("no listener"))?
            .local_addr()
    }

    pub fn ops_addr(&self) -> std::io::Result<SocketAddr> {
        self.ops_listener.local_addr()
    }

    /// Reads the proxy's metrics as a scrape would, for the OTLP export.
    pub fn metrics_reader(
        &self,
    ) -> impl Fn() -> Result<Vec<MetricFamily>, std::fmt::Error> + Send + Sync + 'static {
        let proxy = self.proxy.clone();
        move || {
            server::refresh_scrape_time_metrics(&proxy);
            prometheus_protobuf::encode(proxy.metrics.registry())
        }
    }

    /// Follows the config revision this proxy serves (0 until it has one).
    pub fn applied_revision(&self) -> tokio::sync::watch::Receiver<u64> {
        self.proxy.applied_revision()
    }

    /// Serves until `shutdown`, then stops accepting and drains in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (addr, ops_addr) = (self.addr()?, self.ops_addr()?);
        let listeners = &self.listeners;
        tracing::info!(
            proxy.addr = %addr,
            ops.addr = %ops_addr,
            tls = listeners.tls.is_some(),
            workers = listeners.sockets.len(),
            max_concurrent_requests = listeners.load.limit(),
            "proxy serving"
        );
        let _reloader = listeners.tls.as_ref().map(ServerTls::spawn_reloader);
        let follower = self.follower.map(|client| tokio::spawn(client.run()));
        let quota_sync = tokio::spawn(self.quota_sync.clone().run());
        let refresher = tokio::spawn(credential_refresh::run(
            self.proxy.clone(),
            self.credential_refresh,
        ));
        let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
        let ops = tokio::spawn(server::serve_ops(
            self.ops_listener,
            self.proxy.clone(),
            async {
                let _ = ops_stopped.await;
            },
        ));
        let served =
            server::serve_proxy(self.listeners, self.proxy, shutdown, self.drain_timeout).await;
        if let Some(follower) = follower {
            follower.abort();
        }
        refresher.abort();
        quota_sync.abort();
        self.quota_sync
            .release_all(crate::clock::UnixTime::now())
            .await;
        let _ = stop_ops.send(());
        let _ = ops.await;
        served
    }
}

/// Prepares the control-plane client and serves the cached snapshot, if any, right away.
async fn follow(
    source: ControlPlaneSource,
    proxy: &Arc<Proxy>,
    builder: Arc<ConfigBuilder>,
) -> Result<ControlPlaneClient, StartError> {
    let tls = source.tls.map(|tls| {
        let mut config = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = tls.ca {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((certificate, key)) = tls.identity {
            config = config.identity(tonic::transport::Identity::from_pem(certificate, key));
        }
        config
    });
    let endpoint = ControlPlaneClient::endpoint(&source.url, tls)?;
    let mut authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", source.proxy_token)
            .parse()
            .map_err(|_| StartError::ProxyToken)?;
    authorization.set_sensitive(true);
    let cache = source.cache_dir.as_deref().map(SnapshotCache::in_dir);
    if let Some(cache) = &cache {
        match cache.load().await {
            Ok(Some(snapshot)) => {
                tracing::info!(
                    revision = snapshot.revision,
                    "serving the cached config until the control plane answers"
                );
                proxy.apply(builder.build(snapshot, None).await);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "ignoring the config cache"),
        }
    }
    let reporter = Reporter::new(
        source.report_interval,
        builder.ledger.clone(),
        proxy.metrics.clone(),
    );
    Ok(ControlPlaneClient {
        endpoint,
        authorization,
        node_id: source.node_id,
        proxy: proxy.clone(),
        builder,
        cache,
        reporter: reporter.map(Arc::new),
    })
}
