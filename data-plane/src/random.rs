//! Random draws on the request path: trace ids, sampling decisions, the two backends a
//! least-loaded pick compares. None is a secret, so they come from a small fast generator per
//! thread, seeded from the OS, as the OpenTelemetry SDK draws its span ids. `rand::random` runs
//! ChaCha12: its three draws for an unsampled request cost about 190 instructions (callgrind).

use std::cell::RefCell;

use rand::distr::{Distribution, StandardUniform};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

thread_local! {
    static GENERATOR: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// A uniformly random value of `T`.
pub fn draw<T>() -> T
where
    StandardUniform: Distribution<T>,
{
    GENERATOR.with(|generator| generator.borrow_mut().random())
}

/// A uniformly random index below `bound`, which must not be 0.
pub fn below(bound: usize) -> usize {
    GENERATOR.with(|generator| generator.borrow_mut().random_range(0..bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_within_and_across_threads() {
        let here: Vec<u128> = (0..4).map(|_| draw()).collect();
        let there: Vec<u128> = std::thread::spawn(|| (0..4).map(|_| draw()).collect())
            .join()
            .unwrap();
        let mut all = [here, there].concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8, "every thread is seeded on its own");
    }

    #[test]
    fn an_index_below_its_bound_reaches_every_value() {
        let mut seen = [false; 3];
        for _ in 0..300 {
            seen[below(3)] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(below(1), 0);
    }
}
