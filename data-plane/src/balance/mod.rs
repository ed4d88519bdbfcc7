//! A pool at runtime: its backends grouped into priority tiers, and the strategy that picks
//! one per attempt. Selection is lock-free (an atomic cursor per tier, or two random draws
//! compared by tower's PeakEWMA load) and skips unavailable and already tried backends.

mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_model::{Name, Price, RetryPolicy, Strategy};
use tower::retry::budget::TpsBudget;

use crate::backend::{BackendEndpoint, State};
use crate::clock::Nanos;
use crate::metrics::PoolClients;
use crate::per_worker::PerWorker;
use crate::report::{UsageCell, UsageCells};

/// Why no backend could be picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBackend {
    /// Every candidate is cooling down or ejected; the first is back after this long.
    AllWaiting(Duration),
    /// Nothing left to try that could ever answer (disabled, no credential, all tried, empty).
    NoneUsable,
}

struct Tier {
    /// Indexes into [`PoolRuntime::backends`].
    members: Vec<usize>,
    cursor: AtomicUsize,
    /// Smooth weighted round-robin order over `members` (weighted strategy only).
    schedule: Vec<usize>,
}

pub struct PoolRuntime {
    pub name: Name,
    pub strategy: Strategy,
    pub retry: RetryPolicy,
    /// What the pool's tokens cost, for client keys with a budget.
    pub price: Option<Price>,
    pub backends: Vec<Arc<BackendEndpoint>>,
    /// Each client key's traffic on this pool, by [`crate::client_auth::Caller::slot`].
    usage: Box<[UsageCells]>,
    /// Each client key's calls to this pool for the client metrics, by slot like `usage`.
    pub clients: PoolClients,
    /// Bounds retries to a share of recent traffic so an outage doesn't multiply load. One
    /// per worker: every call deposits, and tower's budget takes a mutex to do it.
    pub budget: PerWorker<TpsBudget>,
    tiers: Vec<Tier>,
}

impl PoolRuntime {
    pub fn new(
        name: Name,
        strategy: Strategy,
        retry: RetryPolicy,
        price: Option<Price>,
        backends: Vec<Arc<BackendEndpoint>>,
        usage: Box<[UsageCells]>,
        clients: PoolClients,
    ) -> Self {
        let mut priorities: Vec<u32> = backends.iter().map(|b| b.spec.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let tiers = priorities
            .into_iter()
            .map(|priority| {
                let members: Vec<usize> = (0..backends.len())
                    .filter(|&i| backends[i].spec.priority == priority)
                    .collect();
                let weights: Vec<u32> = members
                    .iter()
                    .map(|&i| backends[i].spec.weight.get())
                    .collect();
                let schedule = match strategy {
                    Strategy::Weighted => schedule::smooth_weighted(&weights)
                        .into_iter()
                        .map(|slot| members[slot])
                        .collect(),
                    _ => Vec::new(),
                };
                Tier {
                    members,
                    cursor: AtomicUsize::new(0),
                    schedule,
                }
            })
            .collect();
        Self {
            name,
            strategy,
            retry,
            price,
            backends,
            usage,
            clients,
            // 10 s window, 10 retries per second always allowed (shared out among the
            // workers), then 20% of requests.
            budget: PerWorker::new(|workers| {
                TpsBudget::new(Duration::from_secs(10), 10u32.div_ceil(workers as u32), 0.2)
            }),
            tiers,
        }
    }

    /// The usage cell of the caller in `slot` (see [`crate::client_auth::ClientKeys`]).
    pub fn usage(&self, slot: usize) -> Option<&Arc<UsageCell>> {
        self.usage.get(slot).map(UsageCells::current)
    }

    /// Picks a backend for the next attempt: the best tier with an available backend not
    /// in `tried`, then the pool's strategy within it.
    pub fn select(&self, tried: &[usize], now: Nanos) -> Result<usize, NoBackend> {
        let usable =
            |i: usize| !tried.contains(&i) && self.backends[i].state(now) == State::Available;
        for tier in &self.tiers {
            let picked = match self.strategy {
                Strategy::RoundRobin => rotate(&tier.members, &tier.cursor, usable),
                Strategy::Weighted => rotate(&tier.schedule, &tier.cursor, usable),
                Strategy::LeastLatency => self.least_loaded(&tier.members, usable),
            };
            if let Some(index) = picked {
                return Ok(index);
            }
        }
        Err(self.why_none(tried, now))
    }

    /// Whether another attempt could find a backend (for the retry decision).
    pub fn has_candidate(&self, tried: &[usize], now: Nanos) -> bool {
        (0..self.backends.len())
            .any(|i| !tried.contains(&i) && self.backends[i].state(now) == State::Available)
    }

    fn why_none(&self, tried: &[usize], now: Nanos) -> NoBackend {
        (0..self.backends.len())
            .filter(|i| !tried.contains(i))
            .filter_map(|i| match self.backends[i].state(now) {
                State::Cooling(wait) | State::Ejected(wait) => Some(wait),
                _ => None,
            })
            .min()
            .map_or(NoBackend::NoneUsable, NoBackend::AllWaiting)
    }

    /// Power of two choices: two random usable backends, the one with less PeakEWMA load.
    fn least_loaded(&self, members: &[usize], usable: impl Fn(usize) -> bool) -> Option<usize> {
        let count = members.iter().filter(|&&i| usable(i)).count();
        let nth = |n: usize| members.iter().copied().filter(|&i| usable(i)).nth(n);
        match count {
            0 => None,
            1 => nth(0),
            _ => {
                let a = crate::random::below(count);
                let b = (a + 1 + crate::random::below(count - 1)) % count;
                let (a, b) = (nth(a)?, nth(b)?);
                Some(if self.backends[b].load() < self.backends[a].load() {
                    b
                } else {
                    a
                })
            }
        }
    }
}

/// The next usable entry of `order` after the shared cursor, wrapping around once.
fn rotate(order: &[usize], cursor: &AtomicUsize, usable: impl Fn(usize) -> bool) -> Option<usize> {
    if order.is_empty() {
        return None;
    }
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    (0..order.len())
        .map(|step| order[start.wrapping_add(step) % order.len()])
        .find(|&i| usable(i))
}
