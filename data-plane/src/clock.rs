//! A monotonic clock as plain nanoseconds, so deadlines fit in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's first look at the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nanos(pub u64);

impl Nanos {
    pub fn now() -> Self {
        Self::from_instant(Instant::now())
    }

    pub fn from_instant(instant: Instant) -> Self {
        let since = instant.saturating_duration_since(epoch());
        Self(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn after(self, duration: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// Time left until `self`, or `None` when it has passed.
    pub fn remaining_from(self, now: Nanos) -> Option<Duration> {
        (self.0 > now.0).then(|| Duration::from_nanos(self.0 - now.0))
    }
}
