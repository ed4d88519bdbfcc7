//! Quotas and rate limits per client key: requests and tokens per rolling minute, tokens and
//! money per calendar period, key-wide and per pool.
//!
//! The request path decides from this proxy's own atomics ([`counter`]); a background task
//! ([`sync`]) settles with the fleet through the shared store ([`store`]) every few hundred
//! milliseconds, so the store's load grows with proxies × active limits, never with requests.

mod counter;
mod estimate;
mod rate_headers;
pub mod store;
pub mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::HeaderMap;
pub use sluice_model::LimitKind;
use sluice_model::windows::{Metric, Window, counter_key};
use sluice_model::{ClientKey, LimitEntry, LimitSet, Name, Price};

pub use counter::Counter;
pub use estimate::Estimate;
use rate_headers::{LimitValue, RateSnapshot};
pub use rate_headers::{RATE_HEADERS, go_duration};
pub use store::{LocalCounts, RedisCounts, SharedCounts};

use crate::clock::UnixTime;

/// A counter's identity: the same limit keeps its count across config revisions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CounterId {
    key: Name,
    pool: Option<Name>,
    kind: LimitKind,
    window: Window,
}

impl CounterId {
    fn store_key(&self, window_start: i64) -> String {
        counter_key(
            self.key.as_str(),
            self.pool.as_ref().map(Name::as_str),
            self.kind.metric(),
            self.window,
            window_start,
        )
    }
}

#[derive(Clone)]
pub struct Rule {
    pub kind: LimitKind,
    pub counter: Arc<Counter>,
    limit_value: LimitValue,
}

impl Rule {
    pub fn new(kind: LimitKind, counter: Arc<Counter>) -> Self {
        Self {
            kind,
            limit_value: LimitValue::new(counter.limit()),
            counter,
        }
    }
}

/// The rules of one client key, resolved to their counters when a config is applied.
#[derive(Clone)]
pub struct KeyRules {
    pub key: Name,
    key_wide: Vec<Rule>,
    pools: Vec<(Name, Vec<Rule>)>,
    /// A refused call waits at least this long: room a proxy lacks may come with its next
    /// lease, one sync away.
    min_wait: Duration,
}

/// What a call is expected to consume, held back before it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    pub tokens: u64,
    /// Micro-dollars.
    pub cost: u64,
}

/// A call let through: what it holds of each limit until it is settled.
pub struct Admitted {
    rules: Arc<KeyRules>,
    pool: Option<usize>,
    held: Demand,
    price: Option<Price>,
    /// The per-minute limits as the call was admitted, for its response's headers.
    told: RateSnapshot,
}

/// A call refused: which limit, and when to come back.
#[derive(Debug)]
pub struct Refused {
    pub kind: LimitKind,
    pub pool: Option<Name>,
    pub limit: u64,
    /// What the call asked for of that limit.
    pub requested: u64,
    pub wait: Duration,
}

impl Refused {
    /// The call alone is over the limit: no wait makes it fit.
    pub fn too_large(&self) -> bool {
        self.requested > self.limit
    }
}

impl KeyRules {
    fn pool_rules(&self, pool: Option<usize>) -> &[Rule] {
        pool.map_or(&[], |index| &self.pools[index].1)
    }

    fn rules_for<'a>(&'a self, pool: Option<usize>) -> impl Iterator<Item = &'a Rule> + Clone + 'a {
        self.key_wide.iter().chain(self.pool_rules(pool))
    }

    fn pool_index(&self, pool: &str) -> Option<usize> {
        self.pools
            .iter()
            .position(|(name, _)| name.as_str() == pool)
    }

    /// Whether any limit on `pool` counts tokens or money, so the call needs an estimate.
    pub fn counts_tokens(&self, pool: &str) -> bool {
        self.rules_for(self.pool_index(pool))
            .any(|rule| rule.kind.metric() != Metric::Requests)
    }

    /// Takes one request and `demand` from every limit on `pool`, or nothing at all.
    pub fn admit(
        self: &Arc<Self>,
        pool: &str,
        demand: Demand,
        price: Option<Price>,
        now: UnixTime,
    ) -> Result<Admitted, Refused> {
        let index = self.pool_index(pool);
        for (taken, rule) in self.rules_for(index).enumerate() {
            let amount = amount(rule.kind, demand);
            if !rule.counter.try_take(amount, now.secs) {
                for earlier in self.rules_for(index).take(taken) {
                    earlier.counter.adjust(-amount_i64(earlier.kind, demand));
                }
                return Err(Refused {
                    kind: rule.kind,
                    pool: index
                        .filter(|_| taken >= self.key_wide.len())
                        .map(|index| self.pools[index].0.clone()),
                    limit: rule.counter.limit(),
                    requested: amount,
                    wait: rule
                        .counter
                        .wait_for(amount, now.secs, now.fraction)
                        .max(self.min_wait),
                });
            }
        }
        Ok(Admitted {
            rules: self.clone(),
            pool: index,
            held: demand,
            price,
            told: RateSnapshot::read(self.rules_for(index), |counter| {
                counter.used_after_take(now.secs)
            }),
        })
    }
}

fn amount(kind: LimitKind, demand: Demand) -> u64 {
    match kind.metric() {
        Metric::Requests => 1,
        Metric::Tokens => demand.tokens,
        Metric::Cost => demand.cost,
    }
}

fn amount_i64(kind: LimitKind, demand: Demand) -> i64 {
    i64::try_from(amount(kind, demand)).unwrap_or(i64::MAX)
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("key", &self.rules.key)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl Admitted {
    /// Replaces the estimate with what the backend reported (`input`, of which `cached` came
    /// from the prompt cache, and `output` tokens). Charged by this worker's next call or the
    /// next sync (`Counter::settle_later`): the call is over, and nothing waits on it.
    pub fn settle(&self, input: u64, cached: u64, output: u64) {
        let actual = Demand {
            tokens: input + output,
            cost: self
                .price
                .map_or(0, |price| price.cost(input, cached, output).micros()),
        };
        self.correct(actual, Counter::settle_later);
    }

    /// Gives the estimate back at once: nothing was consumed (no backend answered, or it
    /// refused), and a client retrying at once should find the room.
    pub fn refund(&self) {
        self.correct(Demand::default(), Counter::adjust);
    }

    fn correct(&self, actual: Demand, apply: impl Fn(&Counter, i64)) {
        for rule in self.rules.rules_for(self.pool) {
            if rule.kind.metric() != Metric::Requests {
                apply(
                    &rule.counter,
                    amount_i64(rule.kind, actual) - amount_i64(rule.kind, self.held),
                );
            }
        }
    }

    /// OpenAI's `x-ratelimit-*` headers, from the tightest per-minute limits that apply, as
    /// they stood when the call was admitted.
    pub fn headers(&self, headers: &mut HeaderMap) {
        self.told.insert(headers, self.rules.rules_for(self.pool));
    }

    /// The same headers as the limits stand at `now` (after a refund, say).
    pub fn headers_now(&self, headers: &mut HeaderMap, now: UnixTime) {
        rate_headers::insert(headers, self.rules.rules_for(self.pool), now);
    }
}

/// The headers for a key whose call was refused or failed before it was admitted.
pub fn headers_for(rules: &KeyRules, pool: &str, headers: &mut HeaderMap, now: UnixTime) {
    rate_headers::insert(headers, rules.rules_for(rules.pool_index(pool)), now);
}

/// Every counter of the proxy's lifetime, by identity; rules hold them, the sync task walks
/// them. Entries die with the last config that used them.
pub struct Quotas {
    counters: Mutex<HashMap<CounterId, Weak<Counter>>>,
    /// Counts are shared with other proxies (a Redis is configured).
    shared: bool,
    /// Live proxies at the last sync: a new limit starts with its share under that many.
    proxies: std::sync::atomic::AtomicU32,
    sync_interval: Duration,
}

impl Quotas {
    pub fn new(shared: bool, sync_interval: Duration) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            shared,
            proxies: std::sync::atomic::AtomicU32::new(1),
            sync_interval,
        }
    }

    /// The rules of `key`, with counters kept from earlier configs; `None` without limits.
    pub fn key_rules(&self, key: &ClientKey, now: UnixTime) -> Option<Arc<KeyRules>> {
        if key.limits.is_empty() {
            return None;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut rules = |pool: Option<&Name>, set: &LimitSet| -> Vec<Rule> {
            set.entries()
                .map(
                    |LimitEntry {
                         kind,
                         window,
                         limit,
                     }| {
                        let id = CounterId {
                            key: key.id.clone(),
                            pool: pool.cloned(),
                            kind,
                            window,
                        };
                        let counter = match counters.get(&id).and_then(Weak::upgrade) {
                            Some(counter) => {
                                counter.set_limit(limit);
                                counter
                            }
                            None => {
                                let counter = Arc::new(Counter::new(
                                    window,
                                    limit,
                                    now.secs,
                                    self.first_allowance(limit),
                                ));
                                counters.insert(id, Arc::downgrade(&counter));
                                counter
                            }
                        };
                        Rule::new(kind, counter)
                    },
                )
                .collect()
        };
        let key_wide = rules(None, &key.limits.key_wide());
        let pools = key
            .limits
            .pools
            .iter()
            .map(|(pool, set)| (pool.clone(), rules(Some(pool), set)))
            .collect();
        Some(Arc::new(KeyRules {
            key: key.id.clone(),
            key_wide,
            pools,
            min_wait: self.sync_interval,
        }))
    }

    /// What a proxy may admit on a limit before its first sync. Alone, all of it. In a fleet,
    /// a tenth of its share: it cannot know what the others used already (it may have just
    /// restarted), and the first sync, a moment later, gives it its real share.
    pub(crate) fn first_allowance(&self, limit: u64) -> u64 {
        if !self.shared {
            return limit;
        }
        let proxies = u64::from(
            self.proxies
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(1),
        );
        (limit / proxies / 10).max(1).min(limit)
    }

    /// The live counters with their identities; forgets the dead.
    fn live(&self) -> Vec<(CounterId, Arc<Counter>)> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|_, counter| counter.strong_count() > 0);
        counters
            .iter()
            .filter_map(|(id, counter)| Some((id.clone(), counter.upgrade()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(limits: serde_json::Value) -> ClientKey {
        serde_json::from_value(json!({
            "id": "team-a", "hash": sluice_model::KeyHash::new("k").to_string(), "limits": limits
        }))
        .unwrap()
    }

    const NOW: UnixTime = UnixTime {
        secs: 1_796_276_700,
        fraction: 0.0,
    };

    #[test]
    fn admits_all_or_nothing_and_names_the_limit_hit() {
        let quotas = Quotas::new(false, Duration::from_millis(100));
        let rules = quotas
            .key_rules(
                &key(
                    json!({"requests_per_minute": 100, "tokens_per_minute": 1000,
                            "pools": {"gpt-4o": {"tokens_per_minute": 300}}}),
                ),
                NOW,
            )
            .unwrap();
        assert!(rules.counts_tokens("gpt-4o"));
        let demand = Demand {
            tokens: 200,
            cost: 0,
        };
        let first = rules.admit("gpt-4o", demand, None, NOW).unwrap();
        let Err(refused) = rules.admit("gpt-4o", demand, None, NOW) else {
            panic!("over the pool's limit")
        };
        assert_eq!(refused.kind, LimitKind::TokensPerMinute);
        assert_eq!(refused.pool.as_ref().map(Name::as_str), Some("gpt-4o"));
        assert_eq!((refused.limit, refused.requested), (300, 200));
        assert!(!refused.too_large());
        assert!(
            refused.wait >= Duration::from_millis(100),
            "at least until the next lease"
        );
        let Err(huge) = rules.admit(
            "gpt-4o",
            Demand {
                tokens: 301,
                cost: 0,
            },
            None,
            NOW,
        ) else {
            panic!("over the pool's limit on its own")
        };
        assert!(huge.too_large());
        // Nothing of the refused call stays taken: the key-wide limits saw one call.
        assert_eq!(rules.key_wide[0].counter.used(NOW.secs), 1);
        assert_eq!(rules.key_wide[1].counter.used(NOW.secs), 200);
        // Another pool only meets the key-wide limits.
        rules.admit("other", demand, None, NOW).unwrap();
        // Settling with the real count gives back what the estimate over-held.
        first.settle(40, 0, 10);
        assert_eq!(rules.pools[0].1[0].counter.used(NOW.secs), 50);
        rules.admit("gpt-4o", demand, None, NOW).unwrap().refund();
        assert_eq!(rules.pools[0].1[0].counter.used(NOW.secs), 50);
    }

    #[test]
    fn budgets_count_money_from_the_pool_price() {
        let quotas = Quotas::new(false, Duration::from_millis(100));
        let rules = quotas
            .key_rules(
                &key(json!({"budget": {"usd": 0.01, "period": "month"}})),
                NOW,
            )
            .unwrap();
        let price: Price =
            serde_json::from_value(json!({"input_per_1m_usd": 2.5, "output_per_1m_usd": 10}))
                .unwrap();
        let call = || {
            let demand = Demand {
                tokens: 1000,
                cost: 5_000,
            };
            rules.admit("gpt-4o", demand, Some(price), NOW)
        };
        let admitted = call().unwrap();
        // 1,000 in and 500 out: $0.0025 + $0.005.
        admitted.settle(1000, 0, 500);
        assert_eq!(rules.key_wide[0].counter.used(NOW.secs), 7_500);
        let refused = call().unwrap_err();
        assert_eq!(refused.kind, LimitKind::Budget);
        assert!(refused.kind.is_quota());
    }

    #[test]
    fn counters_outlive_config_revisions_and_take_new_limits() {
        let quotas = Quotas::new(false, Duration::from_millis(100));
        let first = quotas
            .key_rules(&key(json!({"requests_per_minute": 5})), NOW)
            .unwrap();
        let earlier: Vec<_> = (0..3)
            .map(|_| first.admit("p", Demand::default(), None, NOW).unwrap())
            .collect();
        let second = quotas
            .key_rules(&key(json!({"requests_per_minute": 4})), NOW)
            .unwrap();
        assert!(Arc::ptr_eq(
            &first.key_wide[0].counter,
            &second.key_wide[0].counter
        ));
        let admitted = second.admit("p", Demand::default(), None, NOW).unwrap();
        assert!(second.admit("p", Demand::default(), None, NOW).is_err());
        // A call tells its limits' use when it was admitted, against the limits now.
        let told = |call: &Admitted, now: Option<UnixTime>| {
            let mut headers = HeaderMap::new();
            match now {
                None => call.headers(&mut headers),
                Some(now) => call.headers_now(&mut headers, now),
            }
            ["limit", "remaining", "reset"]
                .map(|part| headers[format!("x-ratelimit-{part}-requests")].clone())
        };
        assert_eq!(told(&earlier[0], None), ["4", "3", "15s"]);
        assert_eq!(told(&admitted, None), ["4", "0", "1m0s"]);
        assert_eq!(told(&earlier[0], Some(NOW)), ["4", "0", "1m0s"]);
        drop((first, second, earlier, admitted));
        assert!(quotas.live().is_empty());
        assert!(quotas.key_rules(&key(json!({})), NOW).is_none());
    }

    #[test]
    fn a_fleet_proxy_starts_with_a_fraction_of_its_share() {
        let quotas = Quotas::new(true, Duration::from_millis(100));
        quotas
            .proxies
            .store(3, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(quotas.first_allowance(300), 10);
        assert_eq!(quotas.first_allowance(30), 1);
        assert_eq!(
            Quotas::new(false, Duration::from_millis(100)).first_allowance(30),
            30
        );
    }
}
