//! Assembles the control plane: config store, admin API, listeners.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use sluice_tls::{Alpn, CertificateError, ServerTls, TlsSettings};
use tokio::net::TcpListener;

use prometheus_client::encoding::prometheus_protobuf::{self, prometheus_data_model::MetricFamily};

use crate::admin::{self, AdminAuth, AdminAuthError, AdminMetrics, AdminState};
use crate::admin_listener::TlsListener;
use crate::console::{self, ConsoleOptions};
use crate::distribution::{self, GrpcServer, Snapshots};
use crate::fleet::{FleetSettings, Flusher, ProxyRegistry};
use crate::quota_usage::UsageReader;
use crate::store::{Store, StoreError, StoreOptions};
use crate::tokens::{TokenSet, TokenTooShort};

#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    pub admin_addr: SocketAddr,
    /// Serve the admin API and the console over TLS (HTTPS) rather than plain HTTP.
    pub admin_tls: Option<TlsSettings>,
    /// gRPC config-distribution address.
    pub grpc_addr: SocketAddr,
    /// Accepted admin bearer tokens; more than one during a rotation.
    pub admin_tokens: Vec<String>,
    /// Tokens proxies must present on the config stream; more than one during a rotation.
    pub proxy_tokens: Vec<String>,
    /// Serve the config stream over TLS, optionally requiring client certificates (mTLS).
    pub grpc_tls: Option<GrpcTls>,
    /// A proxy that does not take a snapshot within this long is dropped (it resyncs later).
    pub proxy_send_timeout: std::time::Duration,
    /// Serve the admin API without authentication (loopback addresses only).
    pub insecure_no_admin_auth: bool,
    pub store: StoreOptions,
    /// The Redis the proxies share client-key limits through, for fleet-wide usage reports;
    /// without one each proxy counts alone and reports give windows only.
    pub redis_url: Option<String>,
    /// Proxy reports: this replica's name, liveness timeouts and usage retention.
    pub fleet: FleetSettings,
    /// The admin console at `/ui/`.
    pub console: ConsoleOptions,
}

/// PEM material for the gRPC server.
#[derive(Clone, Debug)]
pub struct GrpcTls {
    pub certificate: Vec<u8>,
    pub private_key: Vec<u8>,
    /// When set, proxies must present a certificate issued by this CA.
    pub client_ca: Option<Vec<u8>>,
}

impl GrpcTls {
    fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.certificate, &self.private_key);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    AdminAuth(#[from] AdminAuthError),
    #[error(transparent)]
    AdminTls(#[from] CertificateError),
    #[error(
        "no proxy token configured: set SLUICE_PROXY_TOKEN (or --proxy-token) so proxies can authenticate"
    )]
    NoProxyToken,
    #[error(transparent)]
    ProxyToken(#[from] TokenTooShort),
    #[error(
        "--insecure-no-admin-auth is allowed only on a loopback --admin-addr, not {0}; \
         configure SLUICE_ADMIN_TOKEN instead"
    )]
    InsecureOffLoopback(SocketAddr),
    #[error("invalid Redis URL for usage reports")]
    Redis(#[source] crate::quota_usage::UsageError),
    #[error("cannot open the config store")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A control plane with its store open and its listener bound, ready to serve.
pub struct ControlPlane {
    store: Store,
    admin_listener: TcpListener,
    admin_tls: Option<ServerTls>,
    admin_router: Router,
    grpc_listener: TcpListener,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    proxy_tokens: Arc<TokenSet>,
    proxies: ProxyRegistry,
    snapshots: Snapshots,
    proxy_send_timeout: std::time::Duration,
    admin_metrics: Arc<AdminMetrics>,
    fleet: FleetSettings,
}

impl ControlPlane {
    pub async fn bind(config: ControlPlaneConfig) -> Result<Self, StartError> {
        // Refuse bad auth settings before touching the database.
        let auth = if config.insecure_no_admin_auth {
            if !config.admin_addr.ip().is_loopback() {
                return Err(StartError::InsecureOffLoopback(config.admin_addr));
            }
            tracing::warn!("admin API authentication is OFF (--insecure-no-admin-auth)");
            AdminAuth::disabled()
        } else {
            AdminAuth::with_tokens(&config.admin_tokens)?
        };
        let auth = Arc::new(auth);
        let proxy_tokens = TokenSet::new("proxy", &config.proxy_tokens)?;
        if proxy_tokens.is_empty() {
            return Err(StartError::NoProxyToken);
        }
        let admin_tls = config
            .admin_tls
            .as_ref()
            .map(|settings| ServerTls::new(settings, Alpn::Http1))
            .transpose()?;
        let store = Store::connect(&config.database_url, config.store.clone()).await?;
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let admin_listener = bind(config.admin_addr).await?;
        let grpc_listener = bind(config.grpc_addr).await?;
        let proxies = ProxyRegistry::new(&config.fleet.replica);
        let admin_metrics = Arc::new(AdminMetrics::new());
        let usage = config
            .redis_url
            .as_deref()
            .map(UsageReader::new)
            .transpose()
            .map_err(StartError::Redis)?
            .map(Arc::new);
        let state = AdminState {
            store: store.clone(),
            proxies: proxies.clone(),
            metrics: admin_metrics.clone(),
            usage,
            fleet: config.fleet.clone(),
        };
        Ok(Self {
            snapshots: distribution::follow(&store),
            store,
            admin_listener,
            admin_router: admin::router(state.clone(), auth.clone()).merge(console::router(
                state,
                auth,
                config.console.clone(),
                admin_tls.is_some(),
            )),
            admin_tls,
            grpc_listener,
            grpc_tls: config.grpc_tls.as_ref().map(GrpcTls::server_config),
            proxy_tokens: Arc::new(proxy_tokens),
            proxies,
            proxy_send_timeout: config.proxy_send_timeout,
            admin_metrics,
            fleet: config.fleet,
        })
    }

    /// The bound admin address (useful with port 0).
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> io::Result<SocketAddr> {
        self.grpc_listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the control plane's metrics as a scrape would, for the OTLP export.
    pub fn metrics_reader(
        &self,
    ) -> impl Fn() -> Result<Vec<MetricFamily>, std::fmt::Error> + Send + Sync + 'static {
        let (metrics, store, proxies) = (
            self.admin_metrics.clone(),
            self.store.clone(),
            self.proxies.clone(),
        );
        move || {
            metrics.refresh(store.last_known_revision(), proxies.connected());
            prometheus_protobuf::encode(metrics.registry())
        }
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish; open config
    /// streams are closed and proxies keep serving their last config.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        tracing::info!(
            admin.addr = %self.admin_addr()?,
            admin.tls = self.admin_tls.is_some(),
            grpc.addr = %self.grpc_addr()?,
            database = ?self.store.kind(),
            revision = self.store.last_known_revision(),
            "control plane serving"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let flusher = Flusher::spawn(self.store.clone(), self.proxies.clone(), self.fleet);
        let database_health = tokio::spawn(crate::database_health::watch(
            self.store.clone(),
            self.admin_metrics.database_up(),
        ));
        let grpc_server = GrpcServer {
            snapshots: self.snapshots,
            registry: self.proxies,
            tokens: self.proxy_tokens,
            tls: self.grpc_tls,
            send_timeout: self.proxy_send_timeout,
        };
        let grpc = tokio::spawn(grpc_server.serve(self.grpc_listener, stopped));
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let served = match self.admin_tls {
            None => {
                axum::serve(self.admin_listener, self.admin_router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(tls) => {
                let _reloader = tls.spawn_reloader();
                let listener = TlsListener {
                    tcp: self.admin_listener,
                    tls,
                };
                axum::serve(listener, self.admin_router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        match grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "config distribution server failed"),
            Err(error) => tracing::error!(%error, "config distribution server panicked"),
        }
        // After the streams closed, so the fleet table shows their proxies as gone at once.
        flusher.finish().await;
        database_health.abort();
        served
    }
}
