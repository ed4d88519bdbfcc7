//! What a client key may consume: requests and tokens per rolling minute, tokens and money per
//! calendar period, for the key as a whole and per pool; and what a pool's tokens cost.
//!
//! Money is integer micro-dollars everywhere ([`MicroUsd`]); JSON carries US dollars as a
//! number with at most six decimals, converted exactly once, at the edge.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Name;
use crate::error::{FieldError, InvalidValue};
use crate::windows::{Metric, Window};

/// A calendar period, in UTC: quotas and budgets start afresh at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hour,
    Day,
    /// ISO weeks: Monday 00:00 UTC.
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// A positive count no larger than `MAX` (requests, tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Count<const MAX: u64>(u64);

impl<const MAX: u64> Count<MAX> {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<const MAX: u64> TryFrom<u64> for Count<MAX> {
    type Error = InvalidValue;

    fn try_from(raw: u64) -> Result<Self, Self::Error> {
        if (1..=MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(format!("must be between 1 and {MAX}")))
        }
    }
}

impl<const MAX: u64> From<Count<MAX>> for u64 {
    fn from(value: Count<MAX>) -> Self {
        value.0
    }
}

/// Requests per minute: up to 100 million (far beyond any deployment's quota).
pub type RequestRate = Count<100_000_000>;
/// Tokens per minute or per period: up to 10 trillion.
pub type TokenCount = Count<10_000_000_000_000>;

/// An amount of US dollars in integer micro-dollars. JSON: dollars, at most six decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MicroUsd(u64);

impl MicroUsd {
    /// One billion dollars: anything above is a typo.
    pub const MAX: Self = Self(1_000_000_000 * 1_000_000);

    pub fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    pub fn micros(self) -> u64 {
        self.0
    }

    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl TryFrom<f64> for MicroUsd {
    type Error = InvalidValue;

    fn try_from(usd: f64) -> Result<Self, Self::Error> {
        let micros = usd * 1e6;
        if !micros.is_finite() || micros < 0.0 || micros > Self::MAX.0 as f64 {
            return Err(InvalidValue::new(
                "must be an amount of US dollars between 0 and 1000000000",
            ));
        }
        let rounded = micros.round();
        // Sub-micro-dollar digits would be lost silently: refuse them instead.
        if (micros - rounded).abs() > 1e-6 * micros.max(1.0) {
            return Err(InvalidValue::new(
                "amounts of US dollars have at most six decimals",
            ));
        }
        Ok(Self(rounded as u64))
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl Serialize for MicroUsd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_usd())
    }
}

impl<'de> Deserialize<'de> for MicroUsd {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let usd = f64::deserialize(deserializer)?;
        Self::try_from(usd).map_err(serde::de::Error::custom)
    }
}

/// Tokens per calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenQuota {
    #[cfg_attr(feature = "openapi", schema(value_type = u64, minimum = 1, maximum = 10_000_000_000_000u64))]
    pub tokens: TokenCount,
    pub period: Period,
}

/// Money per calendar period, priced by the pools' `price`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[cfg_attr(feature = "openapi", schema(value_type = f64, minimum = 0.000001, maximum = 1_000_000_000, example = 500))]
    pub usd: MicroUsd,
    pub period: Period,
}

/// The limits that can apply to a key, or to a key's use of one pool. Each is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1, maximum = 100_000_000))]
    pub requests_per_minute: Option<RequestRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1, maximum = 10_000_000_000_000u64))]
    pub tokens_per_minute: Option<TokenCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_quota: Option<TokenQuota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

impl LimitSet {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Budgets need prices, and budget periods of zero dollars make no sense.
    fn validate(&self) -> Result<(), FieldError> {
        if let Some(budget) = self.budget
            && budget.usd.micros() == 0
        {
            return Err(FieldError::new("budget.usd", "a budget must be above zero"));
        }
        Ok(())
    }
}

/// A client key's limits: the key as a whole, and per pool (both apply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1, maximum = 100_000_000))]
    pub requests_per_minute: Option<RequestRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1, maximum = 10_000_000_000_000u64))]
    pub tokens_per_minute: Option<TokenCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_quota: Option<TokenQuota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Limits on the key's use of one pool, on top of the key's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<Name, LimitSet>,
}

impl Limits {
    /// The key-wide limits as a set.
    pub fn key_wide(&self) -> LimitSet {
        LimitSet {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            token_quota: self.token_quota,
            budget: self.budget,
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether any limit counts money (and so needs every usable pool to have a price).
    pub fn has_budget(&self) -> bool {
        self.budget.is_some() || self.pools.values().any(|set| set.budget.is_some())
    }

    /// Whether a budget applies to calls to `pool`.
    pub fn budget_applies_to(&self, pool: &str) -> bool {
        self.budget.is_some() || self.pools.get(pool).is_some_and(|set| set.budget.is_some())
    }

    /// Checks each set; `allowed_pools` (empty: every pool) must include every overridden pool.
    pub fn validate(&self, allowed_pools: &[Name]) -> Result<(), FieldError> {
        self.key_wide().validate()?;
        for (pool, set) in &self.pools {
            let at = || format!("pools.{pool}");
            if !allowed_pools.is_empty() && !allowed_pools.contains(pool) {
                return Err(FieldError::new(
                    at(),
                    "limits name a pool the key may not use",
                ));
            }
            if set.is_empty() {
                return Err(FieldError::new(
                    at(),
                    "a pool override needs at least one limit",
                ));
            }
            set.validate().map_err(|e| e.within(at()))?;
        }
        Ok(())
    }
}

/// Which limit: the `limit` label of metrics, and the name in errors and usage reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    RequestsPerMinute,
    TokensPerMinute,
    TokenQuota,
    Budget,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests_per_minute",
            Self::TokensPerMinute => "tokens_per_minute",
            Self::TokenQuota => "token_quota",
            Self::Budget => "budget",
        }
    }

    pub fn metric(self) -> Metric {
        match self {
            Self::RequestsPerMinute => Metric::Requests,
            Self::TokensPerMinute | Self::TokenQuota => Metric::Tokens,
            Self::Budget => Metric::Cost,
        }
    }

    /// Quotas and budgets run out for a period; rates recover within a minute.
    pub fn is_quota(self) -> bool {
        matches!(self, Self::TokenQuota | Self::Budget)
    }
}

/// One limit of a set: what it counts, over which window, up to how much (money in
/// micro-dollars).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitEntry {
    pub kind: LimitKind,
    pub window: Window,
    pub limit: u64,
}

impl LimitSet {
    /// The limits that are set, in a fixed order.
    pub fn entries(&self) -> impl Iterator<Item = LimitEntry> + '_ {
        [
            self.requests_per_minute
                .map(|n| (LimitKind::RequestsPerMinute, Window::Minute, n.get())),
            self.tokens_per_minute
                .map(|n| (LimitKind::TokensPerMinute, Window::Minute, n.get())),
            self.token_quota.map(|q| {
                (
                    LimitKind::TokenQuota,
                    Window::Period(q.period),
                    q.tokens.get(),
                )
            }),
            self.budget
                .map(|b| (LimitKind::Budget, Window::Period(b.period), b.usd.micros())),
        ]
        .into_iter()
        .flatten()
        .map(|(kind, window, limit)| LimitEntry {
            kind,
            window,
            limit,
        })
    }
}

impl Limits {
    /// Every limit of the key: key-wide ones (no pool), then each pool's.
    pub fn entries(&self) -> Vec<(Option<&Name>, LimitEntry)> {
        let key_wide = self.key_wide();
        let mut entries: Vec<_> = key_wide.entries().map(|e| (None, e)).collect();
        for (pool, set) in &self.pools {
            entries.extend(set.entries().map(|e| (Some(pool), e)));
        }
        entries
    }
}

/// What a pool's tokens cost, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[cfg_attr(feature = "openapi", schema(value_type = f64, minimum = 0, example = 2.5))]
    pub input_per_1m_usd: MicroUsd,
    #[cfg_attr(feature = "openapi", schema(value_type = f64, minimum = 0, example = 10))]
    pub output_per_1m_usd: MicroUsd,
    /// Cached prompt tokens (`usage.prompt_tokens_details.cached_tokens`); the input price
    /// when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0, example = 1.25))]
    pub cached_input_per_1m_usd: Option<MicroUsd>,
}

impl Price {
    /// The cost of a call in micro-dollars, rounded up (a call is never free by rounding).
    /// `cached` is the part of `input` that was served from the prompt cache.
    pub fn cost(&self, input: u64, cached: u64, output: u64) -> MicroUsd {
        let cached = cached.min(input);
        let cached_price = self
            .cached_input_per_1m_usd
            .unwrap_or(self.input_per_1m_usd);
        // Tokens × micro-dollars per million tokens, in u128, then per million.
        let scaled = u128::from(input - cached) * u128::from(self.input_per_1m_usd.micros())
            + u128::from(cached) * u128::from(cached_price.micros())
            + u128::from(output) * u128::from(self.output_per_1m_usd.micros());
        // Nearly always within u64, where dividing by a constant is a multiplication; u128
        // divides in a library call, on every call and its settling.
        let micros = match u64::try_from(scaled) {
            Ok(scaled) => scaled.div_ceil(1_000_000),
            Err(_) => u64::try_from(scaled.div_ceil(1_000_000)).unwrap_or(u64::MAX),
        };
        MicroUsd(micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(value: serde_json::Value) -> Result<Limits, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_contract_example() {
        let parsed = limits(json!({
            "requests_per_minute": 600, "tokens_per_minute": 200000,
            "token_quota": {"tokens": 50000000, "period": "month"},
            "budget": {"usd": 500, "period": "month"},
            "pools": {"gpt-4o": {"tokens_per_minute": 100000}}
        }))
        .unwrap();
        assert_eq!(parsed.budget.unwrap().usd.micros(), 500_000_000);
        assert_eq!(parsed.token_quota.unwrap().period, Period::Month);
        assert_eq!(
            parsed.pools["gpt-4o"].tokens_per_minute.unwrap().get(),
            100_000
        );
        parsed.validate(&[]).unwrap();
        let back: Limits = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
    }

    #[test]
    fn lists_every_limit_with_its_window() {
        let parsed = limits(json!({
            "requests_per_minute": 600, "budget": {"usd": 1.5, "period": "week"},
            "pools": {"gpt-4o": {"tokens_per_minute": 100, "token_quota": {"tokens": 9, "period": "day"}}}
        }))
        .unwrap();
        let listed: Vec<_> = parsed
            .entries()
            .into_iter()
            .map(|(pool, e)| {
                (
                    pool.map(Name::as_str),
                    e.kind.as_str(),
                    e.window.as_str(),
                    e.limit,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (None, "requests_per_minute", "minute", 600),
                (None, "budget", "week", 1_500_000),
                (Some("gpt-4o"), "tokens_per_minute", "minute", 100),
                (Some("gpt-4o"), "token_quota", "day", 9),
            ]
        );
        assert_eq!(LimitKind::Budget.metric(), Metric::Cost);
    }

    #[test]
    fn refuses_bad_values_with_clear_messages() {
        for (value, expected) in [
            (json!({"requests_per_minute": 0}), "between 1 and"),
            (json!({"requests_per_minute": -1}), "invalid value"),
            (json!({"requests_per_minute": 1e12}), "invalid type"),
            (
                json!({"tokens_per_minute": 100_000_000_000_000u64}),
                "between 1 and",
            ),
            (
                json!({"token_quota": {"tokens": 5, "period": "fortnight"}}),
                "unknown variant",
            ),
            (
                json!({"token_quota": {"tokens": 5}}),
                "missing field `period`",
            ),
            (
                json!({"budget": {"usd": -5, "period": "day"}}),
                "between 0 and",
            ),
            (
                json!({"budget": {"usd": 2e9, "period": "day"}}),
                "between 0 and",
            ),
            (
                json!({"budget": {"usd": 0.0000001, "period": "day"}}),
                "six decimals",
            ),
            (json!({"request_per_minute": 5}), "unknown field"),
            (json!({"pools": {"gpt-4o": {"pools": {}}}}), "unknown field"),
        ] {
            let err = limits(value.clone()).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let zero = limits(json!({"budget": {"usd": 0, "period": "day"}})).unwrap();
        assert_eq!(zero.validate(&[]).unwrap_err().field, "budget.usd");
        let other_pool = limits(json!({"pools": {"other": {"requests_per_minute": 5}}})).unwrap();
        let allowed = [Name::try_from("gpt-4o".to_owned()).unwrap()];
        assert_eq!(
            other_pool.validate(&allowed).unwrap_err().field,
            "pools.other"
        );
        other_pool.validate(&[]).unwrap();
        let empty = limits(json!({"pools": {"gpt-4o": {}}})).unwrap();
        assert_eq!(empty.validate(&[]).unwrap_err().field, "pools.gpt-4o");
    }

    #[test]
    fn money_is_exact_micro_dollars() {
        let price: Price = serde_json::from_value(
            json!({"input_per_1m_usd": 2.5, "output_per_1m_usd": 10, "cached_input_per_1m_usd": 1.25}),
        )
        .unwrap();
        // 1,000 input (400 cached) and 500 output tokens: 600 × $2.5/M + 400 × $1.25/M +
        // 500 × $10/M = 1500 + 500 + 5000 µ$.
        assert_eq!(price.cost(1_000, 400, 500).micros(), 7_000);
        assert_eq!(price.cost(1_000_000, 0, 1_000_000).micros(), 12_500_000);
        // 2.5 µ$, rounded up: a call is never free by rounding.
        assert_eq!(price.cost(1, 0, 0).micros(), 3);
        assert_eq!(price.cost(0, 0, 0).micros(), 0);
        // Past 2⁶⁴ before the division by a million, and after it.
        assert_eq!(
            price.cost(0, 0, 10_000_000_000_000).micros(),
            100_000_000_000_000
        );
        assert_eq!(price.cost(u64::MAX, 0, u64::MAX).micros(), u64::MAX);
        assert_eq!(MicroUsd::try_from(0.1 + 0.2).unwrap().micros(), 300_000);
        assert_eq!(MicroUsd::from_micros(12_500_000).to_string(), "$12.500000");
    }
}
