//! One client key's traffic on one pool, counted by the request path with relaxed atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_model::Price;

use crate::per_worker::PerWorker;
use crate::usage::Usage;

/// What a key sent to a pool since the counts were last taken.
///
/// Aligned to a cache line: cells of different keys are written by different cores, and
/// sharing a line would make them contend for it.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct UsageCell {
    requests: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cost_micro_usd: AtomicU64,
    rate_limited: AtomicU64,
}

/// One key's traffic on one pool, a cell per worker. A call counts into its worker's cell and
/// its response body holds that cell's `Arc`, so no count and no reference count is written
/// by two cores; a report adds the cells up.
#[derive(Clone, Debug)]
pub struct UsageCells(PerWorker<Arc<UsageCell>>);

impl UsageCells {
    /// The calling worker's cell.
    pub fn current(&self) -> &Arc<UsageCell> {
        self.0.current()
    }

    /// Every worker's counts since the last take, added up.
    pub fn take(&self) -> UsageCounts {
        self.0
            .iter()
            .fold(UsageCounts::default(), |mut total, cell| {
                total += cell.take();
                total
            })
    }

    /// Whether anything beside this holder still counts into the cells.
    pub fn held_elsewhere(&self) -> bool {
        self.0.iter().any(|cell| Arc::strong_count(cell) > 1)
    }
}

impl Default for UsageCells {
    fn default() -> Self {
        Self(PerWorker::new(|_| Arc::default()))
    }
}

/// Counts taken from a [`UsageCell`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
    pub rate_limited: u64,
}

impl UsageCounts {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::AddAssign for UsageCounts {
    fn add_assign(&mut self, other: Self) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_micro_usd += other.cost_micro_usd;
        self.rate_limited += other.rate_limited;
    }
}

impl UsageCell {
    /// A call got past the key's limits and goes to the pool's backends.
    pub fn admitted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A call the key's limits refused before any upstream call.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Tokens a backend reported for one call, and what they cost at the pool's price (the
    /// same [`Price::cost`] that budgets are counted with).
    pub fn consumed(&self, usage: &Usage, price: Option<Price>) {
        self.input_tokens
            .fetch_add(usage.prompt_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(usage.completion_tokens, Ordering::Relaxed);
        if let Some(price) = price {
            let cost = price.cost(
                usage.prompt_tokens,
                usage.cached_tokens(),
                usage.completion_tokens,
            );
            self.cost_micro_usd
                .fetch_add(cost.micros(), Ordering::Relaxed);
        }
    }

    /// Everything counted since the last take, leaving zeros. Each counter is swapped on its
    /// own: a call counted between two swaps lands in this report or the next, never in none.
    pub fn take(&self) -> UsageCounts {
        UsageCounts {
            requests: self.requests.swap(0, Ordering::Relaxed),
            input_tokens: self.input_tokens.swap(0, Ordering::Relaxed),
            output_tokens: self.output_tokens.swap(0, Ordering::Relaxed),
            cost_micro_usd: self.cost_micro_usd.swap(0, Ordering::Relaxed),
            rate_limited: self.rate_limited.swap(0, Ordering::Relaxed),
        }
    }
}

/// The cell a call's response body counts its tokens into, with the price they cost.
#[derive(Clone, Debug)]
pub struct CallUsage {
    pub cell: Arc<UsageCell>,
    pub price: Option<Price>,
}

impl CallUsage {
    pub fn consumed(&self, usage: &Usage) {
        self.cell.consumed(usage, self.price);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        serde_json::from_value(serde_json::json!({
            "prompt_tokens": prompt, "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached}
        }))
        .unwrap()
    }

    #[test]
    fn take_returns_the_counts_and_leaves_zeros() {
        let cell = UsageCell::default();
        cell.admitted();
        cell.admitted();
        cell.rate_limited();
        let price: Price =
            serde_json::from_value(serde_json::json!({"input_per_1m_usd": 2.5, "output_per_1m_usd": 10, "cached_input_per_1m_usd": 1.25}))
                .unwrap();
        // 1,000 in (400 cached) and 500 out: 600 × 2.5 + 400 × 1.25 + 500 × 10 = 7,000 µ$.
        cell.consumed(&usage(1000, 400, 500), Some(price));
        cell.consumed(&usage(10, 0, 5), None);
        assert_eq!(
            cell.take(),
            UsageCounts {
                requests: 2,
                input_tokens: 1010,
                output_tokens: 505,
                cost_micro_usd: 7_000,
                rate_limited: 1,
            }
        );
        assert!(cell.take().is_zero(), "counted once, then gone");
        cell.rate_limited();
        assert_eq!(cell.take().rate_limited, 1);
    }

    #[test]
    fn a_report_adds_up_every_workers_cell() {
        let cells = UsageCells(PerWorker::for_workers(2, |_| Arc::default()));
        std::thread::scope(|scope| {
            for index in 0..2 {
                let cells = &cells;
                scope.spawn(move || {
                    crate::per_worker::enter(index);
                    cells.current().admitted();
                    cells
                        .current()
                        .consumed(&usage(10 * (index as u64 + 1), 0, 1), None);
                });
            }
        });
        let counts = cells.take();
        assert_eq!(
            (counts.requests, counts.input_tokens, counts.output_tokens),
            (2, 30, 2)
        );
        assert!(!cells.held_elsewhere());
        let body = Arc::clone(cells.current());
        assert!(cells.held_elsewhere(), "a call in flight still counts");
        drop(body);
    }

    #[test]
    fn cells_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<UsageCell>(), 64);
    }
}
