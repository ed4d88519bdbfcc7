//! Sluice's data plane: a proxy that serves OpenAI and Azure OpenAI clients and spreads their
//! calls over a pool's backends, with priority tiers, cooldowns, ejection, retries on other
//! backends and streamed responses.

mod attempt;
pub mod backend;
pub mod balance;
mod body;
pub mod call;
mod client_auth;
mod client_error;
mod clock;
pub mod config;
mod headers;
pub mod metrics;
mod models;
pub mod proxy;
mod routing;
pub mod secrets;
mod server;
pub mod upstream;
mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{ConfigBuilder, ConfigFileError};
use crate::metrics::ProxyMetrics;
use crate::proxy::{Proxy, ProxyOptions};
use crate::secrets::{LocalSecrets, SecretResolver};

#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    /// Static config file (YAML, the admin API's model).
    pub config_file: PathBuf,
    pub options: ProxyOptions,
    pub connect_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    #[error(transparent)]
    Tls(#[from] upstream::NoRootCertificates),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A proxy with its config loaded and its listeners bound.
pub struct DataPlane {
    proxy: Arc<Proxy>,
    listener: TcpListener,
    ops_listener: TcpListener,
    drain_timeout: Duration,
}

impl DataPlane {
    pub async fn bind(config: DataPlaneConfig) -> Result<Self, StartError> {
        let metrics = Arc::new(ProxyMetrics::new());
        let resolver: Arc<dyn SecretResolver> = Arc::new(LocalSecrets);
        let builder = ConfigBuilder {
            client: upstream::client(config.connect_timeout)?,
            resolver: resolver.clone(),
            metrics: metrics.clone(),
        };
        let snapshot = config::load_file(&config.config_file, resolver.as_ref()).await?;
        let proxy = Arc::new(Proxy::new(config.options, metrics));
        proxy.apply(builder.build(snapshot, None).await);
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Self {
            proxy,
            listener: bind(config.addr).await?,
            ops_listener: bind(config.ops_addr).await?,
            drain_timeout: config.drain_timeout,
        })
    }

    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn ops_addr(&self) -> std::io::Result<SocketAddr> {
        self.ops_listener.local_addr()
    }

    /// Serves until `shutdown`, then stops accepting and drains in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (addr, ops_addr) = (self.addr()?, self.ops_addr()?);
        tracing::info!(proxy.addr = %addr, ops.addr = %ops_addr, "proxy serving");
        let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
        let ops = tokio::spawn(server::serve_ops(
            self.ops_listener,
            self.proxy.clone(),
            async {
                let _ = ops_stopped.await;
            },
        ));
        server::serve_proxy(self.listener, self.proxy, shutdown, self.drain_timeout).await;
        let _ = stop_ops.send(());
        let _ = ops.await;
        Ok(())
    }
}
