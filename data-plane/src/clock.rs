//! A monotonic clock as plain nanoseconds, so deadlines fit in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process's first look at the clock, as an `Instant` and, on Linux, as the kernel's
/// monotonic nanoseconds (the clock `Instant` reads there), for [`Nanos::coarse_now`].
struct Epoch {
    instant: Instant,
    #[cfg(target_os = "linux")]
    monotonic_nanos: u64,
}

fn epoch() -> &'static Epoch {
    static EPOCH: OnceLock<Epoch> = OnceLock::new();
    EPOCH.get_or_init(|| Epoch {
        instant: Instant::now(),
        #[cfg(target_os = "linux")]
        monotonic_nanos: timespec_nanos(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        )),
    })
}

#[cfg(target_os = "linux")]
fn timespec_nanos(time: rustix::time::Timespec) -> u64 {
    let secs = u64::try_from(time.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Nanoseconds since the process's first look at the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nanos(pub u64);

impl Nanos {
    pub fn now() -> Self {
        Self::from_instant(Instant::now())
    }

    /// The monotonic clock at the kernel's last tick: a few milliseconds behind [`Nanos::now`]
    /// at most, read without the TSC (about 8 ns against 40 on the benchmark host). For what is
    /// counted in seconds and read on every call: how long a pooled connection has idled.
    /// Compare it only with other coarse readings.
    #[cfg(target_os = "linux")]
    pub fn coarse_now() -> Self {
        let now = timespec_nanos(rustix::time::clock_gettime(
            rustix::time::ClockId::MonotonicCoarse,
        ));
        Self(now.saturating_sub(epoch().monotonic_nanos))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn coarse_now() -> Self {
        Self::now()
    }

    pub fn from_instant(instant: Instant) -> Self {
        let since = instant.saturating_duration_since(epoch().instant);
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
    fn the_coarse_clock_is_the_precise_one_at_the_last_tick() {
        let before = Nanos::now();
        std::thread::sleep(Duration::from_millis(20));
        let coarse = Nanos::coarse_now();
        let after = Nanos::now();
        // Past what was read before the tick that preceded it, never ahead of the precise
        // clock; the 20 ms sleep spans several ticks of any kernel.
        assert!(coarse > before, "{coarse:?} is not past {before:?}");
        assert!(coarse <= after, "{coarse:?} is ahead of {after:?}");
    }

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
