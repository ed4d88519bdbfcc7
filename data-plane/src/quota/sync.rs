//! The background task that settles this proxy's counts with the fleet.
//!
//! Every interval it moves counters into new windows, pushes each active counter's delta and
//! reads the window's total back (one round of pipelines), and hands each counter its new
//! allowance. When the store is down it keeps the deltas, shares out what it last knew between
//! the proxies it last saw, warns once, and tries again with back-off; the kept deltas are
//! pushed as soon as the store answers.

use std::sync::Arc;
use std::time::Duration;

use sluice_model::windows::Window;

use super::Quotas;
use super::store::{Push, SharedCounts};
use crate::clock::UnixTime;
use crate::metrics::ProxyMetrics;

/// A counter not used for this long is not synced any more (the store's load follows active
/// keys); its allowance is cut to a sliver so a stale share cannot be spent all at once.
const IDLE_AFTER_SECS: i64 = 10;
/// Counts outlive their window this long in the store, so the next minute can weigh them.
const KEEP_AFTER_END_SECS: i64 = 120;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct QuotaSync {
    pub quotas: Arc<Quotas>,
    pub store: Arc<dyn SharedCounts>,
    pub node: String,
    pub interval: Duration,
    pub metrics: Arc<ProxyMetrics>,
    /// The store answered last time (a failure after a success warns once).
    store_up: std::sync::atomic::AtomicBool,
}

/// Whether the store answered, for the next round's decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    Synced,
    Failed,
    /// Waiting out a back-off: only local work was done.
    Skipped,
}

impl QuotaSync {
    pub fn new(
        quotas: Arc<Quotas>,
        store: Arc<dyn SharedCounts>,
        node: String,
        interval: Duration,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Self {
            quotas,
            store,
            node,
            interval,
            metrics,
            store_up: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Backoff::default();
        loop {
            ticker.tick().await;
            let now = UnixTime::now();
            let try_store = backoff.may_try(now.millis());
            match self.round(now, try_store).await {
                Round::Synced => {
                    if backoff.failures > 0 {
                        tracing::info!("quota store is back; counts are shared again");
                    }
                    backoff = Backoff::default();
                }
                Round::Failed => backoff.failed(now.millis()),
                Round::Skipped => {}
            }
        }
    }

    /// One sync at `now`; `try_store: false` does only the local part.
    pub async fn round(&self, now: UnixTime, try_store: bool) -> Round {
        let live = self.quotas.live();
        let mut pushes = Vec::new();
        // Where each counter's current-window push is in `pushes`.
        let mut current = Vec::with_capacity(live.len());
        for (id, counter) in &live {
            if let Some((ended, delta)) = counter.roll(now.secs)
                && delta != 0
            {
                // Its window is over: what was counted late still belongs to it.
                pushes.push(Push {
                    key: id.store_key(ended.start),
                    delta,
                    expire_at: ended.end + KEEP_AFTER_END_SECS,
                    read: None,
                });
            }
            if !counter.needs_sync(now.secs, IDLE_AFTER_SECS) {
                counter.idle(self.proxies(), self.store.is_shared(), now.secs);
                continue;
            }
            let span = counter.span();
            let read_previous = counter.window == Window::Minute && counter.previous_unknown();
            current.push((counter, pushes.len()));
            pushes.push(Push {
                key: id.store_key(span.start),
                delta: counter.take_unsynced(),
                expire_at: span.end + KEEP_AFTER_END_SECS,
                read: read_previous.then(|| id.store_key(span.start - 60)),
            });
        }
        if !try_store {
            self.keep_local(&pushes, &current, now);
            return Round::Skipped;
        }
        match self.store.exchange(&self.node, now.millis(), &pushes).await {
            Ok(exchanged) => {
                self.quotas
                    .proxies
                    .store(exchanged.proxies, std::sync::atomic::Ordering::Relaxed);
                for (counter, at) in &current {
                    let pulled = exchanged.pulled[*at];
                    counter.synced(
                        super::counter::Synced {
                            total: pulled.total,
                            previous: pulled.read,
                            proxies: exchanged.proxies,
                        },
                        now.secs,
                    );
                }
                self.store_up
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.metrics.quota_store_up.set(1);
                Round::Synced
            }
            Err(error) => {
                if self
                    .store_up
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(%error, proxies = self.proxies(), "quota store unreachable; limits hold on local counts, split between the proxies last seen");
                }
                self.metrics.quota_store_up.set(0);
                self.keep_local(&pushes, &current, now);
                Round::Failed
            }
        }
    }

    /// The store is out of reach: deltas stay for later, allowances come from local counts.
    fn keep_local(
        &self,
        pushes: &[Push],
        current: &[(&Arc<super::Counter>, usize)],
        now: UnixTime,
    ) {
        for (counter, at) in current {
            counter.restore_unsynced(pushes[*at].delta);
            counter.share_out(self.proxies(), now.secs);
        }
    }

    fn proxies(&self) -> u32 {
        self.quotas
            .proxies
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Retries a failed store after 100 ms, doubling up to [`MAX_BACKOFF`].
#[derive(Default)]
struct Backoff {
    failures: u32,
    next_try_ms: i64,
}

impl Backoff {
    fn may_try(&self, now_ms: i64) -> bool {
        now_ms >= self.next_try_ms
    }

    fn failed(&mut self, now_ms: i64) {
        self.failures += 1;
        let wait = Duration::from_millis(100)
            .saturating_mul(1 << self.failures.min(10))
            .min(MAX_BACKOFF);
        self.next_try_ms = now_ms + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    }
}
