//! Random draws for trace ids and sampling decisions. Neither is a secret, so they come from
//! a small fast generator per thread, seeded from the OS, as the OpenTelemetry SDK draws its
//! span ids. `rand::random` runs ChaCha12: its three draws for an unsampled request cost
//! about 190 instructions (callgrind).

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
}
