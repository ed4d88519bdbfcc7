//! One limit's count in its current window, as this proxy sees it.
//!
//! The request path touches two atomics: it takes from the proxy's *allowance* (its share of
//! what is left in the window, set by the last sync) and adds to the *unsynced* delta. Every
//! sync (a background task) pushes the delta to the shared store, reads back the window's
//! total across all proxies, and hands out a new allowance: what is left, divided by the
//! number of live proxies. So a proxy never decides on more than its share between syncs, and
//! N proxies hit at once from a standing start admit at most the limit together.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use sluice_model::windows::Window;

/// The window of a count: where it starts and ends (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

pub struct Counter {
    pub window: Window,
    limit: AtomicU64,
    /// Start of the window being counted (unix seconds); moved on by the sync task.
    window_start: AtomicI64,
    window_end: AtomicI64,
    /// What this proxy may still admit before the next sync.
    allowance: AtomicI64,
    /// Admitted or settled here, not yet pushed to the shared store.
    unsynced: AtomicI64,
    /// The window's total across the fleet, as of the last sync.
    shared: AtomicU64,
    /// The previous minute's total (rolling minute only), weighted as it slides out.
    previous: AtomicU64,
    /// Unix seconds of the last admission, so idle counters need not be synced.
    last_used: AtomicI64,
    /// Set until the first sync: the allowance is a guess.
    fresh: AtomicBool,
    /// The previous minute's total is to be read from the store (at first, and after a roll).
    previous_stale: AtomicBool,
}

/// What a sync learnt about a counter's window.
#[derive(Clone, Copy, Debug)]
pub struct Synced {
    pub total: u64,
    /// The previous minute's total, when it was read in this sync.
    pub previous: Option<u64>,
    /// Live proxies sharing the limit (1 without a shared store).
    pub proxies: u32,
}

impl Counter {
    pub fn new(window: Window, limit: u64, now_secs: i64, initial_allowance: u64) -> Self {
        let (start, end) = window.bounds(now_secs);
        Self {
            window,
            limit: AtomicU64::new(limit),
            window_start: AtomicI64::new(start),
            window_end: AtomicI64::new(end),
            allowance: AtomicI64::new(saturating_i64(initial_allowance)),
            unsynced: AtomicI64::new(0),
            shared: AtomicU64::new(0),
            previous: AtomicU64::new(0),
            last_used: AtomicI64::new(now_secs),
            fresh: AtomicBool::new(true),
            previous_stale: AtomicBool::new(window == Window::Minute),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// A changed limit applies from the next sync on (and to what is left of the allowance).
    pub fn set_limit(&self, limit: u64) {
        let old = self.limit.swap(limit, Ordering::Relaxed);
        if limit < old {
            let cut = saturating_i64(old - limit);
            self.allowance.fetch_sub(cut, Ordering::Relaxed);
        }
    }

    /// Takes `amount` from the allowance; false (and nothing taken) when it is not there.
    pub fn try_take(&self, amount: u64, now_secs: i64) -> bool {
        let amount = saturating_i64(amount);
        if self.allowance.fetch_sub(amount, Ordering::Relaxed) < amount {
            self.allowance.fetch_add(amount, Ordering::Relaxed);
            return false;
        }
        self.unsynced.fetch_add(amount, Ordering::Relaxed);
        // One write per second at most: the cache line is shared by every core.
        if self.last_used.load(Ordering::Relaxed) != now_secs {
            self.last_used.store(now_secs, Ordering::Relaxed);
        }
        true
    }

    /// Corrects an earlier take by `delta` (a settled estimate, or a refund when negative).
    pub fn adjust(&self, delta: i64) {
        if delta != 0 {
            self.unsynced.fetch_add(delta, Ordering::Relaxed);
            self.allowance.fetch_sub(delta, Ordering::Relaxed);
        }
    }

    /// The fleet's use of the window as this proxy knows it, the previous minute weighted.
    pub fn used(&self, now_secs: i64) -> u64 {
        let unsynced = self.unsynced.load(Ordering::Relaxed);
        let current = self
            .shared
            .load(Ordering::Relaxed)
            .saturating_add_signed(unsynced);
        current.saturating_add(self.previous_weighted(now_secs))
    }

    /// What is left of the limit as this proxy knows it.
    pub fn remaining(&self, now_secs: i64) -> u64 {
        self.limit().saturating_sub(self.used(now_secs))
    }

    pub fn span(&self) -> Span {
        Span {
            start: self.window_start.load(Ordering::Relaxed),
            end: self.window_end.load(Ordering::Relaxed),
        }
    }

    /// How long until `amount` more would fit, roughly: capacity comes back as the previous
    /// minute slides out, or all at once when a period ends.
    pub fn wait_for(&self, amount: u64, now_secs: i64, now_frac: f64) -> std::time::Duration {
        let span = self.span();
        let until_end = (span.end as f64 - now_secs as f64 - now_frac).max(0.0);
        let excess = (self.used(now_secs) + amount).saturating_sub(self.limit());
        let seconds = match self.window {
            Window::Minute if excess == 0 => 0.0,
            Window::Minute => {
                let previous = self.previous.load(Ordering::Relaxed);
                if previous >= excess {
                    // The previous minute weighs (1 - f) × previous; it must lose `excess`.
                    excess as f64 / previous as f64 * 60.0
                } else {
                    // Then this minute must slide out too.
                    until_end + (excess - previous) as f64 / amount.max(1) as f64
                }
            }
            Window::Period(_) => until_end,
        };
        std::time::Duration::from_secs_f64(seconds)
    }

    /// Whether the sync task should push and read this counter: used recently, holding an
    /// unsynced delta, or never synced.
    pub fn needs_sync(&self, now_secs: i64, idle_after_secs: i64) -> bool {
        self.unsynced.load(Ordering::Relaxed) != 0
            || self.fresh.load(Ordering::Relaxed)
            || now_secs - self.last_used.load(Ordering::Relaxed) <= idle_after_secs
    }

    /// Moves the counter to the window holding `now_secs` when the current one has ended;
    /// returns the ended window and the delta still to be pushed to it.
    pub fn roll(&self, now_secs: i64) -> Option<(Span, i64)> {
        let ended = self.span();
        if now_secs < ended.end {
            return None;
        }
        let (start, end) = self.window.bounds(now_secs);
        let delta = self.unsynced.swap(0, Ordering::Relaxed);
        let total = self.shared.swap(0, Ordering::Relaxed);
        let adjacent = self.window == Window::Minute && start == ended.end;
        self.previous.store(
            if adjacent {
                total.saturating_add_signed(delta)
            } else {
                0
            },
            Ordering::Relaxed,
        );
        self.window_start.store(start, Ordering::Relaxed);
        self.window_end.store(end, Ordering::Relaxed);
        // Other proxies' last counts of the ended minute are read at the next sync.
        self.previous_stale.store(adjacent, Ordering::Relaxed);
        Some((ended, delta))
    }

    pub fn previous_unknown(&self) -> bool {
        self.previous_stale.load(Ordering::Relaxed)
    }

    /// Not synced while idle: a shared limit's allowance is cut to a sliver (the share it
    /// holds may have been spent elsewhere since); a proxy-local one is simply brought up to
    /// date as the minute slides.
    pub fn idle(&self, proxies: u32, shared: bool, now_secs: i64) {
        if shared {
            let sliver = (self.limit() / u64::from(proxies.max(1)) / 10).max(1);
            self.allowance
                .fetch_min(saturating_i64(sliver), Ordering::Relaxed);
        } else {
            self.share_out(1, now_secs);
        }
    }

    /// Takes the delta to push in this sync.
    pub fn take_unsynced(&self) -> i64 {
        self.unsynced.swap(0, Ordering::Relaxed)
    }

    /// A push failed: the delta is kept for the next one.
    pub fn restore_unsynced(&self, delta: i64) {
        self.unsynced.fetch_add(delta, Ordering::Relaxed);
    }

    /// Applies what a sync read back and hands out this proxy's share of what is left.
    pub fn synced(&self, synced: Synced, now_secs: i64) {
        self.shared.store(synced.total, Ordering::Relaxed);
        if let Some(previous) = synced.previous {
            self.previous.store(previous, Ordering::Relaxed);
            self.previous_stale.store(false, Ordering::Relaxed);
        }
        self.fresh.store(false, Ordering::Relaxed);
        self.share_out(synced.proxies, now_secs);
    }

    /// Without the shared store: what is left as this proxy last knew it, split by the proxies
    /// last seen, minus what it has admitted since.
    pub fn share_out(&self, proxies: u32, now_secs: i64) {
        let known_total = self.shared.load(Ordering::Relaxed);
        let left = self
            .limit()
            .saturating_sub(known_total.saturating_add(self.previous_weighted(now_secs)));
        let share = left / u64::from(proxies.max(1));
        // Taken since the delta was pushed: not in the total yet, already spent.
        let since = self.unsynced.load(Ordering::Relaxed);
        self.allowance
            .store(saturating_i64(share) - since, Ordering::Relaxed);
    }

    /// The previous minute's weight in the rolling minute: it slides out linearly.
    fn previous_weighted(&self, now_secs: i64) -> u64 {
        if self.window != Window::Minute {
            return 0;
        }
        let previous = self.previous.load(Ordering::Relaxed);
        if previous == 0 {
            return 0;
        }
        let start = self.window_start.load(Ordering::Relaxed);
        let elapsed = (now_secs - start).clamp(0, 60) as u64;
        previous * (60 - elapsed) / 60
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::Period;

    const T0: i64 = 1_796_276_700; // the start of a minute

    #[test]
    fn takes_only_what_the_allowance_holds() {
        let counter = Counter::new(Window::Minute, 10, T0, 3);
        assert!(counter.try_take(2, T0));
        assert!(!counter.try_take(2, T0));
        assert!(counter.try_take(1, T0));
        assert!(!counter.try_take(1, T0));
        assert_eq!(counter.used(T0), 3);
    }

    #[test]
    fn a_sync_splits_what_is_left_between_the_proxies() {
        let counter = Counter::new(Window::Minute, 30, T0, 10);
        for _ in 0..4 {
            assert!(counter.try_take(1, T0));
        }
        let delta = counter.take_unsynced();
        assert_eq!(delta, 4);
        // Two more admitted while the push was on its way.
        assert!(counter.try_take(1, T0));
        assert!(counter.try_take(1, T0));
        // The fleet used 12 (ours included); 18 left for 3 proxies, minus the 2 in flight.
        counter.synced(
            Synced {
                total: 12,
                previous: Some(0),
                proxies: 3,
            },
            T0,
        );
        let admitted = (0..10).filter(|_| counter.try_take(1, T0)).count();
        assert_eq!(admitted, 4);
        assert_eq!(counter.used(T0), 12 + 2 + 4);
    }

    #[test]
    fn settling_returns_or_takes_the_difference() {
        let counter = Counter::new(Window::Period(Period::Day), 1000, T0, 1000);
        assert!(counter.try_take(600, T0));
        counter.adjust(-500);
        assert!(counter.try_take(800, T0));
        assert_eq!(counter.used(T0), 900);
        counter.adjust(200);
        assert_eq!(counter.remaining(T0), 0);
        assert!(!counter.try_take(1, T0));
    }

    #[test]
    fn the_previous_minute_slides_out() {
        let counter = Counter::new(Window::Minute, 100, T0, 100);
        assert!(counter.try_take(60, T0 + 30));
        let (ended, delta) = counter.roll(T0 + 60).unwrap();
        assert_eq!((ended.start, delta), (T0, 60));
        assert_eq!(counter.span().start, T0 + 60);
        assert_eq!(counter.used(T0 + 60), 60);
        assert_eq!(counter.used(T0 + 90), 30);
        assert_eq!(counter.used(T0 + 120), 0);
        // Capacity for 80 more needs 40 of the previous 60 gone: 40 s into the minute.
        let wait = counter.wait_for(80, T0 + 60, 0.0);
        assert_eq!(wait.as_secs(), 40);
        // A gap of more than a minute forgets the previous one.
        assert!(counter.roll(T0 + 600).is_some());
        assert_eq!(counter.used(T0 + 600), 0);
    }

    #[test]
    fn a_period_waits_for_its_end() {
        let counter = Counter::new(Window::Period(Period::Hour), 100, T0, 100);
        assert!(counter.try_take(100, T0));
        let wait = counter.wait_for(1, T0, 0.0);
        assert_eq!(wait.as_secs() as i64, counter.span().end - T0);
    }

    #[test]
    fn a_lower_limit_cuts_the_allowance_at_once() {
        let counter = Counter::new(Window::Minute, 100, T0, 100);
        counter.set_limit(10);
        assert!(counter.try_take(10, T0));
        assert!(!counter.try_take(1, T0));
    }
}
