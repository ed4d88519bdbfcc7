//! Quotas over calendar periods and the rolling minute, in-process with an injected clock:
//! limits used up, then the clock moved to the next period's start, a sync round, and room
//! again; across a year end and a leap-year February. Then two proxies' worth of `Quotas`
//! and `QuotaSync` on one real Redis, holding a limit together.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_data_plane::clock::UnixTime;
use sluice_data_plane::metrics::ProxyMetrics;
use sluice_data_plane::quota::sync::{QuotaSync, Round};
use sluice_data_plane::quota::{
    Admitted, Demand, KeyRules, LimitKind, LocalCounts, Quotas, RedisCounts, Refused, SharedCounts,
};
use sluice_model::{ClientKey, KeyHash, Price};
use support::redis::RedisServer;

const POOL: &str = "gpt-4o";

/// Unix seconds of a UTC date and time (Howard Hinnant's `days_from_civil`).
fn utc(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    days * 86_400 + hour * 3600 + minute * 60 + second
}

fn at(secs: i64) -> UnixTime {
    UnixTime {
        secs,
        fraction: 0.0,
    }
}

fn key(id: &str, limits: Value) -> ClientKey {
    serde_json::from_value(json!({
        "id": id, "hash": KeyHash::new(id).to_string(), "limits": limits
    }))
    .unwrap()
}

fn tokens(n: u64) -> Demand {
    Demand { tokens: n, cost: 0 }
}

/// One proxy's worth of quota state: its counters, a key's rules, and its sync task (driven
/// by hand, at injected times).
struct Proxy {
    rules: Arc<KeyRules>,
    sync: QuotaSync,
    _quotas: Arc<Quotas>,
}

impl Proxy {
    fn new(store: Arc<dyn SharedCounts>, node: &str, key: &ClientKey, now: i64) -> Self {
        let quotas = Arc::new(Quotas::new(store.is_shared(), Duration::from_millis(100)));
        let rules = quotas.key_rules(key, at(now)).expect("the key has limits");
        let sync = QuotaSync::new(
            quotas.clone(),
            store,
            node.to_owned(),
            Duration::from_millis(100),
            Arc::new(ProxyMetrics::new()),
        );
        Self {
            rules,
            sync,
            _quotas: quotas,
        }
    }

    /// Alone, counting in the proxy.
    async fn alone(key: &ClientKey, now: i64) -> Self {
        let proxy = Self::new(Arc::new(LocalCounts::default()), "alone", key, now);
        proxy.round(now).await;
        proxy
    }

    async fn round(&self, now: i64) {
        assert_eq!(self.sync.round(at(now), true).await, Round::Synced);
    }

    fn admit(&self, demand: Demand, now: i64) -> Result<Admitted, Refused> {
        self.rules.admit(POOL, demand, None, at(now))
    }

    fn admit_priced(&self, demand: Demand, price: Price, now: i64) -> Result<Admitted, Refused> {
        self.rules.admit(POOL, demand, Some(price), at(now))
    }

    /// Calls of `demand` tokens, each settled to `used` tokens, until one is refused.
    fn use_up(&self, demand: u64, used: u64, now: i64) -> (u64, Refused) {
        let mut total = 0;
        loop {
            match self.admit(tokens(demand), now) {
                Ok(admitted) => {
                    admitted.settle(used, 0, 0);
                    total += used;
                }
                Err(refused) => return (total, refused),
            }
            assert!(total < 10_000_000, "never refused");
        }
    }
}

/// A monthly token quota used up on New Year's Eve is refused until the year turns, then
/// starts afresh at 2027-01-01T00:00Z.
#[tokio::test]
async fn a_monthly_token_quota_starts_afresh_in_january() {
    let quota = key(
        "month",
        json!({"token_quota": {"tokens": 1000, "period": "month"}}),
    );
    let eve = utc(2026, 12, 31, 23, 59, 0);
    let proxy = Proxy::alone(&quota, eve).await;
    let (used, refused) = proxy.use_up(250, 250, eve);
    assert_eq!(used, 1000);
    assert_eq!(refused.kind, LimitKind::TokenQuota);
    assert_eq!(refused.limit, 1000);
    assert_eq!(refused.wait, Duration::from_secs(60), "until midnight UTC");
    proxy.round(eve + 30).await;
    assert!(proxy.admit(tokens(1), eve + 59).is_err(), "still December");

    let new_year = utc(2027, 1, 1, 0, 0, 0);
    proxy.round(new_year).await;
    let (used, refused) = proxy.use_up(250, 250, new_year);
    assert_eq!(used, 1000, "the whole quota again");
    // January has 31 days.
    assert_eq!(refused.wait, Duration::from_secs(31 * 86_400));
}

/// February 2028 has 29 days: a monthly quota used up on the 28th is still used up on the
/// 29th, and back on March 1st.
#[tokio::test]
async fn a_monthly_quota_spans_a_leap_february() {
    let quota = key(
        "leap",
        json!({"token_quota": {"tokens": 500, "period": "month"}}),
    );
    let feb_28 = utc(2028, 2, 28, 12, 0, 0);
    let proxy = Proxy::alone(&quota, feb_28).await;
    let (used, refused) = proxy.use_up(100, 100, feb_28);
    assert_eq!(used, 500);
    assert_eq!(
        refused.wait,
        Duration::from_secs(36 * 3600),
        "the 28th's afternoon and the whole 29th"
    );
    let feb_29 = utc(2028, 2, 29, 0, 0, 0);
    proxy.round(feb_29).await;
    proxy.round(feb_29 + 3600).await;
    assert!(
        proxy.admit(tokens(1), feb_29 + 3600).is_err(),
        "the 29th is February"
    );
    let march = utc(2028, 3, 1, 0, 0, 0);
    proxy.round(march).await;
    let (used, _) = proxy.use_up(100, 100, march);
    assert_eq!(used, 500);
}

/// A daily budget, priced by the pool, runs out and is back at midnight UTC.
#[tokio::test]
async fn a_daily_budget_is_back_the_next_day() {
    let budget = key("daily", json!({"budget": {"usd": 0.01, "period": "day"}}));
    // $2.50 in and $10 out per million: 1,000 in and 500 out cost $0.0075.
    let price: Price =
        serde_json::from_value(json!({"input_per_1m_usd": 2.5, "output_per_1m_usd": 10})).unwrap();
    let call = Demand {
        tokens: 1500,
        cost: 7_500,
    };
    let evening = utc(2027, 3, 14, 23, 30, 0);
    let proxy = Proxy::alone(&budget, evening).await;
    proxy
        .admit_priced(call, price, evening)
        .unwrap()
        .settle(1000, 0, 500);
    let refused = proxy.admit_priced(call, price, evening + 1).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Budget);
    assert_eq!(refused.limit, 10_000, "micro-dollars");
    assert_eq!(refused.wait, Duration::from_secs(30 * 60 - 1));

    let midnight = utc(2027, 3, 15, 0, 0, 0);
    proxy.round(midnight).await;
    proxy
        .admit_priced(call, price, midnight)
        .expect("a new day's budget")
        .settle(1000, 0, 500);
    assert!(proxy.admit_priced(call, price, midnight + 1).is_err());
}

/// An hourly quota, and a weekly one (ISO weeks start on Monday), each back at the next
/// period's start and not a second before.
#[tokio::test]
async fn hourly_and_weekly_quotas_are_back_at_the_next_period() {
    let hourly = key(
        "hourly",
        json!({"token_quota": {"tokens": 100, "period": "hour"}}),
    );
    let before = utc(2027, 6, 1, 10, 59, 30);
    let proxy = Proxy::alone(&hourly, before).await;
    assert_eq!(proxy.use_up(40, 40, before).0, 80);
    proxy.round(before + 29).await;
    assert!(proxy.admit(tokens(40), before + 29).is_err());
    let eleven = utc(2027, 6, 1, 11, 0, 0);
    proxy.round(eleven).await;
    assert_eq!(proxy.use_up(40, 40, eleven).0, 80);

    let weekly = key(
        "weekly",
        json!({"token_quota": {"tokens": 100, "period": "week"}}),
    );
    // Sunday 2027-01-03 evening, then Monday 2027-01-04.
    let sunday = utc(2027, 1, 3, 23, 0, 0);
    let proxy = Proxy::alone(&weekly, sunday).await;
    let (_, refused) = proxy.use_up(100, 100, sunday);
    assert_eq!(refused.wait, Duration::from_secs(3600));
    let monday = utc(2027, 1, 4, 0, 0, 0);
    proxy.round(monday).await;
    assert_eq!(proxy.use_up(100, 100, monday).0, 100);
}

/// The rolling minute: 10 requests used at the start of a minute are all still counted at the
/// next minute's start, half of them 30 s into it, none a minute later; the proxy syncs every
/// second meanwhile, the way its sync task would (less often, but the same steps).
async fn rolling_minute_recovers(proxies: &[Proxy], start: i64) {
    let admit_all = |now: i64| -> usize {
        let mut admitted = 0;
        for proxy in proxies {
            while proxy.admit(tokens(0), now).is_ok() {
                admitted += 1;
                assert!(admitted <= 100, "never refused");
            }
        }
        admitted
    };
    let sync_until = |from: i64, to: i64| async move {
        for now in from..=to {
            for proxy in proxies {
                proxy.round(now).await;
            }
        }
    };
    sync_until(start, start + 1).await;
    let mut admitted = admit_all(start + 2);
    // Proxies sharing the limit need a few syncs to hand out its last units.
    for now in start + 3..start + 10 {
        sync_until(now, now).await;
        admitted += admit_all(now);
    }
    assert_eq!(admitted, 10, "the limit, in the first minute");
    sync_until(start + 10, start + 60).await;
    assert_eq!(
        admit_all(start + 60),
        0,
        "the previous minute counts in full"
    );
    sync_until(start + 61, start + 90).await;
    let mut half = admit_all(start + 90);
    for now in start + 91..start + 95 {
        sync_until(now, now).await;
        half += admit_all(now);
    }
    eprintln!("30 s into the next minute: {half} admitted of 10");
    // 95 s: 35 s into the minute, 10 × 25/60 of the previous one still counts (4).
    assert!(
        (5..=6).contains(&half),
        "half the previous minute has slid out: {half} admitted"
    );
}

#[tokio::test]
async fn a_rolling_minute_recovers_as_the_previous_minute_slides_out() {
    let rpm = key("rolling", json!({"requests_per_minute": 10}));
    let start = utc(2027, 6, 1, 10, 0, 0);
    let proxy = Proxy::alone(&rpm, start).await;
    rolling_minute_recovers(&[proxy], start).await;
}

/// `n` proxies (distinct nodes) on one Redis. Redis expires counts by its own clock: the
/// injected clock must not be in the past (see [`next_minute`]).
fn fleet_on(redis: &RedisServer, key: &ClientKey, now: i64, n: usize) -> Vec<Proxy> {
    (0..n)
        .map(|i| {
            let store: Arc<dyn SharedCounts> = Arc::new(RedisCounts::new(&[redis.url()]).unwrap());
            Proxy::new(store, &format!("node-{i}"), key, now)
        })
        .collect()
}

fn pair_on(redis: &RedisServer, key: &ClientKey, now: i64) -> Vec<Proxy> {
    fleet_on(redis, key, now, 2)
}

fn next_minute() -> i64 {
    let now = UnixTime::now().secs;
    now - now.rem_euclid(60) + 60
}

async fn sync_pair(pair: &[Proxy], now: i64) {
    for proxy in pair {
        proxy.round(now).await;
    }
}

#[tokio::test]
async fn two_proxies_on_redis_recover_as_the_previous_minute_slides_out() {
    let redis = RedisServer::start();
    let rpm = key("rolling-pair", json!({"requests_per_minute": 10}));
    let start = next_minute();
    let pair = pair_on(&redis, &rpm, start);
    rolling_minute_recovers(&pair, start).await;
}

/// Requests per minute on two proxies sharing Redis: together they admit the limit (±10%),
/// whichever proxy the calls reach.
#[tokio::test]
async fn two_proxies_on_redis_hold_a_request_limit_together() {
    let redis = RedisServer::start();
    let rpm = key("pair-rpm", json!({"requests_per_minute": 20}));
    let now = next_minute();
    let pair = pair_on(&redis, &rpm, now);
    sync_pair(&pair, now).await;
    sync_pair(&pair, now).await;
    let mut admitted = 0;
    // Ten sync rounds; calls on both proxies in between, until both refuse.
    for tick in 0..10 {
        for proxy in &pair {
            while proxy.admit(tokens(0), now + 1).is_ok() {
                admitted += 1;
            }
        }
        if tick < 9 {
            sync_pair(&pair, now + 1).await;
        }
    }
    eprintln!("requests_per_minute 20 on two proxies sharing Redis: admitted {admitted}");
    assert!((18..=22).contains(&admitted), "admitted {admitted} of 20");
    let total = redis.sum_of("{sluice:pair-rpm}:key:requests:minute:*");
    assert!(total >= admitted, "Redis counts {total}");
}

/// A monthly quota held by two proxies on Redis across the year end: what one used is
/// refused on the other; both start afresh in January.
#[tokio::test]
async fn two_proxies_on_redis_share_a_monthly_quota_across_the_year_end() {
    let redis = RedisServer::start();
    let quota = key(
        "pair-month",
        json!({"token_quota": {"tokens": 1000, "period": "month"}}),
    );
    // Redis must not expire December's count before the test reads it: stay in the future.
    let eve = utc(2031, 12, 31, 23, 50, 0);
    let pair = pair_on(&redis, &quota, eve);
    sync_pair(&pair, eve).await;
    // Proxy A uses 900 of the 1,000 in calls of 100.
    let mut used = 0;
    for tick in 0..20 {
        while used < 900 {
            match pair[0].admit(tokens(100), eve + tick) {
                Ok(admitted) => {
                    admitted.settle(100, 0, 0);
                    used += 100;
                }
                Err(_) => break,
            }
        }
        sync_pair(&pair, eve + tick).await;
    }
    assert_eq!(used, 900, "proxy A took leases until it had what it needed");
    sync_pair(&pair, eve + 30).await;
    // Proxy B knows: a call of 200 does not fit.
    let refused = pair[1].admit(tokens(200), eve + 31).unwrap_err();
    assert_eq!(refused.kind, LimitKind::TokenQuota);
    assert_eq!(refused.wait, Duration::from_secs(10 * 60 - 31));
    // January: every proxy starts with a sliver (both went idle in December), its first call
    // makes it lease, and the month's quota is all there again.
    let january = utc(2032, 1, 1, 0, 0, 0);
    sync_pair(&pair, january).await;
    for proxy in &pair {
        proxy
            .admit(tokens(40), january)
            .expect("a new month on every proxy")
            .settle(40, 0, 0);
    }
    let mut used = 80;
    for tick in 1..20 {
        sync_pair(&pair, january + tick).await;
        for proxy in &pair {
            while let Ok(admitted) = proxy.admit(tokens(40), january + tick) {
                admitted.settle(40, 0, 0);
                used += 40;
            }
        }
    }
    assert_eq!(used, 1000, "January's quota, in calls of 40");
}

/// Tokens per minute on three proxies sharing Redis, in calls whose estimate (26 tokens) is
/// larger than what they use (11): the proxies go on admitting until the limit is nearly used
/// up, not only until each one's lease is smaller than one call's estimate.
#[tokio::test]
async fn three_proxies_on_redis_use_up_a_token_limit_in_calls_larger_than_a_lease() {
    let redis = RedisServer::start();
    let tpm = key("three-tpm", json!({"tokens_per_minute": 180}));
    let now = next_minute();
    let fleet = fleet_on(&redis, &tpm, now, 3);
    // Idle but recently set up: the proxies sync and settle their leases.
    for _ in 0..5 {
        sync_pair(&fleet, now).await;
    }
    let mut used = 0;
    for _ in 0..20 {
        for proxy in &fleet {
            while let Ok(admitted) = proxy.admit(tokens(26), now + 1) {
                admitted.settle(6, 0, 5);
                used += 11;
            }
        }
        sync_pair(&fleet, now + 1).await;
    }
    eprintln!(
        "tokens_per_minute 180 on three proxies sharing Redis, calls holding 26 and using 11, 20 syncs: {used} tokens admitted"
    );
    assert!(used <= 198, "{used} tokens of 180");
    // A call fits while its estimate is left beside the other two proxies' leases (at least one
    // token each): at least 180 - 26 - 2 are used before none fits.
    assert!(
        used >= 152,
        "the limiter stopped with {} tokens left: {used} used",
        180 - used
    );
}

/// A proxy whose limit went idle keeps only a sliver of it (a tenth of its share); a call
/// larger than the sliver is refused at first, but the proxy then leases what is left and the
/// call goes through on a retry.
#[tokio::test]
async fn an_idle_limit_on_redis_admits_a_call_larger_than_its_sliver() {
    let redis = RedisServer::start();
    let tpm = key("idle-tpm", json!({"tokens_per_minute": 1000}));
    let now = next_minute();
    let proxy = fleet_on(&redis, &tpm, now, 1).remove(0);
    proxy
        .admit(tokens(50), now)
        .expect("a first call")
        .settle(50, 0, 0);
    // Twelve seconds of syncs without a call: the limit is idle.
    for second in 0..=12 {
        proxy.round(now + second).await;
    }
    let mut admitted_at = None;
    for second in 13..20 {
        if proxy.admit(tokens(200), now + second).is_ok() {
            admitted_at = Some(second);
            break;
        }
        proxy.round(now + second).await;
    }
    assert!(
        admitted_at.is_some(),
        "a call of 200 with 950 of 1000 left is refused for good"
    );
}
