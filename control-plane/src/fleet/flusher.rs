//! Writes what this replica's proxies reported into the fleet tables: a proxy's new state
//! soon after it changed (a few milliseconds, to gather what arrives together), usage and
//! traffic once a second (so the rows of many proxies' reports are added up in memory and
//! written once), every connected proxy on a heartbeat that keeps its `last_seen` fresh, and
//! everything once more when the control plane stops. Also sweeps what retention no longer
//! keeps.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::FleetSettings;
use super::registry::ProxyRegistry;
use crate::store::{Store, unix_millis};

/// Changes that arrive within this long go out in one transaction.
const GATHER: Duration = Duration::from_millis(5);
/// After a failed write, changes wait this long (heartbeats still retry).
const AFTER_FAILURE: Duration = Duration::from_secs(1);
const SWEEP_EVERY: Duration = Duration::from_secs(600);
const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// Per-minute backend traffic is kept this long: pool status looks at the last minutes.
const TRAFFIC_RETENTION_MS: i64 = 2 * 3_600_000;

pub struct Flusher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Flusher {
    pub fn spawn(store: Store, registry: ProxyRegistry, settings: FleetSettings) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(store, registry, settings, stopped));
        Self { stop, task }
    }

    /// Writes what is left (streams that just closed included) and stops.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "fleet flusher panicked");
        }
    }
}

async fn run(
    store: Store,
    registry: ProxyRegistry,
    settings: FleetSettings,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut heartbeat = tokio::time::interval(settings.heartbeat());
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counts = tokio::time::interval(COUNTS_EVERY);
    counts.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hold_until = Instant::now();
    loop {
        tokio::select! {
            () = registry.changed() => {
                tokio::time::sleep_until(hold_until.max(Instant::now() + GATHER)).await;
                if !flush(&store, &registry, false, false).await {
                    hold_until = Instant::now() + AFTER_FAILURE;
                }
            }
            _ = counts.tick() => {
                flush(&store, &registry, false, true).await;
            }
            _ = heartbeat.tick() => {
                flush(&store, &registry, true, true).await;
            }
            _ = sweep.tick() => prune(&store, &settings).await,
            _ = &mut stopped => {
                flush(&store, &registry, false, true).await;
                return;
            }
        }
    }
}

/// `false` when the write failed; the batch is kept for the next one.
async fn flush(store: &Store, registry: &ProxyRegistry, heartbeat: bool, counts: bool) -> bool {
    let batch = registry.take_batch(heartbeat, counts);
    if batch.is_empty() {
        return true;
    }
    match store.record_fleet(&batch).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(error = %error, "cannot write proxy reports; keeping them for the next try");
            registry.restore(batch);
            false
        }
    }
}

async fn prune(store: &Store, settings: &FleetSettings) {
    let now = unix_millis();
    let age = |d: Duration| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match store
        .prune_fleet(
            age(settings.usage_retention),
            now - TRAFFIC_RETENTION_MS,
            age(settings.forget_after),
        )
        .await
    {
        Ok(pruned) => tracing::debug!(
            usage_rows = pruned.usage_rows,
            traffic_rows = pruned.traffic_rows,
            proxies = pruned.proxies,
            "fleet retention sweep"
        ),
        Err(error) => tracing::warn!(error = %error, "fleet retention sweep failed"),
    }
}
