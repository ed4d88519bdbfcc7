//! Following the control plane: one long-lived gRPC stream, a snapshot applied atomically per
//! update and acknowledged (or rejected with a NACK while the previous config keeps serving),
//! the last applied snapshot persisted for restarts during an outage, and jittered
//! exponential reconnects that resume from the applied revision.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use sluice_model::Snapshot;
use sluice_model::proto::config_discovery_client::ConfigDiscoveryClient;
use sluice_model::proto::proxy_message::Kind;
use sluice_model::proto::{Ack, ConfigUpdate, Hello, Nack, ProxyMessage};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::cache::{CacheWriter, SnapshotCache};
use crate::config::ConfigBuilder;
use crate::metrics::NackReason;
use crate::proxy::Proxy;
use crate::report::Reporter;

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

pub struct ControlPlaneClient {
    pub endpoint: Endpoint,
    /// `Bearer <proxy token>`, marked sensitive so it is never logged.
    pub authorization: MetadataValue<tonic::metadata::Ascii>,
    pub node_id: String,
    pub proxy: Arc<Proxy>,
    pub builder: Arc<ConfigBuilder>,
    pub cache: Option<SnapshotCache>,
    /// Reports on each stream; `None` when they are off.
    pub reporter: Option<Arc<Reporter>>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream refused or broken: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
}

impl ControlPlaneClient {
    pub fn endpoint(
        url: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        match tls {
            Some(tls) => endpoint.tls_config(tls),
            None => Ok(endpoint),
        }
    }

    /// Follows the control plane until the process ends.
    pub async fn run(self) {
        let mut backoff = RECONNECT_MIN;
        let cache = self.cache.clone().map(CacheWriter::spawn);
        loop {
            let Err(error) = self.session(&mut backoff, cache.as_ref()).await;
            self.proxy.metrics.control_plane_connected.set(0);
            let delay = jittered(backoff);
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "config stream ended; serving the last config");
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    async fn session(
        &self,
        backoff: &mut Duration,
        cache: Option<&CacheWriter>,
    ) -> Result<Infallible, SessionError> {
        let channel: Channel = self.endpoint.connect().await?;
        let mut client = ConfigDiscoveryClient::new(channel);
        let (outbound, rx) = mpsc::channel(8);
        let revision = self.proxy.current().map_or(0, |c| c.revision);
        let hello = Hello {
            node_id: self.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision,
        };
        let _ = outbound.send(message(Kind::Hello(hello))).await;
        let mut request = tonic::Request::new(Outbound(rx));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let mut updates = client.stream_config(request).await?.into_inner();
        tracing::info!(node.id = %self.node_id, revision, "connected to the control plane");
        self.proxy.metrics.control_plane_connected.set(1);
        *backoff = RECONNECT_MIN;
        // Ends with the session, so the next stream's reports start again from sequence 1.
        let _reporting = self.reporter.clone().map(|reporter| {
            let (proxy, outbound) = (self.proxy.clone(), outbound.clone());
            AbortOnDrop(tokio::spawn(
                async move { reporter.run(proxy, outbound).await },
            ))
        });
        while let Some(update) = updates.message().await? {
            let reply = self.apply(update, cache).await;
            if outbound.send(message(reply)).await.is_err() {
                break;
            }
        }
        Err(SessionError::Closed)
    }

    /// Applies one update; the answer is an ACK, or a NACK that leaves the old config serving.
    /// The applied snapshot is persisted afterwards, off the path to serving it.
    async fn apply(&self, update: ConfigUpdate, cache: Option<&CacheWriter>) -> Kind {
        let nonce = update.nonce;
        let Some(wire) = update.snapshot else {
            self.proxy.metrics.nack(NackReason::no_snapshot);
            return Kind::Nack(Nack {
                revision: 0,
                nonce,
                error: "update carries no snapshot".into(),
            });
        };
        let revision = wire.revision;
        let offered = i64::try_from(revision).unwrap_or(i64::MAX);
        let metrics = &self.proxy.metrics;
        metrics
            .revision_offered
            .set(metrics.revision_offered.get().max(offered));
        let snapshot = match Snapshot::try_from(wire) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                metrics.nack(NackReason::invalid_snapshot);
                tracing::warn!(revision, %error, "rejecting config snapshot; keeping the previous one");
                return Kind::Nack(Nack {
                    revision,
                    nonce,
                    error: error.to_string(),
                });
            }
        };
        let persisted = cache.map(|_| snapshot.clone());
        let previous = self.proxy.current();
        let runtime = self.builder.build(snapshot, previous.as_deref()).await;
        self.proxy.apply(runtime);
        if let (Some(cache), Some(snapshot)) = (cache, persisted) {
            cache.write(snapshot);
        }
        Kind::Ack(Ack { revision, nonce })
    }
}

fn message(kind: Kind) -> ProxyMessage {
    ProxyMessage { kind: Some(kind) }
}

/// "Full jitter": a random wait up to the backoff, so proxies restarted together spread out.
fn jittered(backoff: Duration) -> Duration {
    let millis = u64::try_from(backoff.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

/// Stops a session's task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The proxy's half of the stream.
struct Outbound(mpsc::Receiver<ProxyMessage>);

impl Stream for Outbound {
    type Item = ProxyMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_model::{Snapshot, proto};

    use super::*;
    use crate::metrics::ProxyMetrics;
    use crate::proxy::ProxyOptions;

    fn client(cache_dir: &std::path::Path) -> ControlPlaneClient {
        let metrics = Arc::new(ProxyMetrics::new());
        ControlPlaneClient {
            endpoint: ControlPlaneClient::endpoint("http://127.0.0.1:9", None).unwrap(),
            authorization: "Bearer test".parse().unwrap(),
            node_id: "unit".into(),
            proxy: Arc::new(Proxy::new(
                ProxyOptions {
                    allow_anonymous: false,
                    max_body_bytes: 1024,
                },
                metrics.clone(),
            )),
            builder: Arc::new(ConfigBuilder::for_tests(metrics)),
            cache: Some(SnapshotCache::in_dir(cache_dir)),
            reporter: None,
        }
    }

    fn snapshot(revision: u64) -> proto::Snapshot {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "revision": revision,
            "pools": [{"name": "p", "backends": [{"name": "a", "url": "http://127.0.0.1:9", "kind": "openai", "auth": {"type": "none"}}]}]
        }))
        .unwrap();
        proto::Snapshot::from(&snapshot)
    }

    /// The cached revision once the background write has landed.
    async fn cached_revision(client: &ControlPlaneClient) -> u64 {
        let cache = client.cache.as_ref().unwrap();
        for _ in 0..500 {
            if let Some(snapshot) = cache.load().await.unwrap() {
                return snapshot.revision;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the snapshot was never persisted");
    }

    /// A valid snapshot is applied, ACKed and cached; an invalid one is NACKed with the
    /// offending field while the previous config keeps serving.
    #[tokio::test]
    async fn acks_valid_snapshots_and_nacks_invalid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let client = client(dir.path());
        let writer = CacheWriter::spawn(client.cache.clone().unwrap());
        let cache = Some(&writer);
        let ack = client
            .apply(
                ConfigUpdate {
                    nonce: "n1".into(),
                    snapshot: Some(snapshot(3)),
                },
                cache,
            )
            .await;
        assert_eq!(
            ack,
            Kind::Ack(Ack {
                revision: 3,
                nonce: "n1".into()
            })
        );
        assert_eq!(client.proxy.current().unwrap().revision, 3);
        assert_eq!(cached_revision(&client).await, 3);

        let mut bad = snapshot(4);
        bad.pools[0].backends[0].url = "ftp://nope".into();
        let Kind::Nack(nack) = client
            .apply(
                ConfigUpdate {
                    nonce: "n2".into(),
                    snapshot: Some(bad),
                },
                cache,
            )
            .await
        else {
            panic!("an invalid snapshot must be NACKed");
        };
        assert_eq!((nack.revision, nack.nonce.as_str()), (4, "n2"));
        assert!(
            nack.error.contains("pools[0].backends[0].url"),
            "{}",
            nack.error
        );
        assert_eq!(
            client.proxy.current().unwrap().revision,
            3,
            "the previous config keeps serving"
        );
        assert_eq!(cached_revision(&client).await, 3);

        let empty = client
            .apply(
                ConfigUpdate {
                    nonce: "n3".into(),
                    snapshot: None,
                },
                cache,
            )
            .await;
        assert!(matches!(empty, Kind::Nack(_)));
    }

    #[test]
    fn jitter_stays_within_half_to_full_backoff() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(4));
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_secs(4),
                "{wait:?}"
            );
        }
    }
}
