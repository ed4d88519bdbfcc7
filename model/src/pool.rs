use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, InvalidValue};
use crate::{Backend, Name, Price};

/// How a pool picks a backend within its best available priority tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Strict rotation.
    #[default]
    RoundRobin,
    /// Smooth weighted round-robin by `weight`.
    Weighted,
    /// Power of two choices over peak-EWMA latency.
    LeastLatency,
}

/// Total attempts per request, the first one included: 1 to 10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxAttempts(u8);

impl MaxAttempts {
    pub fn get(self) -> u32 {
        self.0.into()
    }
}

impl Default for MaxAttempts {
    fn default() -> Self {
        Self(3)
    }
}

impl TryFrom<u32> for MaxAttempts {
    type Error = InvalidValue;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        match u8::try_from(raw) {
            Ok(n @ 1..=10) => Ok(Self(n)),
            _ => Err(InvalidValue::new("max_attempts must be between 1 and 10")),
        }
    }
}

impl From<MaxAttempts> for u32 {
    fn from(value: MaxAttempts) -> Self {
        value.get()
    }
}

/// An HTTP status worth retrying on another backend: 408, 409, 429 or 5xx.
///
/// Anything else (400 content filter, 401, 404 ...) fails the same way everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct RetryStatus(u16);

impl RetryStatus {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u32> for RetryStatus {
    type Error = InvalidValue;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        match raw {
            408 | 409 | 429 | 500..=599 => Ok(Self(raw as u16)),
            _ => Err(InvalidValue::new(
                "retry_on may hold only 408, 409, 429 and 5xx status codes",
            )),
        }
    }
}

impl From<RetryStatus> for u32 {
    fn from(value: RetryStatus) -> Self {
        value.0.into()
    }
}

/// The statuses that trigger a retry, sorted and without duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<RetryStatus>")]
pub struct RetryOn(Vec<RetryStatus>);

impl RetryOn {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|s| s.0 == status)
    }

    pub fn iter(&self) -> impl Iterator<Item = RetryStatus> + '_ {
        self.0.iter().copied()
    }
}

impl Default for RetryOn {
    fn default() -> Self {
        Self([429, 500, 502, 503, 504].map(RetryStatus).to_vec())
    }
}

impl From<Vec<RetryStatus>> for RetryOn {
    fn from(mut statuses: Vec<RetryStatus>) -> Self {
        statuses.sort_unstable();
        statuses.dedup();
        Self(statuses)
    }
}

/// A time limit in milliseconds, 1 to 3,600,000, that is `DEFAULT_MS` when not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct TimeLimit<const DEFAULT_MS: u64>(u64);

/// How long an attempt may wait for the response head. Ten minutes by default, the official
/// SDKs' own timeout: reasoning models and long non-streamed completions can take minutes
/// before the first byte, and the proxy should never be what cuts a call the client would
/// have waited for. Pools of fast models set it lower to fail over from a hung backend sooner.
pub type PerTryTimeout = TimeLimit<600_000>;

/// The longest silence between two body chunks once a response has started. Five minutes by
/// default (Envoy's stream idle timeout): reasoning models can pause for minutes mid-stream,
/// which nginx's 60 s between reads would cut, while a partitioned backend is still noticed.
pub type IdleTimeout = TimeLimit<300_000>;

impl<const DEFAULT_MS: u64> TimeLimit<DEFAULT_MS> {
    pub const MAX_MS: u64 = 3_600_000;

    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl<const DEFAULT_MS: u64> Default for TimeLimit<DEFAULT_MS> {
    fn default() -> Self {
        Self(DEFAULT_MS)
    }
}

impl<const DEFAULT_MS: u64> TryFrom<u64> for TimeLimit<DEFAULT_MS> {
    type Error = InvalidValue;

    fn try_from(raw: u64) -> Result<Self, Self::Error> {
        if (1..=Self::MAX_MS).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(
                "time limits must be between 1 and 3600000 milliseconds",
            ))
        }
    }
}

impl<const DEFAULT_MS: u64> From<TimeLimit<DEFAULT_MS>> for u64 {
    fn from(value: TimeLimit<DEFAULT_MS>) -> Self {
        value.0
    }
}

/// When and how often a request moves on to another backend, and how long an attempt may
/// take (as in Envoy's retry policy, which holds its per-try and per-try idle timeouts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u32, minimum = 1, maximum = 10, default = 3))]
    pub max_attempts: MaxAttempts,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u16>, example = json!([429, 500, 502, 503, 504])))]
    pub retry_on: RetryOn,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1, maximum = 3600000, default = 600000))]
    pub per_try_timeout_ms: PerTryTimeout,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1, maximum = 3600000, default = 300000))]
    pub idle_timeout_ms: IdleTimeout,
}

/// A named set of backends that clients address as one deployment or model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: Name,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// What the pool's tokens cost; needed by keys with a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

impl Pool {
    /// Checks each backend and that no backend name repeats.
    pub fn validate(&self) -> Result<(), FieldError> {
        let mut seen = HashSet::with_capacity(self.backends.len());
        for (index, backend) in self.backends.iter().enumerate() {
            let at = || format!("backends[{index}]");
            backend.validate().map_err(|e| e.within(at()))?;
            if !seen.insert(backend.name.as_str()) {
                return Err(FieldError::new(
                    format!("{}.name", at()),
                    "backend names must be unique within a pool",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applies_defaults() {
        let pool: Pool = serde_json::from_value(json!({"name": "gpt-4o"})).unwrap();
        assert_eq!(pool.strategy, Strategy::RoundRobin);
        assert_eq!(pool.retry.max_attempts.get(), 3);
        assert!(pool.retry.retry_on.contains(429));
        assert_eq!(pool.retry.per_try_timeout_ms.as_millis(), 600_000);
        assert_eq!(pool.retry.idle_timeout_ms.as_millis(), 300_000);
    }

    #[test]
    fn refuses_out_of_range_retry_settings() {
        for (retry, expected) in [
            (json!({"max_attempts": 0}), "between 1 and 10"),
            (json!({"max_attempts": 11}), "between 1 and 10"),
            (json!({"retry_on": [404]}), "only 408, 409, 429 and 5xx"),
            (json!({"retry_on": [600]}), "only 408, 409, 429 and 5xx"),
            (json!({"per_try_timeout_ms": 0}), "between 1 and 3600000"),
            (json!({"idle_timeout_ms": 0}), "between 1 and 3600000"),
            (
                json!({"idle_timeout_ms": 3_600_001}),
                "between 1 and 3600000",
            ),
            (json!({"idle_timeout_ms": -5}), "invalid value"),
            (json!({"retries": 2}), "unknown field"),
        ] {
            let err = serde_json::from_value::<Pool>(json!({"name": "p", "retry": retry}))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{retry}: {err}");
        }
    }

    #[test]
    fn normalises_retry_on() {
        let retry: RetryPolicy =
            serde_json::from_value(json!({"retry_on": [503, 429, 503]})).unwrap();
        assert_eq!(
            serde_json::to_value(&retry.retry_on).unwrap(),
            json!([429, 503])
        );
    }

    #[test]
    fn duplicate_backend_names_point_at_the_second() {
        let b = json!({"name": "a", "url": "https://x.example", "kind": "openai", "auth": {"type": "none"}});
        let pool: Pool =
            serde_json::from_value(json!({"name": "p", "backends": [b.clone(), b]})).unwrap();
        assert_eq!(pool.validate().unwrap_err().field, "backends[1].name");
    }

    #[test]
    fn parses_the_contract_yaml() {
        let yaml = r#"
name: gpt-4o
strategy: weighted
retry: { max_attempts: 3 }
backends:
  - { name: eastus, url: "https://aoai-eastus.openai.azure.com", kind: azure_openai,
      auth: { type: api_key, secret: "keyvault://my-vault/aoai-eastus-key" } }
  - { name: westus, url: "https://aoai-westus.openai.azure.com", kind: azure_openai, weight: 3,
      auth: { type: api_key, secret: "env://AOAI_WESTUS_KEY" } }
"#;
        let pool: Pool = serde_yaml::from_str(yaml).unwrap();
        pool.validate().unwrap();
        assert_eq!(pool.backends[1].weight.get(), 3);
    }
}
