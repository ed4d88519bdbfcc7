//! A backend's availability: rate-limit cooldowns and outlier ejections, lock-free.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Nanos;

/// First ejection after a failure; doubles per consecutive failure up to [`EJECTION_CAP`].
pub const EJECTION_BASE: Duration = Duration::from_secs(1);
pub const EJECTION_CAP: Duration = Duration::from_secs(30);
/// First exclusion of a backend that says it lacks the pool's deployment; doubles per repeat
/// up to [`MISSING_DEPLOYMENT_CAP`]. Longer than an ejection: a missing deployment is a
/// configuration problem (or one being created, which takes minutes), not a blip.
pub const MISSING_DEPLOYMENT_BASE: Duration = Duration::from_secs(5);
pub const MISSING_DEPLOYMENT_CAP: Duration = Duration::from_secs(300);

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
    consecutive_missing_deployments: AtomicU32,
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
        self.eject(now, &self.consecutive_failures, EJECTION_BASE, EJECTION_CAP)
            .0
    }

    /// Records that the backend lacks the pool's deployment and keeps it out for an
    /// exponentially growing time; also says whether this is the first miss in a row.
    pub fn record_missing_deployment(&self, now: Nanos) -> (Duration, bool) {
        self.eject(
            now,
            &self.consecutive_missing_deployments,
            MISSING_DEPLOYMENT_BASE,
            MISSING_DEPLOYMENT_CAP,
        )
    }

    fn eject(
        &self,
        now: Nanos,
        consecutive: &AtomicU32,
        base: Duration,
        cap: Duration,
    ) -> (Duration, bool) {
        let repeats = consecutive.fetch_add(1, Ordering::Relaxed);
        let ejection = base.saturating_mul(1u32 << repeats.min(16)).min(cap);
        self.ejected_until
            .fetch_max(now.after(ejection).0, Ordering::Relaxed);
        (ejection, repeats == 0)
    }

    pub fn record_success(&self) {
        // Avoid writing the shared cache lines on every success.
        for consecutive in [
            &self.consecutive_failures,
            &self.consecutive_missing_deployments,
        ] {
            if consecutive.load(Ordering::Relaxed) != 0 {
                consecutive.store(0, Ordering::Relaxed);
            }
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

    #[test]
    fn missing_deployments_back_off_longer_than_failures_and_reset_on_success() {
        let health = Health::default();
        let now = Nanos(0);
        let misses: Vec<_> = (0..8)
            .map(|_| health.record_missing_deployment(now))
            .map(|(wait, first)| (wait.as_secs(), first))
            .collect();
        assert_eq!(
            misses,
            [
                (5, true),
                (10, false),
                (20, false),
                (40, false),
                (80, false),
                (160, false),
                (300, false),
                (300, false)
            ]
        );
        assert_eq!(
            health.check(now),
            Err(Unavailable::Ejected(Duration::from_secs(300)))
        );
        // A failure meanwhile does not shorten the exclusion.
        health.record_failure(now);
        assert_eq!(
            health.check(now).unwrap_err().wait(),
            Duration::from_secs(300)
        );
        health.record_success();
        assert_eq!(
            health.record_missing_deployment(now.after(Duration::from_secs(301))),
            (Duration::from_secs(5), true)
        );
    }
}
