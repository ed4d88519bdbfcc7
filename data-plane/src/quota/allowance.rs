//! A counter's allowance and spending, split among the proxy's workers.
//!
//! Every call takes from its limits and settles into them, and both workers of a proxy call
//! with the same busy keys: one pair of atomics per limit would move its cache line between the
//! cores on every call. Each worker has a shard of its own instead; a worker whose shard runs
//! short takes from the others (half of what one holds, so the room evens out rather than
//! moving back and forth), which happens near a limit's end, not on the busy path.
//!
//! The sync task sets the total (`cap`: allowance plus spending since the last sync) and
//! collects the spending. Calls move units from a shard's allowance to its spending and
//! stealing moves allowance between shards, so neither changes the total: the sync task
//! changes it by adding the difference, never by overwriting a shard a call may be using.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::per_worker::PerWorker;

pub struct Allowance {
    shards: PerWorker<Shard>,
    /// What the shards' allowance and spending add up to.
    cap: AtomicI64,
}

#[derive(Default)]
struct Shard {
    /// What this worker may still admit.
    allowance: AtomicI64,
    /// Spent by this worker since the last sync.
    spent: AtomicI64,
}

impl Allowance {
    pub fn new(cap: i64) -> Self {
        Self::from_shards(PerWorker::new(|_| Shard::default()), cap)
    }

    fn from_shards(shards: PerWorker<Shard>, cap: i64) -> Self {
        let allowance = Self {
            shards,
            cap: AtomicI64::new(0),
        };
        allowance.set_cap(cap);
        allowance
    }

    /// Takes `amount` (not negative) for a call; false, with nothing taken, when no shard can
    /// spare it, even with the others' allowance gathered in.
    pub fn take(&self, amount: i64) -> bool {
        let own = self.shards.current();
        let taken = take_from(&own.allowance, amount) || self.borrow(own, amount);
        if taken {
            own.spent.fetch_add(amount, Ordering::Relaxed);
        }
        taken
    }

    /// Takes `amount` from another shard, and half of what that shard holds beside into
    /// `own`; failing that, gathers every shard's allowance into `own`, for a call larger than
    /// any one shard.
    fn borrow(&self, own: &Shard, amount: i64) -> bool {
        for other in self.others(own) {
            let mut held = other.allowance.load(Ordering::Relaxed);
            while held >= amount {
                let given = (held / 2).max(amount);
                match other.allowance.compare_exchange_weak(
                    held,
                    held - given,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        own.allowance.fetch_add(given - amount, Ordering::Relaxed);
                        return true;
                    }
                    Err(now) => held = now,
                }
            }
        }
        for other in self.others(own) {
            let held = other.allowance.swap(0, Ordering::Relaxed);
            own.allowance.fetch_add(held, Ordering::Relaxed);
        }
        take_from(&own.allowance, amount)
    }

    fn others<'a>(&'a self, own: &'a Shard) -> impl Iterator<Item = &'a Shard> + 'a {
        self.shards
            .iter()
            .filter(move |shard| !std::ptr::eq(*shard, own))
    }

    /// Corrects an earlier take by `delta`: a settled estimate, or a refund when negative.
    pub fn adjust(&self, delta: i64) {
        if delta != 0 {
            let own = self.shards.current();
            own.spent.fetch_add(delta, Ordering::Relaxed);
            own.allowance.fetch_sub(delta, Ordering::Relaxed);
        }
    }

    /// Spent since the last sync, by every worker.
    pub fn spent(&self) -> i64 {
        self.shards
            .iter()
            .map(|shard| shard.spent.load(Ordering::Relaxed))
            .sum()
    }

    /// Collects the spending since the last sync; it leaves the total with it.
    pub fn take_spent(&self) -> i64 {
        let spent = self
            .shards
            .iter()
            .map(|shard| shard.spent.swap(0, Ordering::Relaxed))
            .sum();
        self.cap.fetch_sub(spent, Ordering::Relaxed);
        spent
    }

    /// Puts spending collected by [`take_spent`](Self::take_spent) back, for the next sync.
    pub fn return_spent(&self, spent: i64) {
        self.cap.fetch_add(spent, Ordering::Relaxed);
        self.shards
            .current()
            .spent
            .fetch_add(spent, Ordering::Relaxed);
    }

    /// Makes the total `cap`: the allowance becomes `cap` less what was spent since the last
    /// sync, spending that lands meanwhile included.
    pub fn set_cap(&self, cap: i64) {
        let before = self.cap.swap(cap, Ordering::Relaxed);
        self.spread(cap - before);
    }

    /// Lowers the total by `amount` at once.
    pub fn cut(&self, amount: i64) {
        self.cap.fetch_sub(amount, Ordering::Relaxed);
        self.spread(-amount);
    }

    /// Adds `delta` to the allowance, shared evenly among the workers.
    fn spread(&self, delta: i64) {
        let shards = self.shards.workers() as i64;
        let (each, rest) = (delta / shards, delta % shards);
        for (index, shard) in self.shards.iter().enumerate() {
            let share = if index == 0 { each + rest } else { each };
            if share != 0 {
                shard.allowance.fetch_add(share, Ordering::Relaxed);
            }
        }
    }
}

/// Takes `amount` from `allowance` if it holds that much; a failed take puts it back.
fn take_from(allowance: &AtomicI64, amount: i64) -> bool {
    if allowance.fetch_sub(amount, Ordering::Relaxed) >= amount {
        return true;
    }
    allowance.fetch_add(amount, Ordering::Relaxed);
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::per_worker;

    fn shards(workers: usize, cap: i64) -> Allowance {
        Allowance::from_shards(PerWorker::for_workers(workers, |_| Shard::default()), cap)
    }

    fn allowances(allowance: &Allowance) -> Vec<i64> {
        allowance
            .shards
            .iter()
            .map(|shard| shard.allowance.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `f` as worker `index`.
    fn as_worker<R: Send>(index: usize, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    per_worker::enter(index);
                    f()
                })
                .join()
                .unwrap()
        })
    }

    #[test]
    fn the_cap_is_shared_evenly_and_taken_from_the_own_shard() {
        let allowance = shards(2, 11);
        assert_eq!(allowances(&allowance), [6, 5]);
        assert!(as_worker(1, || allowance.take(5)));
        assert_eq!(allowances(&allowance), [6, 0]);
        assert_eq!(allowance.spent(), 5);
    }

    #[test]
    fn a_short_shard_takes_half_of_another() {
        let allowance = shards(2, 40);
        assert!(as_worker(1, || allowance.take(20)));
        // Worker 1 is out: it takes its call and half of worker 0's 20.
        assert!(as_worker(1, || allowance.take(2)));
        assert_eq!(allowances(&allowance), [10, 8]);
        assert_eq!(allowance.spent(), 22);
    }

    #[test]
    fn a_call_larger_than_any_shard_gathers_them() {
        let allowance = shards(3, 30);
        assert!(as_worker(2, || allowance.take(25)));
        assert_eq!(allowances(&allowance), [0, 0, 5]);
        assert!(!as_worker(0, || allowance.take(6)), "only 5 are left");
        assert_eq!(allowances(&allowance), [5, 0, 0], "the rest, gathered");
        assert!(as_worker(0, || allowance.take(5)));
    }

    #[test]
    fn the_total_follows_syncs_and_cuts_without_touching_the_calls() {
        let allowance = shards(2, 10);
        assert!(as_worker(0, || allowance.take(4)));
        assert_eq!(allowance.take_spent(), 4);
        // Lease of 20, and 3 spent since the sync began.
        assert!(as_worker(1, || allowance.take(3)));
        allowance.set_cap(20);
        assert_eq!(allowances(&allowance).iter().sum::<i64>(), 17);
        allowance.cut(15);
        assert!(!as_worker(1, || allowance.take(3)));
        assert!(as_worker(1, || allowance.take(2)));
        // A failed sync keeps its spending for the next.
        let spent = allowance.take_spent();
        assert_eq!(spent, 5);
        allowance.return_spent(spent);
        assert_eq!(allowance.spent(), 5);
        allowance.set_cap(5);
        assert_eq!(allowances(&allowance).iter().sum::<i64>(), 0);
    }

    #[test]
    fn settling_corrects_the_own_shard() {
        let allowance = shards(2, 100);
        as_worker(1, || {
            assert!(allowance.take(30));
            allowance.adjust(-20);
        });
        assert_eq!(allowance.spent(), 10);
        assert_eq!(allowances(&allowance), [50, 40]);
    }

    #[test]
    fn concurrent_calls_never_take_more_than_the_cap() {
        let allowance = shards(4, 1_000);
        let taken: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|index| {
                    let allowance = &allowance;
                    scope.spawn(move || {
                        per_worker::enter(index);
                        (0..1_000).filter(|_| allowance.take(3)).count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(taken, 333);
        assert_eq!(allowance.spent(), 999);
    }
}
