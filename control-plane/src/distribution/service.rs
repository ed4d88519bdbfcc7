//! The `ConfigDiscovery` gRPC service: one session per proxy stream. A session sends the
//! latest snapshot whenever the revision moves and records the proxy's ACKs and NACKs.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use sluice_model::proto::config_discovery_server::ConfigDiscovery;
use sluice_model::proto::proxy_message::Kind;
use sluice_model::proto::{ConfigUpdate, Hello, ProxyMessage};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::publisher::Snapshots;
use crate::fleet::{ProxyRegistry, Registration};
use crate::tokens::TokenSet;

/// How long a proxy may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_NODE_ID_LEN: usize = 128;

pub struct ConfigDiscoveryService {
    snapshots: Snapshots,
    /// Becomes `true` when the control plane shuts down: sessions end so the server can stop.
    stopping: watch::Receiver<bool>,
    registry: ProxyRegistry,
    tokens: Arc<TokenSet>,
    /// A proxy that does not take a snapshot within this long is dropped; it reconnects and
    /// resyncs from its revision.
    send_timeout: Duration,
    nonces: Arc<AtomicU64>,
}

impl ConfigDiscoveryService {
    pub fn new(
        snapshots: Snapshots,
        stopping: watch::Receiver<bool>,
        registry: ProxyRegistry,
        tokens: Arc<TokenSet>,
        send_timeout: Duration,
    ) -> Self {
        Self {
            snapshots,
            stopping,
            registry,
            tokens,
            send_timeout,
            nonces: Arc::default(),
        }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        match presented.and_then(|token| self.tokens.verify(token)) {
            Some(_) => Ok(()),
            None => Err(Status::unauthenticated(
                "a valid proxy token is required (authorization: Bearer <SLUICE_PROXY_TOKEN>)",
            )),
        }
    }
}

pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for ConfigDiscoveryService {
    type StreamConfigStream = UpdateStream;

    async fn stream_config(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.authenticate(&request)?;
        let address = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(ProxyMessage {
                kind: Some(Kind::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => {
                return Err(Status::invalid_argument(format!(
                    "unreadable first message: {}",
                    status.message()
                )));
            }
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        validate(&hello)?;
        tracing::info!(node.id = %hello.node_id, proxy.address = %address, proxy.version = %hello.version, revision = hello.revision, "proxy connected");
        let registration = self.registry.register(
            &hello.node_id,
            address,
            hello.version.clone(),
            hello.revision,
        );
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(
            Session {
                registration,
                snapshots: self.snapshots.clone(),
                stopping: self.stopping.clone(),
                // A proxy without config (revision 0) gets a snapshot even of an empty store.
                sent: (hello.revision > 0).then_some(hello.revision),
                tx,
                send_timeout: self.send_timeout,
                nonces: self.nonces.clone(),
            }
            .run(inbound),
        );
        Ok(Response::new(Box::pin(Updates(rx))))
    }
}

fn validate(hello: &Hello) -> Result<(), Status> {
    let id = &hello.node_id;
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN || id.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "node_id must be 1 to 128 printable characters",
        ));
    }
    Ok(())
}

struct Session {
    registration: Registration,
    snapshots: Snapshots,
    stopping: watch::Receiver<bool>,
    /// Revision the proxy has or was last sent.
    sent: Option<u64>,
    tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
    send_timeout: Duration,
    nonces: Arc<AtomicU64>,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<ProxyMessage>) {
        self.snapshots.mark_changed();
        let mut stopping = self.stopping.clone();
        loop {
            tokio::select! {
                changed = self.snapshots.changed() => {
                    if changed.is_err() || !self.send_latest().await {
                        break;
                    }
                }
                () = until_true(&mut stopping) => {
                    let _ = self.tx.try_send(Err(Status::unavailable("control plane shutting down; reconnect")));
                    break;
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(node.id = %self.node_id(), error = %status.message(), "proxy stream failed");
                        break;
                    }
                },
            }
        }
        tracing::info!(node.id = %self.node_id(), "proxy disconnected");
    }

    fn node_id(&self) -> &str {
        self.registration.node_id()
    }

    /// Sends the newest snapshot unless the proxy has it; `false` ends the session.
    async fn send_latest(&mut self) -> bool {
        let Some(published) = self.snapshots.borrow_and_update().clone() else {
            return true;
        };
        if self.sent == Some(published.revision) {
            return true;
        }
        let nonce = format!(
            "{}-{}",
            published.revision,
            self.nonces.fetch_add(1, Ordering::Relaxed)
        );
        let update = ConfigUpdate {
            nonce,
            snapshot: Some(published.snapshot.clone()),
        };
        match tokio::time::timeout(self.send_timeout, self.tx.send(Ok(update))).await {
            Ok(Ok(())) => {
                self.sent = Some(published.revision);
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(node.id = %self.node_id(), "proxy is not taking snapshots; dropping it so it resyncs");
                let _ = self.tx.try_send(Err(Status::resource_exhausted(
                    "too slow taking snapshots; reconnect",
                )));
                false
            }
        }
    }

    fn handle(&mut self, message: ProxyMessage) {
        match message.kind {
            Some(Kind::Ack(ack)) => {
                tracing::debug!(node.id = %self.node_id(), revision = ack.revision, "proxy applied config");
                self.registration.acked(ack.revision);
            }
            Some(Kind::Nack(nack)) => {
                tracing::warn!(node.id = %self.node_id(), revision = nack.revision, error = %nack.error, "proxy rejected config");
                self.registration.nacked(nack.revision, nack.error);
            }
            Some(Kind::Report(report)) => {
                tracing::trace!(node.id = %self.node_id(), sequence = report.sequence, "proxy report");
                self.registration.reported(&report);
            }
            Some(Kind::Hello(_)) | None => {
                tracing::debug!(node.id = %self.node_id(), "ignoring an unexpected message");
            }
        }
    }
}

pub(super) async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across the caller's await.
    let _ = flag.wait_for(|set| *set).await;
}

/// The outbound half of a session as a `Stream`.
struct Updates(mpsc::Receiver<Result<ConfigUpdate, Status>>);

impl Stream for Updates {
    type Item = Result<ConfigUpdate, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
