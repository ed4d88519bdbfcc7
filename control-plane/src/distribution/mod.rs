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

use crate::proxies::ProxyRegistry;
use crate::store::{DatabaseKind, Store};
use crate::tokens::TokenSet;

/// Starts following the store: the publisher and, on Postgres, the change listener.
pub fn follow(store: &Store) -> Snapshots {
    if store.kind() == DatabaseKind::Postgres {
        notify::spawn(store.clone());
    }
    publisher::spawn(store.clone())
}

/// Serves `ConfigDiscovery` and the standard gRPC health service on `listener`.
pub async fn serve(
    listener: TcpListener,
    snapshots: Snapshots,
    registry: ProxyRegistry,
    tokens: Arc<TokenSet>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    stopping: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ConfigDiscoveryServer<ConfigDiscoveryService>>()
        .await;
    let discovery = ConfigDiscoveryService::new(
        snapshots,
        stopping.clone(),
        registry,
        tokens,
        Duration::from_secs(10),
    );
    let shutdown = async move {
        let mut stopping = stopping;
        service::until_true(&mut stopping).await;
    };
    let mut server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
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
