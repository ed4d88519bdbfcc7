//! The registry of proxies connected to this control-plane replica.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

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

/// Shared between the config-stream server, which records proxies, and the admin API.
#[derive(Clone, Default)]
pub struct ProxyRegistry {
    proxies: Arc<RwLock<BTreeMap<String, ProxyStatus>>>,
}

impl ProxyRegistry {
    /// Connected proxies ordered by node id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.proxies
            .read()
            .map(|proxies| proxies.values().cloned().collect())
            .unwrap_or_default()
    }
}
