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

/// Wall-clock time, for windows that follow the calendar (UTC).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnixTime {
    pub secs: i64,
    /// The part of the current second that has passed, 0 to 1.
    pub fraction: f64,
}

impl UnixTime {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            fraction: f64::from(since.subsec_nanos()) / 1e9,
        }
    }

    pub fn millis(self) -> i64 {
        self.secs.saturating_mul(1000) + (self.fraction * 1000.0) as i64
    }
}
