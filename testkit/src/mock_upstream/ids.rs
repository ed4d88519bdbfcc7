//! Unique-looking ids without a random number generator on the request path: a per-instance
//! seed plus a counter, scrambled so consecutive ids do not look consecutive.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub(crate) struct Ids {
    seed: u64,
    counter: AtomicU64,
}

impl Ids {
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        // Mocks started in the same instant by one process still get different seeds.
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed) << 48;
        Self {
            seed: splitmix64(nanos ^ u64::from(std::process::id()) ^ instance),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        splitmix64(self.seed.wrapping_add(n))
    }

    /// A version-4-shaped UUID, as Azure uses for `x-request-id` and `apim-request-id`.
    pub fn uuid(&self) -> String {
        let (high, low) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0x0fff,
            ((low >> 48) & 0x3fff) | 0x8000,
            low & 0xffff_ffff_ffff,
        )
    }

    /// `{prefix}` followed by 24 hex digits, e.g. `chatcmpl-…`.
    pub fn completion_id(&self, prefix: &str) -> String {
        let mut id = String::with_capacity(prefix.len() + 24);
        id.push_str(prefix);
        let (high, low) = (self.next(), self.next());
        // Writing to a String cannot fail.
        let _ = write!(id, "{high:016x}{:08x}", low as u32);
        id
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn uuids_are_well_formed_and_distinct() {
        let ids = Ids::new();
        let uuids: HashSet<String> = (0..1000).map(|_| ids.uuid()).collect();
        assert_eq!(uuids.len(), 1000);
        for uuid in &uuids {
            let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
            assert_eq!(&uuid[14..15], "4");
        }
    }

    #[test]
    fn completion_ids_carry_the_prefix() {
        let id = Ids::new().completion_id("chatcmpl-");
        assert!(id.starts_with("chatcmpl-"));
        assert_eq!(id.len(), "chatcmpl-".len() + 24);
    }
}
