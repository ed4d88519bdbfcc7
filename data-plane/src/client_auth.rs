//! Client keys: which key a request presents and whether it is one of ours.

use std::collections::HashMap;

use std::sync::Arc;

use arc_swap::ArcSwap;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName};
use sluice_model::ClientKey;

use crate::per_worker::PerWorker;
use crate::quota::KeyRules;

static API_KEY: HeaderName = HeaderName::from_static("api-key");

/// The key in `api-key`, or else in `Authorization: Bearer`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get(&API_KEY).and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    let authorization = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// The client keys of one config revision.
///
/// Keys are stored as salted hashes, so checking one costs a SHA-256 per configured key.
/// Keys that verified once are remembered (only valid ones, so the memo is bounded by the
/// number of keys); it is dropped with the config revision it belongs to. The memo is read on
/// every request by every core, so it is copy-on-write rather than behind a lock: each key is
/// added once, read lock-free ever after.
#[derive(Default)]
pub struct ClientKeys {
    keys: Vec<Caller>,
    /// Looked up with what clients send, but only keys that verified are put in (no client
    /// can fill it), so the fast hasher is safe here.
    verified: ArcSwap<HashMap<Box<str>, usize, foldhash::fast::RandomState>>,
}

/// A client key of the config, with its limits resolved to their counters.
pub struct Caller {
    pub key: ClientKey,
    /// The key's position in the config, which indexes its usage cells in each pool; the
    /// slot after the last key is the anonymous clients'.
    pub slot: usize,
    /// `None` for a key without limits. A copy per worker: each call holds its key's rules,
    /// and one reference count that every worker writes would cost each call a cache miss.
    rules: Option<PerWorker<Arc<KeyRules>>>,
}

impl Caller {
    /// The key's limits, `None` without.
    pub fn rules(&self) -> Option<&Arc<KeyRules>> {
        self.rules.as_ref().map(PerWorker::current)
    }
}

impl ClientKeys {
    pub fn new(keys: Vec<ClientKey>, rules: impl Fn(&ClientKey) -> Option<Arc<KeyRules>>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .enumerate()
                .map(|(slot, key)| Caller {
                    rules: rules(&key)
                        .map(|rules| PerWorker::new(|_| Arc::new(KeyRules::clone(&rules)))),
                    slot,
                    key,
                })
                .collect(),
            verified: ArcSwap::default(),
        }
    }

    /// The usage slot of clients without a key (`--allow-anonymous`).
    pub fn anonymous_slot(&self) -> usize {
        self.keys.len()
    }

    pub fn authenticate(&self, presented: &str) -> Option<&Caller> {
        if presented.is_empty() {
            return None;
        }
        if let Some(&index) = self.verified.load().get(presented) {
            return self.keys.get(index);
        }
        let index = self
            .keys
            .iter()
            .position(|caller| caller.key.hash.verify(presented))?;
        self.verified.rcu(|verified| {
            let mut verified = HashMap::clone(verified);
            verified.insert(presented.into(), index);
            verified
        });
        self.keys.get(index)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use sluice_model::KeyHash;

    use super::*;

    fn keys() -> ClientKeys {
        ClientKeys::new(
            vec![
                ClientKey {
                    id: "a".parse().unwrap(),
                    pools: vec![],
                    hash: KeyHash::new("key-a"),
                    limits: Default::default(),
                },
                ClientKey {
                    id: "b".parse().unwrap(),
                    pools: vec![],
                    hash: KeyHash::new("key-b"),
                    limits: Default::default(),
                },
            ],
            |_| None,
        )
    }

    #[test]
    fn verifies_keys_and_remembers_good_ones() {
        let keys = keys();
        for _ in 0..2 {
            assert_eq!(keys.authenticate("key-b").unwrap().key.id.as_str(), "b");
        }
        assert!(keys.authenticate("key-c").is_none());
        assert!(keys.authenticate("").is_none());
        assert_eq!(
            keys.verified.load().len(),
            1,
            "only valid keys are remembered"
        );
    }

    #[test]
    fn reads_api_key_or_bearer() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-1"));
        assert_eq!(presented_key(&headers), Some("sk-1"));
        headers.insert("api-key", HeaderValue::from_static("sk-2"));
        assert_eq!(
            presented_key(&headers),
            Some("sk-2"),
            "api-key wins, as in Azure"
        );
        headers.remove("api-key");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&headers), None);
    }
}
