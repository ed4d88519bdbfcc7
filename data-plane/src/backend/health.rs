//! A backend's availability: rate-limit cooldowns and outlier ejections, lock-free.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Nanos;

/// First ejection after a failure; doubles per consecutive failure up to [`EJECTION_CAP`].
pub const EJECTION_BASE: Duration = Duration::from_secs(1);
pub const EJECTION_CAP: Duration = Duration::from_secs(30);

/// Why a backend is not taking traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Rate limited upstream (429 or an exhausted rate-limit window); back after the wait.
    CoolingDown(Duration),
    /// Recently failed (5xx, connect error, timeout); back after the wait.
    Ejected(Duration),
}

impl Unavailable {
    pub fn wait(self) -> Duration {
        match self {
            Self::CoolingDown(wait) | Self::Ejected(wait) => wait,
        }
    }
}

#[derive(Debug, Default)]
pub struct Health {
    cooldown_until: AtomicU64,
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
}

impl Health {
    pub fn check(&self, now: Nanos) -> Result<(), Unavailable> {
        let cooldown = Nanos(self.cooldown_until.load(Ordering::Relaxed)).remaining_from(now);
        let ejection = Nanos(self.ejected_until.load(Ordering::Relaxed)).remaining_from(now);
        match (cooldown, ejection) {
            (None, None) => Ok(()),
            (Some(c), Some(e)) if e > c => Err(Unavailable::Ejected(e)),
            (Some(c), _) => Err(Unavailable::CoolingDown(c)),
            (None, Some(e)) => Err(Unavailable::Ejected(e)),
        }
    }

    /// Keeps the backend out until `now + wait`. A later deadline replaces an earlier one,
    /// never the reverse, so a short hint cannot cut a long quota wait.
    pub fn cool_down(&self, now: Nanos, wait: Duration) {
        self.cooldown_until
            .fetch_max(now.after(wait).0, Ordering::Relaxed);
    }

    /// Records a failure and ejects the backend for an exponentially growing time.
    pub fn record_failure(&self, now: Nanos) -> Duration {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let ejection = EJECTION_BASE
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(EJECTION_CAP);
        self.ejected_until
            .fetch_max(now.after(ejection).0, Ordering::Relaxed);
        ejection
    }

    pub fn record_success(&self) {
        // Avoid writing the shared cache line on every success.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_cooldowns_replace_shorter_ones_never_the_reverse() {
        let health = Health::default();
        let now = Nanos(1_000);
        health.cool_down(now, Duration::from_secs(10));
        health.cool_down(now, Duration::from_secs(2));
        assert_eq!(
            health.check(now),
            Err(Unavailable::CoolingDown(Duration::from_secs(10)))
        );
        health.cool_down(now, Duration::from_secs(20));
        assert_eq!(
            health.check(now).unwrap_err().wait(),
            Duration::from_secs(20)
        );
        assert_eq!(health.check(now.after(Duration::from_secs(21))), Ok(()));
    }

    #[test]
    fn ejections_grow_exponentially_up_to_the_cap_and_reset_on_success() {
        let health = Health::default();
        let now = Nanos(0);
        let waits: Vec<_> = (0..8)
            .map(|_| health.record_failure(now).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert!(matches!(health.check(now), Err(Unavailable::Ejected(_))));
        health.record_success();
        let later = now.after(Duration::from_secs(31));
        assert_eq!(health.check(later), Ok(()));
        assert_eq!(health.record_failure(later), Duration::from_secs(1));
    }
}
