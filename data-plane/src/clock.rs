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
    /// Read twice on every call of a key with limits, so it takes the clock at the kernel's
    /// last tick (a few milliseconds ago), which needs no TSC read: about 8 ns against 40 on the
    /// benchmark host. A window of a minute or a calendar month does not notice the
    /// milliseconds.
    pub fn now() -> Self {
        let (secs, nanos) = wall_clock();
        Self {
            secs,
            fraction: f64::from(nanos) / 1e9,
        }
    }

    pub fn millis(self) -> i64 {
        self.secs.saturating_mul(1000) + (self.fraction * 1000.0) as i64
    }
}

/// Seconds and nanoseconds since the Unix epoch, at the last tick.
#[cfg(target_os = "linux")]
fn wall_clock() -> (i64, u32) {
    use rustix::time::{ClockId, clock_gettime};
    let now = clock_gettime(ClockId::RealtimeCoarse);
    (now.tv_sec, u32::try_from(now.tv_nsec).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn wall_clock() -> (i64, u32) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_nanos(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_tells_the_time_to_within_a_tick() {
        let ticked = UnixTime::now();
        let exact = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970");
        let exact_ms = i64::try_from(exact.as_millis()).expect("milliseconds fit");
        // The tick is behind, never ahead, and by milliseconds (a second allows for a
        // machine that stalls between the two reads).
        assert!(
            ticked.millis() <= exact_ms,
            "{ticked:?} is ahead of {exact:?}"
        );
        assert!(
            exact_ms - ticked.millis() < 1_000,
            "{ticked:?} lags {exact:?}"
        );
        assert!((0.0..1.0).contains(&ticked.fraction));
    }
}
