//! The registry of proxies connected to this control-plane replica.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::rfc3339_now;

/// What the admin API shows about one connected proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProxyStatus {
    pub node_id: String,
    /// Peer address of the config stream.
    pub address: String,
    /// Software version the proxy reported.
    pub version: String,
    /// Last revision the proxy acknowledged as applied.
    pub acked_revision: Option<u64>,
    pub last_nack: Option<Nack>,
    /// RFC 3339.
    pub connected_since: String,
    /// RFC 3339.
    pub last_seen: String,
}

/// A snapshot a proxy rejected, and why; it keeps serving its previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Nack {
    pub revision: u64,
    pub error: String,
    /// RFC 3339.
    pub at: String,
}

struct Entry {
    connection: u64,
    status: ProxyStatus,
}

/// Shared between the config-stream server, which records proxies, and the admin API.
#[derive(Clone, Default)]
pub struct ProxyRegistry {
    proxies: Arc<RwLock<BTreeMap<String, Entry>>>,
    connections: Arc<AtomicU64>,
}

/// A proxy's presence in the registry; dropping it (stream closed) removes the proxy, unless
/// a newer stream from the same node replaced it meanwhile.
pub struct Registration {
    registry: ProxyRegistry,
    node_id: String,
    connection: u64,
}

impl ProxyRegistry {
    /// Connected proxies ordered by node id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.proxies
            .read()
            .map(|proxies| proxies.values().map(|e| e.status.clone()).collect())
            .unwrap_or_default()
    }

    pub fn register(
        &self,
        node_id: &str,
        address: String,
        version: String,
        revision: u64,
    ) -> Registration {
        let connection = self.connections.fetch_add(1, Ordering::Relaxed);
        let now = rfc3339_now();
        let status = ProxyStatus {
            node_id: node_id.to_owned(),
            address,
            version,
            acked_revision: (revision > 0).then_some(revision),
            last_nack: None,
            connected_since: now.clone(),
            last_seen: now,
        };
        if let Ok(mut proxies) = self.proxies.write() {
            proxies.insert(node_id.to_owned(), Entry { connection, status });
        }
        Registration {
            registry: self.clone(),
            node_id: node_id.to_owned(),
            connection,
        }
    }

    fn update(&self, registration: &Registration, change: impl FnOnce(&mut ProxyStatus)) {
        if let Ok(mut proxies) = self.proxies.write()
            && let Some(entry) = proxies.get_mut(&registration.node_id)
            && entry.connection == registration.connection
        {
            change(&mut entry.status);
            entry.status.last_seen = rfc3339_now();
        }
    }
}

impl Registration {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn acked(&self, revision: u64) {
        self.registry
            .update(self, |status| status.acked_revision = Some(revision));
    }

    pub fn nacked(&self, revision: u64, error: String) {
        self.registry.update(self, |status| {
            status.last_nack = Some(Nack {
                revision,
                error,
                at: rfc3339_now(),
            });
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut proxies) = self.registry.proxies.write()
            && proxies
                .get(&self.node_id)
                .is_some_and(|e| e.connection == self.connection)
        {
            proxies.remove(&self.node_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_acks_nacks_and_replaced_streams() {
        let registry = ProxyRegistry::default();
        let first = registry.register("p1", "127.0.0.1:1".into(), "0.1.0".into(), 0);
        first.acked(3);
        first.nacked(4, "bad".into());
        let listed = registry.list();
        assert_eq!(listed[0].acked_revision, Some(3));
        assert_eq!(listed[0].last_nack.as_ref().unwrap().error, "bad");

        // The same node reconnects before the old stream is noticed as closed.
        let second = registry.register("p1", "127.0.0.1:2".into(), "0.1.0".into(), 3);
        drop(first);
        assert_eq!(
            registry.list()[0].address,
            "127.0.0.1:2",
            "the old stream does not remove the new"
        );
        drop(second);
        assert!(registry.list().is_empty());
    }
}
