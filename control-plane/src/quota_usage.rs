//! A client key's consumption now, for `GET /api/v1/keys/{id}/usage`: each limit's window,
//! what the fleet used of it, what is left and when it resets.
//!
//! With a shared Redis the counts are the fleet's, read from the same counters the proxies
//! lease from (so "used" includes room leased to proxies and not spent yet: at most one sync
//! interval's worth). Without one, each proxy counts alone and the control plane has no
//! numbers: the report says so and gives the windows only.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use sluice_model::windows::{Metric, Window, counter_key};
use sluice_model::{ClientKey, LimitEntry, LimitKind, MicroUsd, Name};
use utoipa::ToSchema;

/// How long a usage read may wait on Redis.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyUsage {
    pub key: String,
    /// `fleet`: counts shared by every proxy through Redis; `per_proxy`: each proxy counts
    /// alone (no Redis configured), so no fleet-wide numbers exist.
    pub scope: Scope,
    pub limits: Vec<LimitUsage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Fleet,
    PerProxy,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitUsage {
    pub limit: LimitKind,
    /// The pool the limit is scoped to; absent for key-wide limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// `requests`, `tokens` or `usd`.
    pub unit: &'static str,
    /// `minute` (rolling) or the calendar period: `hour`, `day`, `week`, `month`.
    pub window: &'static str,
    /// When the window began (RFC 3339, UTC); for the rolling minute, the current whole minute.
    pub window_start: String,
    /// When the window starts afresh (RFC 3339, UTC).
    pub resets_at: String,
    pub allowed: f64,
    /// Absent when each proxy counts alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("the quota store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the quota store did not answer within {0:?}")]
    Timeout(Duration),
}

/// Reads the fleet's counts from Redis (standalone; the control plane reads one node).
pub struct UsageReader {
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
}

impl UsageReader {
    pub fn new(url: &str) -> Result<Self, UsageError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: tokio::sync::OnceCell::new(),
        })
    }

    /// The counts of `keys` (missing ones are 0).
    async fn read(&self, keys: &[String]) -> Result<Vec<u64>, UsageError> {
        let read = async {
            let connection = self
                .connection
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(READ_TIMEOUT))
                        .set_response_timeout(Some(READ_TIMEOUT));
                    ConnectionManager::new_with_config(self.client.clone(), config).await
                })
                .await?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let counts: Vec<Option<i64>> = redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut connection.clone())
                .await?;
            Ok(counts
                .into_iter()
                .map(|count| u64::try_from(count.unwrap_or(0)).unwrap_or(0))
                .collect())
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .unwrap_or(Err(UsageError::Timeout(READ_TIMEOUT)))
    }

    /// `key`'s usage at `now_secs`, read from the fleet's counters.
    pub async fn fleet_usage(
        &self,
        key: &ClientKey,
        now_secs: i64,
    ) -> Result<KeyUsage, UsageError> {
        let entries = key.limits.entries();
        // Per limit: the current window's counter, and the previous minute's for rolling ones.
        let mut keys = Vec::with_capacity(entries.len() * 2);
        for (pool, entry) in &entries {
            let (start, _) = entry.window.bounds(now_secs);
            let counter = |start| {
                counter_key(
                    key.id.as_str(),
                    pool.map(Name::as_str),
                    entry.kind.metric(),
                    entry.window,
                    start,
                )
            };
            keys.push(counter(start));
            keys.push(counter(start - 60));
        }
        let counts = self.read(&keys).await?;
        let limits = entries
            .iter()
            .zip(counts.chunks(2))
            .map(|((pool, entry), counts)| {
                let used = used_now(entry, counts[0], counts[1], now_secs);
                limit_usage(*pool, entry, now_secs, Some(used))
            })
            .collect();
        Ok(KeyUsage {
            key: key.id.to_string(),
            scope: Scope::Fleet,
            limits,
        })
    }
}

/// The windows of `key`'s limits, without numbers: each proxy counts alone.
pub fn per_proxy_usage(key: &ClientKey, now_secs: i64) -> KeyUsage {
    KeyUsage {
        key: key.id.to_string(),
        scope: Scope::PerProxy,
        limits: key
            .limits
            .entries()
            .iter()
            .map(|(pool, entry)| limit_usage(*pool, entry, now_secs, None))
            .collect(),
    }
}

/// The rolling minute weighs the previous minute by how much of it is still within the last
/// 60 s, as the proxies do; a period's count is its own.
fn used_now(entry: &LimitEntry, current: u64, previous: u64, now_secs: i64) -> u64 {
    match entry.window {
        Window::Minute => {
            let (start, _) = entry.window.bounds(now_secs);
            let elapsed = (now_secs - start).clamp(0, 60) as u64;
            current + previous * (60 - elapsed) / 60
        }
        Window::Period(_) => current,
    }
}

fn limit_usage(
    pool: Option<&Name>,
    entry: &LimitEntry,
    now_secs: i64,
    used: Option<u64>,
) -> LimitUsage {
    let (start, end) = entry.window.bounds(now_secs);
    let (unit, amount): (&'static str, fn(u64) -> f64) = match entry.kind.metric() {
        Metric::Requests => ("requests", |n| n as f64),
        Metric::Tokens => ("tokens", |n| n as f64),
        Metric::Cost => ("usd", |micros| MicroUsd::from_micros(micros).as_usd()),
    };
    LimitUsage {
        limit: entry.kind,
        pool: pool.map(ToString::to_string),
        unit,
        window: entry.window.as_str(),
        window_start: rfc3339(start),
        resets_at: rfc3339(end),
        allowed: amount(entry.limit),
        used: used.map(amount),
        remaining: used.map(|used| amount(entry.limit.saturating_sub(used))),
    }
}

fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_model::KeyHash;

    /// 2026-12-03T05:45:30Z.
    const NOW: i64 = 1_796_276_730;

    fn key() -> ClientKey {
        serde_json::from_value(json!({
            "id": "team-a", "hash": KeyHash::new("k").to_string(),
            "limits": {"requests_per_minute": 600, "budget": {"usd": 500, "period": "month"},
                       "pools": {"gpt-4o": {"tokens_per_minute": 1000}}}
        }))
        .unwrap()
    }

    #[test]
    fn without_redis_the_report_gives_windows_and_says_why_there_are_no_numbers() {
        let report = serde_json::to_value(per_proxy_usage(&key(), NOW)).unwrap();
        assert_eq!(report["scope"], "per_proxy");
        assert_eq!(
            report["limits"][0],
            json!({"limit": "requests_per_minute", "unit": "requests", "window": "minute",
                   "window_start": "2026-12-03T05:45:00Z", "resets_at": "2026-12-03T05:46:00Z",
                   "allowed": 600.0})
        );
        assert_eq!(report["limits"][1]["unit"], "usd");
        assert_eq!(report["limits"][1]["allowed"], 500.0);
        assert_eq!(report["limits"][1]["resets_at"], "2027-01-01T00:00:00Z");
        assert_eq!(report["limits"][2]["pool"], "gpt-4o");
    }

    #[test]
    fn the_rolling_minute_weighs_the_previous_one_and_money_reads_in_dollars() {
        let key = key();
        let entries = key.limits.entries();
        let (_, rpm) = entries[0];
        // 30 s into the minute: half of the previous minute's 100 still counts.
        assert_eq!(used_now(&rpm, 40, 100, NOW), 90);
        let (_, budget) = entries[1];
        assert_eq!(used_now(&budget, 1_250_000, 999, NOW), 1_250_000);
        let usage = limit_usage(None, &budget, NOW, Some(1_250_000));
        assert_eq!((usage.used, usage.remaining), (Some(1.25), Some(498.75)));
    }
}
