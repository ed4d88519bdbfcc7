//! State kept once per proxy worker (a thread with its own runtime) instead of once per
//! process. A value every call writes, on a cache line all workers share, costs each call a
//! transfer of that line between cores; one copy per worker, each on its own lines, does not.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// The worker this thread serves as; 0 on every other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers serve in this process (the most any of its proxies runs).
static WORKERS: AtomicUsize = AtomicUsize::new(1);

/// Says how many workers a proxy of this process runs, before it applies a config.
pub fn declare_workers(count: usize) {
    WORKERS.fetch_max(count, Ordering::Relaxed);
}

/// Marks the calling thread as worker `index`.
pub fn enter(index: usize) {
    INDEX.set(index);
}

/// One `T` per worker, each on cache lines of its own.
#[derive(Clone)]
pub struct PerWorker<T> {
    slots: Box<[Padded<T>]>,
}

/// Two lines: adjacent-line prefetch pulls in pairs of 64-byte lines.
#[derive(Clone)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    /// One value per declared worker, each made by `make` from the number of workers.
    pub fn new(make: impl Fn(usize) -> T) -> Self {
        Self::for_workers(WORKERS.load(Ordering::Relaxed), make)
    }

    pub(crate) fn for_workers(workers: usize, make: impl Fn(usize) -> T) -> Self {
        let workers = workers.max(1);
        Self {
            slots: (0..workers).map(|_| Padded(make(workers))).collect(),
        }
    }

    /// The calling worker's value (a worker beyond those declared shares another's).
    #[inline]
    pub fn current(&self) -> &T {
        let index = INDEX.get();
        // A division only off the busy path: calls run on the declared workers.
        match self.slots.get(index) {
            Some(slot) => &slot.0,
            None => &self.slots[index % self.slots.len()].0,
        }
    }

    /// Every worker's value, the first worker's first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &slot.0)
    }
}

/// Equal when every worker's value is: copies made from one value compare equal.
impl<T: PartialEq> PartialEq for PerWorker<T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for PerWorker<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for PerWorker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_thread_gets_its_own_value() {
        let values = PerWorker::for_workers(3, |workers| AtomicUsize::new(workers * 10));
        std::thread::scope(|scope| {
            for index in 0..3 {
                let values = &values;
                scope.spawn(move || {
                    enter(index);
                    values.current().fetch_add(index, Ordering::Relaxed);
                });
            }
        });
        let seen: Vec<usize> = values
            .slots
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(seen, [30, 31, 32]);
    }

    #[test]
    fn threads_outside_the_workers_share_the_first_slots() {
        let values = PerWorker::for_workers(2, |_| 0u8);
        let address = |value: &u8| std::ptr::from_ref(value) as usize;
        let first = address(values.current());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                enter(2);
                assert_eq!(address(values.current()), first);
                enter(3);
                assert_ne!(address(values.current()), first);
            });
        });
    }

    #[test]
    fn no_workers_still_means_one_slot() {
        let values = PerWorker::for_workers(0, |workers| workers);
        assert_eq!(*values.current(), 1);
    }

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
    }
}
