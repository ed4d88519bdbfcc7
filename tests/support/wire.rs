//! A peer that speaks the config stream the way a proxy does, message by message as a test
//! says: a proxy of the current version, one of the version before reports, or a misbehaving
//! one (NACKs).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use sluice_model::proto::config_discovery_client::ConfigDiscoveryClient;
use sluice_model::proto::proxy_message::Kind;
use sluice_model::proto::{Ack, ConfigUpdate, Hello, ProxyMessage};
use tokio::sync::mpsc;

use super::{PROXY_TOKEN, TestControlPlane};

pub struct WirePeer {
    outbox: mpsc::UnboundedSender<ProxyMessage>,
    updates: tonic::Streaming<ConfigUpdate>,
}

struct Outbox(mpsc::UnboundedReceiver<ProxyMessage>);

impl futures_core::Stream for Outbox {
    type Item = ProxyMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProxyMessage>> {
        self.0.poll_recv(cx)
    }
}

impl WirePeer {
    /// Opens the stream with a `Hello` at revision 0 from `node_id`, software `version`.
    pub async fn connect(cp: &TestControlPlane, node_id: &str, version: &str) -> Self {
        let mut client = ConfigDiscoveryClient::connect(format!("http://{}", cp.grpc_addr))
            .await
            .unwrap();
        let (outbox, receiver) = mpsc::unbounded_channel();
        let peer_hello = Kind::Hello(Hello {
            node_id: node_id.into(),
            version: version.into(),
            revision: 0,
        });
        outbox
            .send(ProxyMessage {
                kind: Some(peer_hello),
            })
            .unwrap();
        let mut request = tonic::Request::new(Outbox(receiver));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {PROXY_TOKEN}").parse().unwrap(),
        );
        let updates = client.stream_config(request).await.unwrap().into_inner();
        Self { outbox, updates }
    }

    /// The next update the control plane sends.
    pub async fn next_update(&mut self) -> ConfigUpdate {
        tokio::time::timeout(Duration::from_secs(10), self.updates.message())
            .await
            .expect("an update within 10 s")
            .unwrap()
            .expect("the stream stays open")
    }

    /// Takes the next snapshot and acknowledges it; returns its revision.
    pub async fn ack_next(&mut self) -> u64 {
        let update = self.next_update().await;
        let revision = update.snapshot.unwrap().revision;
        self.send(Kind::Ack(Ack {
            revision,
            nonce: update.nonce,
        }));
        revision
    }

    pub fn send(&self, kind: Kind) {
        self.outbox.send(ProxyMessage { kind: Some(kind) }).unwrap();
    }
}
