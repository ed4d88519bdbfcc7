//! Unpredictable identifiers (token suffixes, secret versions) without a random-number crate:
//! std's `RandomState` is seeded from the OS once per thread and re-keyed on every `new()`.
//! Not for cryptography; it only has to make ids unguessable across runs and distinct
//! within one.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};

pub(crate) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

/// `digits` lowercase hex digits (a multiple of 16 gives whole words of randomness).
pub(crate) fn random_hex(digits: usize) -> String {
    let mut hex = String::with_capacity(digits + 16);
    while hex.len() < digits {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{:016x}", random_u64());
    }
    hex.truncate(digits);
    hex
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn hex_ids_have_the_length_asked_and_differ() {
        let ids: HashSet<String> = (0..500).map(|_| random_hex(32)).collect();
        assert_eq!(ids.len(), 500);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        assert_eq!(random_hex(5).len(), 5);
    }
}
