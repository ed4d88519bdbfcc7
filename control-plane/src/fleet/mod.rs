//! The fleet as one, from any replica: proxies report over their config stream, each
//! replica writes what its own proxies reported into the shared database, and every replica
//! answers from there. See `docs/fleet.md`.

mod flusher;
mod pending;
mod read;
mod registry;
pub mod usage;
mod view;

use std::time::Duration;

pub use flusher::Flusher;
pub use read::{FleetSnapshot, read_fleet, read_pool_status};
pub use registry::{Nack, ProxyRegistry, Registration};
pub use view::{
    BackendFleetState, FleetProxy, MinuteTraffic, PoolStatus, ProxyState, StateCounts, Traffic,
    pool_status, proxy_views,
};

#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// This replica's name in `/api/v1/proxies`.
    pub replica: String,
    /// A proxy not seen for this long is shown as `gone`.
    pub gone_after: Duration,
    /// A proxy not seen for this long is dropped from the fleet table.
    pub forget_after: Duration,
    /// Hourly usage older than this is deleted.
    pub usage_retention: Duration,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            replica: default_replica_name(),
            gone_after: Duration::from_secs(30),
            forget_after: Duration::from_secs(24 * 3600),
            usage_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl FleetSettings {
    /// How often this replica refreshes its proxies' `last_seen`: often enough that a live
    /// proxy is never shown as gone.
    pub fn heartbeat(&self) -> Duration {
        (self.gone_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }
}

/// The host name, which on Kubernetes is the pod's name.
pub fn default_replica_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "control-plane".to_owned())
}
