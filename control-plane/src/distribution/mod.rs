//! Config distribution: a gRPC stream per proxy (in the spirit of Envoy's ADS) carrying full
//! snapshots tagged with revision and nonce, answered with ACK/NACK; replicas on one Postgres
//! learn of each other's writes through `LISTEN/NOTIFY`.

mod notify;
mod publisher;
mod service;

use std::sync::Arc;
use std::time::Duration;

use sluice_model::proto::config_discovery_server::ConfigDiscoveryServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use publisher::{Published, Snapshots};
pub use service::ConfigDiscoveryService;

use crate::fleet::ProxyRegistry;
use crate::store::{DatabaseKind, Store};
use crate::tokens::TokenSet;

/// Starts following the store: the publisher and, on Postgres, the change listener.
pub fn follow(store: &Store) -> Snapshots {
    if store.kind() == DatabaseKind::Postgres {
        notify::spawn(store.clone());
    }
    publisher::spawn(store.clone())
}

/// What the config-stream server needs besides its socket.
pub struct GrpcServer {
    pub snapshots: Snapshots,
    pub registry: ProxyRegistry,
    pub tokens: Arc<TokenSet>,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// A proxy that does not take a snapshot within this long is dropped and resyncs later.
    pub send_timeout: Duration,
}

impl GrpcServer {
    /// Serves `ConfigDiscovery` and the standard gRPC health service until `stopping` turns
    /// true; open streams are then ended so proxies reconnect elsewhere.
    pub async fn serve(
        self,
        listener: TcpListener,
        stopping: watch::Receiver<bool>,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ConfigDiscoveryServer<ConfigDiscoveryService>>()
            .await;
        let discovery = ConfigDiscoveryService::new(
            self.snapshots,
            stopping.clone(),
            self.registry,
            self.tokens,
            self.send_timeout,
        );
        let shutdown = async move {
            let mut stopping = stopping;
            service::until_true(&mut stopping).await;
        };
        let mut server = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        server
            .add_service(health_service)
            .add_service(ConfigDiscoveryServer::new(discovery))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }
}
