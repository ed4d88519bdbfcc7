//! Attempts at one backend and how many failed, counted by the request path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Attempts sent to one backend since the counts were last taken, and the failed ones.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct AttemptCounts {
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Counts taken from an [`AttemptCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttemptTotals {
    pub requests: u64,
    pub errors: u64,
}

impl AttemptTotals {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl AttemptCounts {
    /// One attempt sent; `failed` when no response came or the pool fails over on it.
    pub fn record(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn take(&self) -> AttemptTotals {
        AttemptTotals {
            requests: self.requests.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_attempts_and_failures_until_taken() {
        let counts = AttemptCounts::default();
        counts.record(false);
        counts.record(true);
        counts.record(false);
        assert_eq!(
            counts.take(),
            AttemptTotals {
                requests: 3,
                errors: 1
            }
        );
        assert!(counts.take().is_zero());
    }
}
