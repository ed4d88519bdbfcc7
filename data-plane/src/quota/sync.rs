//! The background task that settles this proxy's counts with the fleet.
//!
//! Every interval it moves counters into new windows, and for each active counter pushes what
//! was spent in place of its lease and takes a new lease, in one round of pipelines. When the
//! store is down it keeps what was spent, shares out what it last knew was left between the
//! proxies it last saw, warns once, and tries again with back-off; what was kept is pushed as
//! soon as the store answers.

use std::sync::Arc;
use std::time::Duration;

use sluice_model::windows::Window;

use super::Quotas;
use super::counter::{Activity, Counter, Synced};
use super::store::{LeaseRequest, Push, SharedCounts, StoreError};
use crate::clock::UnixTime;
use crate::metrics::ProxyMetrics;

/// A counter not used for this long gives its lease back and is not synced any more (the
/// store's load follows active keys); it keeps a sliver for its next call.
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

    pub async fn run(self: Arc<Self>) {
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
        self.round_releasing(now, try_store, false).await
    }

    /// On shutdown, after the drain: every lease goes back with what was spent, so a proxy
    /// replaced in a rolling update leaves no room stranded in the shared counts.
    pub async fn release_all(&self, now: UnixTime) -> Round {
        self.round_releasing(now, true, true).await
    }

    async fn round_releasing(&self, now: UnixTime, try_store: bool, release: bool) -> Round {
        let proxies = self.proxies();
        let sliver = |counter: &Counter| self.quotas.first_allowance(counter.limit());
        let mut pushes = Vec::new();
        // The counters synced in this round, where their push is, and what they spent.
        let mut synced = Vec::new();
        for (id, counter) in self.quotas.live() {
            let rolled = counter.roll(now.secs);
            if rolled.is_some() {
                counter.rest(sliver(&counter), proxies, now.secs);
            }
            if let Some((ended, correction)) = rolled
                && correction != 0
            {
                // Its window is over: what was spent in it late still belongs to it.
                pushes.push(Push {
                    key: id.store_key(ended.start),
                    correction,
                    expire_at: ended.end + KEEP_AFTER_END_SECS,
                    lease: None,
                });
            }
            let activity = match counter.activity(now.secs, IDLE_AFTER_SECS) {
                Activity::Active if release => Activity::Release,
                activity => activity,
            };
            if activity == Activity::Idle {
                // Room comes back as the previous minute slides out: the sliver follows it,
                // from what is known here.
                if counter.window == Window::Minute {
                    counter.rest(sliver(&counter), proxies, now.secs);
                }
                continue;
            }
            let span = counter.span();
            let (spent, correction) = counter.begin_sync();
            let (refused, largest_refused) = counter.take_refused();
            let lease = (activity == Activity::Active).then(|| LeaseRequest {
                limit: counter.limit(),
                // Twice what was spent since the last sync, and never less than a sliver: a
                // proxy ramps up within a few syncs without sitting on room it won't use.
                cap: if self.store.is_shared() {
                    u64::try_from(spent.max(0) + refused)
                        .unwrap_or(0)
                        .saturating_mul(2)
                        .max(sliver(&counter))
                } else {
                    u64::MAX
                },
                want: u64::try_from(largest_refused).unwrap_or(0),
                proxies,
                previous: (counter.window == Window::Minute).then(|| {
                    (
                        id.store_key(span.start - 60),
                        counter.previous_weight_permille(now.secs),
                    )
                }),
            });
            synced.push((counter, activity, pushes.len(), spent));
            pushes.push(Push {
                key: id.store_key(span.start),
                correction,
                expire_at: span.end + KEEP_AFTER_END_SECS,
                lease,
            });
        }
        let exchanged = if try_store {
            self.store.exchange(&self.node, now.millis(), &pushes).await
        } else {
            Err(StoreError::Skipped)
        };
        match exchanged {
            Ok(exchanged) => {
                self.quotas
                    .proxies
                    .store(exchanged.proxies, std::sync::atomic::Ordering::Relaxed);
                for (counter, activity, at, _) in &synced {
                    let pulled = exchanged.pulled[*at];
                    let result = Synced {
                        total: pulled.total,
                        reserved: pulled.lease,
                        previous: pulled.previous,
                    };
                    match activity {
                        Activity::Release => {
                            counter.released(result, sliver(counter), proxies, now.secs)
                        }
                        _ => counter.synced(result),
                    }
                }
                self.store_up
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.metrics.quota_store_up.set(1);
                Round::Synced
            }
            Err(StoreError::Skipped) => {
                self.keep_local(&synced, now);
                Round::Skipped
            }
            Err(error) => {
                if self
                    .store_up
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(%error, proxies, "quota store unreachable; limits hold on local counts, split between the proxies last seen");
                }
                self.metrics.quota_store_up.set(0);
                self.keep_local(&synced, now);
                Round::Failed
            }
        }
    }

    /// The store is out of reach: spending is kept for later, allowances come from what was
    /// known at the last sync.
    fn keep_local(&self, synced: &[(Arc<Counter>, Activity, usize, i64)], now: UnixTime) {
        for (counter, _, _, spent) in synced {
            counter.sync_failed(*spent);
            counter.share_out_locally(self.proxies(), now.secs);
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
