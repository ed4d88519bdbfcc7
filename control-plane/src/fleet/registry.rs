//! The proxies connected to this control-plane replica, and what they reported since the
//! last flush. Sessions record into it without waiting on the database; the flusher turns
//! it into batches for the fleet tables.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use sluice_model::proto;
use tokio::sync::Notify;
use utoipa::ToSchema;

use super::pending::Pending;
use crate::admin::rfc3339;
use crate::store::{
    BackendSeen, BackendState, Disconnect, FleetBatch, NackRecord, ProxyRecord, unix_millis,
};

/// A snapshot a proxy rejected, and why; it keeps serving its previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Nack {
    pub revision: u64,
    pub error: String,
    /// RFC 3339.
    pub at: String,
}

impl From<&NackRecord> for Nack {
    fn from(nack: &NackRecord) -> Self {
        Self {
            revision: nack.revision,
            error: nack.error.clone(),
            at: rfc3339(nack.at_unix_ms),
        }
    }
}

struct Entry {
    connection: u64,
    record: ProxyRecord,
    /// Changed since the last flush.
    dirty: bool,
}

#[derive(Default)]
struct Tracked {
    proxies: BTreeMap<String, Entry>,
    disconnects: Vec<Disconnect>,
    pending: Pending,
}

struct Inner {
    replica: String,
    tracked: Mutex<Tracked>,
    /// Wakes the flusher when something worth writing soon happened.
    changed: Notify,
    connections: AtomicU64,
}

/// Shared between the config-stream server, which records proxies, the flusher and the
/// admin API.
#[derive(Clone)]
pub struct ProxyRegistry {
    inner: Arc<Inner>,
}

impl Default for ProxyRegistry {
    fn default() -> Self {
        Self::new("control-plane")
    }
}

/// A proxy's presence in the registry; dropping it (stream closed) removes the proxy, unless
/// a newer stream from the same node replaced it meanwhile.
pub struct Registration {
    registry: ProxyRegistry,
    node_id: String,
    connection: u64,
}

impl ProxyRegistry {
    /// `replica` names this control plane in the fleet table.
    pub fn new(replica: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                replica: replica.to_owned(),
                tracked: Mutex::default(),
                changed: Notify::new(),
                connections: AtomicU64::new(0),
            }),
        }
    }

    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    fn tracked(&self) -> MutexGuard<'_, Tracked> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent data.
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many proxies have a config stream open to this replica.
    pub fn connected(&self) -> usize {
        self.tracked().proxies.len()
    }

    /// This replica's proxies as the next heartbeat would write them, by node id.
    #[cfg(test)]
    fn records(&self) -> Vec<ProxyRecord> {
        self.tracked()
            .proxies
            .values()
            .map(|entry| entry.record.clone())
            .collect()
    }

    pub fn register(
        &self,
        node_id: &str,
        address: String,
        version: String,
        revision: u64,
    ) -> Registration {
        let connection = self.inner.connections.fetch_add(1, Ordering::Relaxed);
        let now = unix_millis();
        let record = ProxyRecord {
            node_id: node_id.to_owned(),
            replica: self.inner.replica.clone(),
            connection: format!("{}/{now}/{connection}", self.inner.replica),
            address,
            version,
            connected: true,
            connected_since_unix_ms: now,
            last_seen_unix_ms: now,
            acked_revision: (revision > 0).then_some(revision),
            last_nack: None,
            served_revision: (revision > 0).then_some(revision),
            last_report_unix_ms: None,
            backends: Vec::new(),
        };
        self.tracked().proxies.insert(
            node_id.to_owned(),
            Entry {
                connection,
                record,
                dirty: true,
            },
        );
        self.inner.changed.notify_one();
        Registration {
            registry: self.clone(),
            node_id: node_id.to_owned(),
            connection,
        }
    }

    fn update(&self, registration: &Registration, change: impl FnOnce(&mut ProxyRecord, i64)) {
        let now = unix_millis();
        let mut tracked = self.tracked();
        if let Some(entry) = tracked.proxies.get_mut(&registration.node_id)
            && entry.connection == registration.connection
        {
            change(&mut entry.record, now);
            entry.record.last_seen_unix_ms = now;
            entry.dirty = true;
            drop(tracked);
            self.inner.changed.notify_one();
        }
    }

    /// Resolves when something was recorded since the last call.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// What to write now: changed proxies (every connected one when `heartbeat`, which
    /// refreshes their `last_seen`), ended streams, and, with `counts`, the usage and
    /// traffic added up.
    pub fn take_batch(&self, heartbeat: bool, counts: bool) -> FleetBatch {
        let now = unix_millis();
        let mut tracked = self.tracked();
        let mut proxies = Vec::new();
        for entry in tracked.proxies.values_mut() {
            if heartbeat {
                entry.record.last_seen_unix_ms = now;
            }
            if entry.dirty || heartbeat {
                entry.dirty = false;
                proxies.push(entry.record.clone());
            }
        }
        let disconnects = std::mem::take(&mut tracked.disconnects);
        let (usage, traffic) = if counts {
            tracked.pending.drain()
        } else {
            Default::default()
        };
        FleetBatch {
            proxies,
            disconnects,
            usage,
            traffic,
        }
    }

    /// Takes back a batch whose write failed: its counts and ended streams go out with the
    /// next one; its proxies are rewritten from their newest state.
    pub fn restore(&self, batch: FleetBatch) {
        let mut tracked = self.tracked();
        for proxy in &batch.proxies {
            if let Some(entry) = tracked.proxies.get_mut(&proxy.node_id) {
                entry.dirty = true;
            }
        }
        let mut disconnects = batch.disconnects;
        disconnects.append(&mut tracked.disconnects);
        tracked.disconnects = disconnects;
        tracked
            .pending
            .restore(batch.usage, batch.traffic, unix_millis());
    }
}

impl Registration {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn acked(&self, revision: u64) {
        self.registry
            .update(self, |record, _| record.acked_revision = Some(revision));
    }

    pub fn nacked(&self, revision: u64, error: String) {
        self.registry.update(self, |record, now| {
            record.last_nack = Some(NackRecord {
                revision,
                error,
                at_unix_ms: now,
            });
        });
    }

    pub fn reported(&self, report: &proto::Report) {
        self.registry.update(self, |record, now| {
            record.served_revision = Some(report.revision);
            record.last_report_unix_ms = Some(now);
            record.backends = report.backends.iter().filter_map(backend_seen).collect();
        });
        let now = unix_millis();
        self.registry.tracked().pending.add_report(report, now);
    }
}

/// A reported backend; `None` for a state this control plane does not know (a newer proxy).
fn backend_seen(backend: &proto::BackendReport) -> Option<BackendSeen> {
    let state = match proto::BackendState::try_from(backend.state).ok()? {
        proto::BackendState::Available => BackendState::Available,
        proto::BackendState::Cooling => BackendState::Cooling,
        proto::BackendState::Ejected => BackendState::Ejected,
        proto::BackendState::NoCredential => BackendState::NoCredential,
        proto::BackendState::Disabled => BackendState::Disabled,
        proto::BackendState::Unspecified => return None,
    };
    Some(BackendSeen {
        pool: backend.pool.clone(),
        backend: backend.backend.clone(),
        state,
        until_unix_ms: (backend.until_unix_ms > 0)
            .then(|| i64::try_from(backend.until_unix_ms).unwrap_or(i64::MAX)),
    })
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut tracked = self.registry.tracked();
        let Some(entry) = tracked
            .proxies
            .get(&self.node_id)
            .filter(|e| e.connection == self.connection)
        else {
            return;
        };
        let gone = Disconnect {
            node_id: self.node_id.clone(),
            connection: entry.record.connection.clone(),
            at_unix_ms: unix_millis(),
        };
        tracked.proxies.remove(&self.node_id);
        tracked.disconnects.push(gone);
        drop(tracked);
        self.registry.inner.changed.notify_one();
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
        let listed = registry.records();
        assert_eq!(listed[0].acked_revision, Some(3));
        assert_eq!(listed[0].last_nack.as_ref().unwrap().error, "bad");

        // The same node reconnects before the old stream is noticed as closed.
        let second = registry.register("p1", "127.0.0.1:2".into(), "0.1.0".into(), 3);
        drop(first);
        assert_eq!(
            registry.records()[0].address,
            "127.0.0.1:2",
            "the old stream does not remove the new"
        );
        assert!(registry.take_batch(false, true).disconnects.is_empty());
        drop(second);
        assert_eq!(registry.connected(), 0);
        assert_eq!(registry.take_batch(false, true).disconnects.len(), 1);
    }

    #[test]
    fn batches_carry_changed_proxies_and_heartbeats_carry_all() {
        let registry = ProxyRegistry::new("cp-a");
        let p1 = registry.register("p1", "a".into(), "v".into(), 0);
        let _p2 = registry.register("p2", "b".into(), "v".into(), 0);
        assert_eq!(registry.take_batch(false, true).proxies.len(), 2);
        assert!(registry.take_batch(false, true).is_empty());
        p1.reported(&proto::Report {
            revision: 7,
            backends: vec![
                proto::BackendReport {
                    pool: "gpt-4o".into(),
                    backend: "eastus".into(),
                    state: proto::BackendState::Cooling.into(),
                    until_unix_ms: 42,
                    requests: 3,
                    errors: 1,
                },
                proto::BackendReport {
                    state: 99,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let batch = registry.take_batch(false, false);
        assert!(batch.traffic.is_empty(), "counts wait for their own flush");
        assert_eq!(registry.take_batch(false, true).traffic.len(), 1);
        assert_eq!(batch.proxies.len(), 1);
        let reported = &batch.proxies[0];
        assert_eq!(reported.replica, "cp-a");
        assert_eq!(reported.served_revision, Some(7));
        assert_eq!(
            reported.backends,
            vec![BackendSeen {
                pool: "gpt-4o".into(),
                backend: "eastus".into(),
                state: BackendState::Cooling,
                until_unix_ms: Some(42),
            }],
            "a state this control plane does not know is left out"
        );
        assert_eq!(registry.take_batch(true, true).proxies.len(), 2);
    }

    #[test]
    fn a_failed_batch_goes_out_again() {
        let registry = ProxyRegistry::new("cp-a");
        let p1 = registry.register("p1", "a".into(), "v".into(), 0);
        drop(registry.take_batch(false, true));
        p1.reported(&proto::Report {
            usage: vec![proto::UsageReport {
                client_key: "k".into(),
                pool: "p".into(),
                requests: 2,
                ..Default::default()
            }],
            ..Default::default()
        });
        let failed = registry.take_batch(false, true);
        assert_eq!(failed.usage.len(), 1);
        registry.restore(failed);
        drop(p1);
        let retried = registry.take_batch(false, true);
        assert_eq!(retried.usage[0].counts.requests, 2);
        assert_eq!(retried.disconnects.len(), 1);
        assert!(
            retried.proxies.is_empty(),
            "a proxy that left is not rewritten"
        );
    }
}
