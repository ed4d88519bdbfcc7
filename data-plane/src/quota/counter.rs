//! One limit's count in its current window, as this proxy sees it.
//!
//! The request path touches two atomics: it takes from the proxy's *allowance* and adds to
//! what it has *spent*. The allowance is a lease: at every sync (a background task) the proxy
//! replaces its previous lease in the shared count by what it actually spent, and atomically
//! reserves a new one, a share of what is left (see [`reserve`]). Because leases are counted
//! in the shared total when they are taken, proxies that sync at different moments can never
//! hand out the same room twice; the only room used without a lease is a small first
//! allowance before a limit's first sync (a tenth of the proxy's share), which bounds the
//! fleet's overshoot at 10% of the limit.
//!
//! Those two atomics sit on lines of their own, and a call writes them once: a line that
//! both cores write costs each burst of touches a transfer between them (about 0.1 µs on the
//! hosts measured), so the call's settlement, known only when its response ends, is not
//! written there but to a slot of its worker's own (`owed`), charged by the worker's next take
//! or by the next sync, whichever comes first.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use sluice_model::windows::Window;

use crate::per_worker::PerWorker;

/// A window: where it starts and ends (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

/// The lease a proxy takes from what is left (`room`) of a limit shared by `proxies`: its
/// fair share, but no more than `cap` (about what it will spend before its next sync), and at
/// least one unit, or the largest call it had to refuse (`want`) when that fits in the room;
/// never more than the room. The store serialises leases, so the last units go to whoever
/// asks first instead of to nobody, and a call bigger than a share still gets through.
pub fn lease_size(room: i64, proxies: u32, cap: i64, want: i64) -> i64 {
    if room <= 0 {
        return 0;
    }
    let mut lease = (room / i64::from(proxies.max(1))).min(cap).max(1);
    if want <= room {
        lease = lease.max(want);
    }
    lease.min(room)
}

pub struct Counter {
    pub window: Window,
    /// Written by every call. The fields below are written by the sync task alone, so on
    /// lines apart from these they stay in every core's cache between syncs.
    hot: Hot,
    /// Settlements made on each worker and not charged yet: at most one call's correction
    /// per worker, as a worker's next take charges its own.
    owed: PerWorker<AtomicI64>,
    limit: AtomicU64,
    /// The window being counted (unix seconds); moved on by the sync task.
    window_start: AtomicI64,
    window_end: AtomicI64,
    /// Refused here since the last sync, in total and the largest single call: demand the
    /// next lease should cover.
    refused: AtomicI64,
    largest_refused: AtomicI64,
    /// The lease the shared total counts for this proxy (sync task only).
    reserved: AtomicI64,
    /// The window's shared total after the last sync: every proxy's spending and leases.
    shared: AtomicU64,
    /// The previous minute's total (rolling minute only), weighted as it slides out.
    previous: AtomicU64,
    /// Unix seconds of the last admission, so idle counters need not be synced.
    last_used: AtomicI64,
    /// Idle, and its lease given back: nothing to sync until it is used again.
    released: AtomicBool,
}

/// Two lines: adjacent-line prefetch pulls in pairs of 64-byte lines.
#[repr(align(128))]
struct Hot {
    /// What this proxy may still admit: what is left of its lease.
    allowance: AtomicI64,
    /// Spent here since the last successful sync.
    spent: AtomicI64,
}

/// What a sync did for a counter.
#[derive(Clone, Copy, Debug)]
pub struct Synced {
    /// The shared total after this proxy's push and new lease.
    pub total: u64,
    /// The new lease.
    pub reserved: u64,
    /// The previous minute's total, when it was read in this sync.
    pub previous: Option<u64>,
}

/// Whether the sync task has anything to do with a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Used lately: push what was spent, take a new lease.
    Active,
    /// Just went idle: push what was spent and give the lease back, once.
    Release,
    /// Idle and released.
    Idle,
}

impl Counter {
    pub fn new(window: Window, limit: u64, now_secs: i64, first_allowance: u64) -> Self {
        Self::with_owed(
            window,
            limit,
            now_secs,
            first_allowance,
            PerWorker::new(|_| AtomicI64::new(0)),
        )
    }

    fn with_owed(
        window: Window,
        limit: u64,
        now_secs: i64,
        first_allowance: u64,
        owed: PerWorker<AtomicI64>,
    ) -> Self {
        let (start, end) = window.bounds(now_secs);
        Self {
            window,
            hot: Hot {
                allowance: AtomicI64::new(saturating_i64(first_allowance)),
                spent: AtomicI64::new(0),
            },
            owed,
            limit: AtomicU64::new(limit),
            window_start: AtomicI64::new(start),
            window_end: AtomicI64::new(end),
            refused: AtomicI64::new(0),
            largest_refused: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
            shared: AtomicU64::new(0),
            previous: AtomicU64::new(0),
            last_used: AtomicI64::new(now_secs),
            released: AtomicBool::new(false),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// A lower limit cuts the allowance at once; the next sync leases against the new one.
    pub fn set_limit(&self, limit: u64) {
        let old = self.limit.swap(limit, Ordering::Relaxed);
        if limit < old {
            self.hot
                .allowance
                .fetch_sub(saturating_i64(old - limit), Ordering::Relaxed);
        }
    }

    /// Takes `amount` from the allowance; false (and nothing taken) when it is not there. A
    /// refusal still counts as use: the next sync leases for it. What this worker's earlier
    /// calls owe is charged first, in the same writes, admitted or not.
    pub fn try_take(&self, amount: u64, now_secs: i64) -> bool {
        let amount = saturating_i64(amount);
        let owed = take_owed(self.owed.current());
        let charged = amount.saturating_add(owed);
        let before = self.hot.allowance.fetch_sub(charged, Ordering::Relaxed);
        if before.saturating_sub(owed) < amount {
            self.hot.allowance.fetch_add(amount, Ordering::Relaxed);
            if owed != 0 {
                self.hot.spent.fetch_add(owed, Ordering::Relaxed);
            }
            self.refused.fetch_add(amount, Ordering::Relaxed);
            self.largest_refused.fetch_max(amount, Ordering::Relaxed);
            self.touch(now_secs);
            return false;
        }
        self.hot.spent.fetch_add(charged, Ordering::Relaxed);
        self.touch(now_secs);
        true
    }

    fn touch(&self, now_secs: i64) {
        // One write per second at most: the cache line is shared by every core.
        if self.last_used.load(Ordering::Relaxed) != now_secs {
            self.last_used.store(now_secs, Ordering::Relaxed);
        }
        if self.released.load(Ordering::Relaxed) {
            self.released.store(false, Ordering::Relaxed);
        }
    }

    /// Corrects an earlier take by `delta` at once (a refund when negative).
    pub fn adjust(&self, delta: i64) {
        if delta != 0 {
            self.hot.spent.fetch_add(delta, Ordering::Relaxed);
            self.hot.allowance.fetch_sub(delta, Ordering::Relaxed);
        }
    }

    /// Corrects an earlier take by `delta` (a settled estimate) on this worker's own line,
    /// to be charged by its next take or the next sync. Until then the room it stands for is
    /// not in the allowance: at most one call's correction per worker, which is the bound the
    /// settlement of calls already in flight has anyway.
    pub fn settle_later(&self, delta: i64) {
        if delta != 0 {
            self.owed.current().fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Charges every worker's owed settlements (the sync task, before it reads what was spent).
    fn charge_owed(&self) {
        let owed: i64 = self.owed.iter().map(take_owed).fold(0, i64::saturating_add);
        self.adjust(owed);
    }

    /// The fleet's use of the window as this proxy knows it: the shared total with this
    /// proxy's lease replaced by what it spent (other proxies' leases count as used), and the
    /// previous minute weighted.
    pub fn used(&self, now_secs: i64) -> u64 {
        let owed = self
            .owed
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .fold(0, i64::saturating_add);
        self.used_but(owed, now_secs)
    }

    /// What is left of the limit as this proxy knows it.
    #[cfg(test)]
    pub fn remaining(&self, now_secs: i64) -> u64 {
        self.limit().saturating_sub(self.used(now_secs))
    }

    /// The use as the worker that just took from the counter sees it: what the other workers
    /// owe is left out (at most a call's correction each), so that the call reads only lines
    /// its take brought into this core's cache.
    pub fn used_after_take(&self, now_secs: i64) -> u64 {
        self.used_but(0, now_secs)
    }

    fn used_but(&self, owed: i64, now_secs: i64) -> u64 {
        let own_lease = self.reserved.load(Ordering::Relaxed);
        let spent = self.hot.spent.load(Ordering::Relaxed).saturating_add(owed);
        let current = self
            .shared
            .load(Ordering::Relaxed)
            .saturating_add_signed(spent - own_lease);
        current.saturating_add(self.previous_weighted(now_secs))
    }

    pub fn span(&self) -> Span {
        Span {
            start: self.window_start.load(Ordering::Relaxed),
            end: self.window_end.load(Ordering::Relaxed),
        }
    }

    /// How long until `amount` more would fit, roughly: capacity comes back as the previous
    /// minute slides out, or all at once when a period ends; at least until the next lease.
    pub fn wait_for(&self, amount: u64, now_secs: i64, now_frac: f64) -> std::time::Duration {
        let until_end = (self.span().end as f64 - now_secs as f64 - now_frac).max(0.0);
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
                    until_end + (excess - previous) as f64 / self.limit().max(1) as f64 * 60.0
                }
            }
            Window::Period(_) => until_end,
        };
        std::time::Duration::from_secs_f64(seconds.min(until_end + 60.0))
    }

    pub fn activity(&self, now_secs: i64, idle_after_secs: i64) -> Activity {
        let recently = now_secs - self.last_used.load(Ordering::Relaxed) <= idle_after_secs;
        let owing = self
            .owed
            .iter()
            .any(|slot| slot.load(Ordering::Relaxed) != 0);
        if recently || owing || self.hot.spent.load(Ordering::Relaxed) != 0 {
            Activity::Active
        } else if self.released.load(Ordering::Relaxed) {
            Activity::Idle
        } else {
            Activity::Release
        }
    }

    /// Moves the counter to the window holding `now_secs` when the current one has ended;
    /// returns the ended window and the correction still to push to it (spent minus lease).
    pub fn roll(&self, now_secs: i64) -> Option<(Span, i64)> {
        let ended = self.span();
        if now_secs < ended.end {
            return None;
        }
        let (start, end) = self.window.bounds(now_secs);
        // Settlements of the ended window's calls count in it.
        self.charge_owed();
        let spent = self.hot.spent.swap(0, Ordering::Relaxed);
        let lease = self.reserved.swap(0, Ordering::Relaxed);
        let total = self.shared.swap(0, Ordering::Relaxed);
        let adjacent = self.window == Window::Minute && start == ended.end;
        let final_total = total.saturating_add_signed(spent - lease);
        self.previous
            .store(if adjacent { final_total } else { 0 }, Ordering::Relaxed);
        self.window_start.store(start, Ordering::Relaxed);
        self.window_end.store(end, Ordering::Relaxed);
        // The old lease's rest is no room in the new window; the caller gives it the first
        // allowance of a fresh window at once (`rest`), so calls at a minute's start are not
        // refused while the new lease is on its way.
        Some((ended, spent - lease))
    }

    /// An idle counter in a new window: a sliver until it is used and leases again.
    pub fn rest(&self, sliver: u64, proxies: u32, now_secs: i64) {
        self.set_allowance(self.sliver_within_room(sliver, proxies, now_secs));
    }

    /// The previous minute's weight now, in thousandths (rolling minute only).
    pub fn previous_weight_permille(&self, now_secs: i64) -> u64 {
        if self.window != Window::Minute {
            return 0;
        }
        let elapsed = (now_secs - self.window_start.load(Ordering::Relaxed)).clamp(0, 60) as u64;
        (60 - elapsed) * 1000 / 60
    }

    /// Starts a sync: what was spent since the last one, and the correction to push (the
    /// spending replaces the lease the shared total counts for this proxy).
    pub fn begin_sync(&self) -> (i64, i64) {
        self.charge_owed();
        let spent = self.hot.spent.swap(0, Ordering::Relaxed);
        (spent, spent - self.reserved.load(Ordering::Relaxed))
    }

    /// What was refused since the last sync: in total, and the largest single call.
    pub fn take_refused(&self) -> (i64, i64) {
        (
            self.refused.swap(0, Ordering::Relaxed),
            self.largest_refused.swap(0, Ordering::Relaxed),
        )
    }

    /// The sync failed: what was spent is kept for the next one.
    pub fn sync_failed(&self, spent: i64) {
        self.hot.spent.fetch_add(spent, Ordering::Relaxed);
    }

    /// Applies a sync: the new lease becomes the allowance, less what was spent meanwhile.
    pub fn synced(&self, synced: Synced) {
        self.shared.store(synced.total, Ordering::Relaxed);
        if let Some(previous) = synced.previous {
            self.previous.store(previous, Ordering::Relaxed);
        }
        let lease = saturating_i64(synced.reserved);
        self.reserved.store(lease, Ordering::Relaxed);
        self.set_allowance(lease);
    }

    /// An idle counter gave its lease back: it keeps a sliver so its next call need not wait
    /// for a sync (a sliver is the only room used without a lease), and none when nothing was
    /// left, so idling between bursts cannot add up to more than the limit.
    pub fn released(&self, synced: Synced, sliver: u64, proxies: u32, now_secs: i64) {
        self.shared.store(synced.total, Ordering::Relaxed);
        self.reserved.store(0, Ordering::Relaxed);
        self.released.store(true, Ordering::Relaxed);
        self.set_allowance(self.sliver_within_room(sliver, proxies, now_secs));
    }

    /// `sliver`, but no more than this proxy's share of what is known to be left.
    fn sliver_within_room(&self, sliver: u64, proxies: u32, now_secs: i64) -> i64 {
        let room = saturating_i64(self.limit())
            - saturating_i64(self.shared.load(Ordering::Relaxed))
            - saturating_i64(self.previous_weighted(now_secs));
        saturating_i64(sliver).min(room.max(0) / i64::from(proxies.max(1)))
    }

    /// Without the shared store: this proxy's lease, plus its share of what was left at the
    /// last sync, split between the proxies last seen (the others do the same), less what it
    /// spent since.
    pub fn share_out_locally(&self, proxies: u32, now_secs: i64) {
        let known = self.shared.load(Ordering::Relaxed);
        let room = saturating_i64(self.limit())
            - saturating_i64(known)
            - saturating_i64(self.previous_weighted(now_secs));
        let cap = self.reserved.load(Ordering::Relaxed) + room.max(0) / i64::from(proxies.max(1));
        self.set_allowance(cap);
    }

    /// `allowance = cap - spent`, counting spending that lands while it is being set.
    fn set_allowance(&self, cap: i64) {
        let Hot { allowance, spent } = &self.hot;
        let before = spent.load(Ordering::Relaxed);
        allowance.store(cap - before, Ordering::Relaxed);
        let after = spent.load(Ordering::Relaxed);
        if after != before {
            allowance.fetch_sub(after - before, Ordering::Relaxed);
        }
    }

    /// The previous minute's weight in the rolling minute: it slides out linearly.
    fn previous_weighted(&self, now_secs: i64) -> u64 {
        let previous = self.previous.load(Ordering::Relaxed);
        previous * self.previous_weight_permille(now_secs) / 1000
    }
}

/// A slot's owed settlements, taken. Read before it is swapped: a counter of requests, whose
/// calls never owe, then writes nothing.
fn take_owed(slot: &AtomicI64) -> i64 {
    if slot.load(Ordering::Relaxed) == 0 {
        0
    } else {
        slot.swap(0, Ordering::Relaxed)
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

    fn synced(total: u64, reserved: u64) -> Synced {
        Synced {
            total,
            reserved,
            previous: Some(0),
        }
    }

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
    fn leases_replace_spending_in_the_shared_total() {
        let counter = Counter::new(Window::Minute, 30, T0, 1);
        assert!(counter.try_take(1, T0));
        let (spent, correction) = counter.begin_sync();
        assert_eq!((spent, correction), (1, 1));
        // One more lands while the sync is on its way.
        counter.hot.allowance.store(1, Ordering::Relaxed);
        assert!(counter.try_take(1, T0));
        // The store: 1 spent here + 5 elsewhere, then a lease of 8 for this proxy.
        counter.synced(synced(14, 8));
        let admitted = (0..20).filter(|_| counter.try_take(1, T0)).count();
        assert_eq!(admitted, 7, "the lease less the call admitted meanwhile");
        // Next sync: the 8 spent replace the lease of 8.
        assert_eq!(counter.begin_sync(), (8, 0));
        assert_eq!(lease_size(30 - 14, 3, i64::MAX, 0), 5);
        assert_eq!(
            lease_size(2, 3, i64::MAX, 0),
            1,
            "the last units go to whoever asks"
        );
        assert_eq!(lease_size(0, 3, i64::MAX, 1), 0);
        assert_eq!(
            lease_size(90, 3, 4, 0),
            4,
            "no more than the proxy will spend"
        );
        assert_eq!(
            lease_size(90, 3, 4, 26),
            26,
            "a refused call bigger than a share fits"
        );
        assert_eq!(lease_size(20, 3, 4, 26), 4, "…when the room holds it");
    }

    #[test]
    fn a_refused_call_is_remembered_as_demand() {
        let counter = Counter::new(Window::Minute, 100, T0, 1);
        assert!(!counter.try_take(26, T0 + 20));
        assert!(!counter.try_take(5, T0 + 20));
        assert_eq!(counter.take_refused(), (31, 26));
        assert_eq!(counter.take_refused(), (0, 0));
        assert_eq!(counter.activity(T0 + 25, 10), Activity::Active);
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

    /// Workers taking and settling at once: what they consume never exceeds the allowance by
    /// more than the calls that settled above their estimate while it ran out (one per
    /// worker here). A counter split per worker failed this: one worker's debt did not stop
    /// another from spending its share.
    #[test]
    fn concurrent_calls_never_take_more_than_the_allowance() {
        let counter = Counter::new(Window::Period(Period::Day), 100_000, T0, 1_000);
        four_workers_stay_within_one_settlement_each(&counter, Counter::adjust);
    }

    /// Four workers take 3 at a time from an allowance of 1,000, and every other call settles
    /// one more than it held back, through `settle`.
    fn four_workers_stay_within_one_settlement_each(
        counter: &Counter,
        settle: impl Fn(&Counter, i64) + Sync,
    ) {
        let consumed: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|index| {
                    let settle = &settle;
                    scope.spawn(move || {
                        crate::per_worker::enter(index);
                        let mut consumed = 0;
                        for call in 0..1_000 {
                            if counter.try_take(3, T0) {
                                let extra = call % 2;
                                settle(counter, extra);
                                consumed += 3 + extra as u64;
                            }
                        }
                        consumed
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert!((997..=1_004).contains(&consumed), "consumed {consumed}");
        assert_eq!(counter.used(T0), consumed);
    }

    /// A counter whose owed settlements are kept in `workers` slots, as on a proxy with that
    /// many workers.
    fn on_workers(workers: usize, limit: u64) -> Counter {
        Counter::with_owed(
            Window::Period(Period::Day),
            limit,
            T0,
            limit,
            PerWorker::for_workers(workers, |_| AtomicI64::new(0)),
        )
    }

    /// Runs `work` as worker `index`.
    fn as_worker<T: Send>(index: usize, work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    crate::per_worker::enter(index);
                    work()
                })
                .join()
                .unwrap()
        })
    }

    #[test]
    fn a_settlement_is_charged_by_its_workers_next_take_or_the_sync() {
        let counter = on_workers(2, 100);
        assert!(counter.try_take(10, T0));
        counter.settle_later(5);
        assert_eq!(counter.used(T0), 15, "owed counts as used");
        // The other worker neither sees nor pays worker 0's debt when it takes.
        as_worker(1, || {
            assert!(counter.try_take(80, T0));
            assert_eq!(counter.used_after_take(T0), 90);
        });
        assert_eq!(counter.remaining(T0), 5);
        // Worker 0's next take pays first, even when it is refused.
        assert!(!counter.try_take(6, T0));
        assert_eq!(counter.used_after_take(T0), 95);
        assert!(counter.try_take(5, T0));
        assert!(!as_worker(1, || counter.try_take(1, T0)));
        // A refund owed by worker 1 is room once the sync charges it.
        as_worker(1, || counter.settle_later(-20));
        assert_eq!(counter.activity(T0 + 3600, 10), Activity::Active);
        assert_eq!(counter.begin_sync(), (80, 80));
        assert_eq!(counter.used(T0), 0);
        assert_eq!(counter.activity(T0 + 3600, 10), Activity::Release);
    }

    #[test]
    fn a_settlement_owed_when_the_window_ends_counts_in_it() {
        let counter = Counter::new(Window::Minute, 100, T0, 100);
        assert!(counter.try_take(10, T0 + 30));
        counter.settle_later(-4);
        let (ended, correction) = counter.roll(T0 + 60).unwrap();
        assert_eq!((ended.start, correction), (T0, 6));
        assert_eq!(counter.used(T0 + 60), 6);
    }

    /// As above, with each worker's settlements owed on its own slot: what one worker owes
    /// does not stop another, so the bound is still one settlement per worker.
    #[test]
    fn workers_settling_later_never_take_more_than_the_allowance() {
        four_workers_stay_within_one_settlement_each(&on_workers(4, 1_000), Counter::settle_later);
    }

    #[test]
    fn the_previous_minute_slides_out() {
        let counter = Counter::new(Window::Minute, 100, T0, 100);
        assert!(counter.try_take(60, T0 + 30));
        let (ended, correction) = counter.roll(T0 + 60).unwrap();
        assert_eq!((ended.start, correction), (T0, 60));
        assert_eq!(counter.span().start, T0 + 60);
        assert_eq!(counter.used(T0 + 60), 60);
        assert_eq!(counter.used(T0 + 90), 30);
        assert_eq!(counter.used(T0 + 120), 0);
        // Room for 80 more needs 40 of the previous 60 gone: 40 s into the minute.
        assert_eq!(counter.wait_for(80, T0 + 60, 0.0).as_secs(), 40);
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
    fn without_the_store_a_proxy_spends_its_lease_and_its_share_of_the_rest() {
        let counter = Counter::new(Window::Period(Period::Day), 100, T0, 0);
        counter.synced(synced(40, 10));
        // 60 were left when the store went away: 20 each for 3 proxies, plus the lease.
        counter.share_out_locally(3, T0);
        assert_eq!((0..50).filter(|_| counter.try_take(1, T0)).count(), 30);
        counter.share_out_locally(3, T0);
        assert!(!counter.try_take(1, T0), "spending since counts");
    }

    #[test]
    fn idle_counters_give_their_lease_back_once() {
        let counter = Counter::new(Window::Minute, 100, T0, 1);
        counter.synced(synced(20, 20));
        assert_eq!(counter.activity(T0 + 5, 10), Activity::Active);
        assert_eq!(counter.activity(T0 + 30, 10), Activity::Release);
        counter.released(synced(0, 0), 3, 1, T0 + 30);
        assert_eq!(counter.activity(T0 + 31, 10), Activity::Idle);
        assert!(counter.try_take(3, T0 + 31));
        assert!(!counter.try_take(1, T0 + 31));
        assert_eq!(counter.activity(T0 + 31, 10), Activity::Active);
        // Released with the limit used up: no sliver to spend after the pause.
        counter.released(synced(100, 0), 3, 1, T0 + 45);
        assert!(!counter.try_take(1, T0 + 46));
    }

    #[test]
    fn a_lower_limit_cuts_the_allowance_at_once() {
        let counter = Counter::new(Window::Minute, 100, T0, 100);
        counter.set_limit(10);
        assert!(counter.try_take(10, T0));
        assert!(!counter.try_take(1, T0));
    }
}
