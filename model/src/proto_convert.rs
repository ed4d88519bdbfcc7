//! Conversions between the model and its protobuf form. Proto → model runs the same
//! validation as JSON input, so a proxy can NACK a bad snapshot with the offending field.

use std::fmt::Display;

use crate::error::FieldError;
use crate::proto;
use crate::{
    Auth, Backend, BackendKind, Budget, ClientKey, IdleTimeout, KeyHash, LimitSet, Limits,
    MaxAttempts, MicroUsd, Name, PerTryTimeout, Period, Pool, Price, RetryOn, RetryPolicy,
    RetryStatus, Snapshot, Strategy, TokenQuota, Weight,
};

fn at<T, E: Display>(result: Result<T, E>, field: &str) -> Result<T, FieldError> {
    result.map_err(|e| FieldError::new(field, e.to_string()))
}

fn each<T, U>(
    items: Vec<T>,
    prefix: &str,
    convert: impl Fn(T) -> Result<U, FieldError>,
) -> Result<Vec<U>, FieldError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| convert(item).map_err(|e| e.within(format_args!("{prefix}[{i}]"))))
        .collect()
}

// === impl Snapshot ===

impl From<&Snapshot> for proto::Snapshot {
    fn from(snapshot: &Snapshot) -> Self {
        Self {
            revision: snapshot.revision,
            pools: snapshot.pools.iter().map(Into::into).collect(),
            client_keys: snapshot.client_keys.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<proto::Snapshot> for Snapshot {
    type Error = FieldError;

    fn try_from(snapshot: proto::Snapshot) -> Result<Self, Self::Error> {
        let converted = Self {
            revision: snapshot.revision,
            pools: each(snapshot.pools, "pools", Pool::try_from)?,
            client_keys: each(snapshot.client_keys, "client_keys", ClientKey::try_from)?,
        };
        converted.validate()?;
        Ok(converted)
    }
}

// === impl Pool ===

impl From<&Pool> for proto::Pool {
    fn from(pool: &Pool) -> Self {
        let strategy = match pool.strategy {
            Strategy::RoundRobin => proto::Strategy::RoundRobin,
            Strategy::Weighted => proto::Strategy::Weighted,
            Strategy::LeastLatency => proto::Strategy::LeastLatency,
        };
        Self {
            name: pool.name.to_string(),
            strategy: strategy.into(),
            retry: Some(proto::RetryPolicy {
                max_attempts: pool.retry.max_attempts.get(),
                retry_on: pool.retry.retry_on.iter().map(u32::from).collect(),
                per_try_timeout_ms: pool.retry.per_try_timeout_ms.as_millis(),
                idle_timeout_ms: pool.retry.idle_timeout_ms.as_millis(),
            }),
            backends: pool.backends.iter().map(Into::into).collect(),
            price: pool.price.map(|price| proto::Price {
                input_per_1m_micro_usd: price.input_per_1m_usd.micros(),
                output_per_1m_micro_usd: price.output_per_1m_usd.micros(),
                cached_input_per_1m_micro_usd: price.cached_input_per_1m_usd.map(MicroUsd::micros),
            }),
        }
    }
}

impl TryFrom<proto::Pool> for Pool {
    type Error = FieldError;

    fn try_from(pool: proto::Pool) -> Result<Self, Self::Error> {
        let strategy = match at(proto::Strategy::try_from(pool.strategy), "strategy")? {
            proto::Strategy::Unspecified | proto::Strategy::RoundRobin => Strategy::RoundRobin,
            proto::Strategy::Weighted => Strategy::Weighted,
            proto::Strategy::LeastLatency => Strategy::LeastLatency,
        };
        let retry = match pool.retry {
            None => RetryPolicy::default(),
            Some(retry) => RetryPolicy {
                max_attempts: at(
                    MaxAttempts::try_from(retry.max_attempts),
                    "retry.max_attempts",
                )?,
                retry_on: RetryOn::from(
                    retry
                        .retry_on
                        .into_iter()
                        .map(|s| at(RetryStatus::try_from(s), "retry.retry_on"))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                per_try_timeout_ms: at(
                    PerTryTimeout::try_from(retry.per_try_timeout_ms),
                    "retry.per_try_timeout_ms",
                )?,
                // 0 is a control plane that predates the field: the default applies.
                idle_timeout_ms: match retry.idle_timeout_ms {
                    0 => IdleTimeout::default(),
                    ms => at(IdleTimeout::try_from(ms), "retry.idle_timeout_ms")?,
                },
            },
        };
        Ok(Self {
            name: at(Name::try_from(pool.name), "name")?,
            strategy,
            retry,
            backends: each(pool.backends, "backends", Backend::try_from)?,
            price: pool
                .price
                .map(|price| {
                    Ok::<_, FieldError>(Price {
                        input_per_1m_usd: money(
                            price.input_per_1m_micro_usd,
                            "price.input_per_1m_usd",
                        )?,
                        output_per_1m_usd: money(
                            price.output_per_1m_micro_usd,
                            "price.output_per_1m_usd",
                        )?,
                        cached_input_per_1m_usd: price
                            .cached_input_per_1m_micro_usd
                            .map(|m| money(m, "price.cached_input_per_1m_usd"))
                            .transpose()?,
                    })
                })
                .transpose()?,
        })
    }
}

// === impl Backend ===

impl From<&Backend> for proto::Backend {
    fn from(backend: &Backend) -> Self {
        let kind = match backend.kind {
            BackendKind::AzureOpenai => proto::BackendKind::AzureOpenai,
            BackendKind::Openai => proto::BackendKind::Openai,
        };
        let method = match &backend.auth {
            Auth::ApiKey { secret } => proto::auth::Method::ApiKey(proto::ApiKey {
                secret_ref: secret.to_string(),
            }),
            Auth::EntraId {} => proto::auth::Method::EntraId(proto::EntraId {}),
            Auth::None {} => proto::auth::Method::None(proto::NoAuth {}),
        };
        Self {
            name: backend.name.to_string(),
            url: backend.url.to_string(),
            kind: kind.into(),
            weight: backend.weight.get(),
            priority: backend.priority,
            enabled: backend.enabled,
            auth: Some(proto::Auth {
                method: Some(method),
            }),
            deployments: backend
                .deployments
                .iter()
                .map(|(from, to)| (from.to_string(), to.to_string()))
                .collect(),
            api_version: backend.api_version.as_ref().map(ToString::to_string),
        }
    }
}

impl TryFrom<proto::Backend> for Backend {
    type Error = FieldError;

    fn try_from(backend: proto::Backend) -> Result<Self, Self::Error> {
        let kind = match at(proto::BackendKind::try_from(backend.kind), "kind")? {
            proto::BackendKind::AzureOpenai => BackendKind::AzureOpenai,
            proto::BackendKind::Openai => BackendKind::Openai,
            proto::BackendKind::Unspecified => {
                return Err(FieldError::new("kind", "backend kind is missing"));
            }
        };
        let auth = match backend.auth.and_then(|a| a.method) {
            Some(proto::auth::Method::ApiKey(key)) => Auth::ApiKey {
                secret: at(key.secret_ref.try_into(), "auth.secret")?,
            },
            Some(proto::auth::Method::EntraId(_)) => Auth::EntraId {},
            Some(proto::auth::Method::None(_)) => Auth::None {},
            None => return Err(FieldError::new("auth", "backend auth is missing")),
        };
        let deployments = backend
            .deployments
            .into_iter()
            .map(|(from, to)| {
                let field = format!("deployments.{from}");
                Ok((at(from.try_into(), &field)?, at(to.try_into(), &field)?))
            })
            .collect::<Result<_, FieldError>>()?;
        let converted = Self {
            name: at(Name::try_from(backend.name), "name")?,
            url: at(backend.url.try_into(), "url")?,
            kind,
            weight: at(Weight::try_from(backend.weight), "weight")?,
            priority: backend.priority,
            enabled: backend.enabled,
            auth,
            deployments,
            api_version: backend
                .api_version
                .map(|v| at(v.try_into(), "api_version"))
                .transpose()?,
        };
        converted.validate()?;
        Ok(converted)
    }
}

// === impl ClientKey ===

impl From<&ClientKey> for proto::ClientKey {
    fn from(key: &ClientKey) -> Self {
        Self {
            id: key.id.to_string(),
            pools: key.pools.iter().map(ToString::to_string).collect(),
            hash: Some(proto::KeyHash {
                salt: key.hash.salt().to_vec(),
                sha256: key.hash.digest().to_vec(),
            }),
            limits: (!key.limits.is_empty()).then(|| proto::Limits {
                key: Some(limit_set_to_proto(&key.limits.key_wide())),
                pools: key
                    .limits
                    .pools
                    .iter()
                    .map(|(pool, set)| (pool.to_string(), limit_set_to_proto(set)))
                    .collect(),
            }),
        }
    }
}

impl TryFrom<proto::ClientKey> for ClientKey {
    type Error = FieldError;

    fn try_from(key: proto::ClientKey) -> Result<Self, Self::Error> {
        let hash = key
            .hash
            .ok_or_else(|| FieldError::new("hash", "client key hash is missing"))?;
        Ok(Self {
            id: at(Name::try_from(key.id), "id")?,
            pools: key
                .pools
                .into_iter()
                .map(|p| at(Name::try_from(p), "pools"))
                .collect::<Result<_, _>>()?,
            hash: at(KeyHash::from_parts(&hash.salt, &hash.sha256), "hash")?,
            limits: match key.limits {
                None => Limits::default(),
                Some(limits) => {
                    let key_wide = match limits.key {
                        Some(set) => limit_set_from_proto(set).map_err(|e| e.within("limits"))?,
                        None => LimitSet::default(),
                    };
                    let pools = limits
                        .pools
                        .into_iter()
                        .map(|(pool, set)| {
                            let at_pool = || format!("limits.pools.{pool}");
                            Ok((
                                at(Name::try_from(pool.clone()), &at_pool())?,
                                limit_set_from_proto(set).map_err(|e| e.within(at_pool()))?,
                            ))
                        })
                        .collect::<Result<_, FieldError>>()?;
                    Limits {
                        requests_per_minute: key_wide.requests_per_minute,
                        tokens_per_minute: key_wide.tokens_per_minute,
                        token_quota: key_wide.token_quota,
                        budget: key_wide.budget,
                        pools,
                    }
                }
            },
        })
    }
}

// === impl Limits ===

fn money(micros: u64, field: &str) -> Result<MicroUsd, FieldError> {
    if micros > MicroUsd::MAX.micros() {
        return Err(FieldError::new(
            field,
            "amount is above the largest allowed",
        ));
    }
    Ok(MicroUsd::from_micros(micros))
}

fn period_to_proto(period: Period) -> proto::Period {
    match period {
        Period::Hour => proto::Period::Hour,
        Period::Day => proto::Period::Day,
        Period::Week => proto::Period::Week,
        Period::Month => proto::Period::Month,
    }
}

fn period_from_proto(raw: i32, field: &str) -> Result<Period, FieldError> {
    match at(proto::Period::try_from(raw), field)? {
        proto::Period::Hour => Ok(Period::Hour),
        proto::Period::Day => Ok(Period::Day),
        proto::Period::Week => Ok(Period::Week),
        proto::Period::Month => Ok(Period::Month),
        proto::Period::Unspecified => Err(FieldError::new(field, "period is missing")),
    }
}

fn limit_set_to_proto(set: &LimitSet) -> proto::LimitSet {
    proto::LimitSet {
        requests_per_minute: set.requests_per_minute.map(u64::from),
        tokens_per_minute: set.tokens_per_minute.map(u64::from),
        token_quota: set.token_quota.map(|quota| proto::TokenQuota {
            tokens: quota.tokens.get(),
            period: period_to_proto(quota.period).into(),
        }),
        budget: set.budget.map(|budget| proto::Budget {
            micro_usd: budget.usd.micros(),
            period: period_to_proto(budget.period).into(),
        }),
    }
}

fn limit_set_from_proto(set: proto::LimitSet) -> Result<LimitSet, FieldError> {
    Ok(LimitSet {
        requests_per_minute: set
            .requests_per_minute
            .map(|n| at(n.try_into(), "requests_per_minute"))
            .transpose()?,
        tokens_per_minute: set
            .tokens_per_minute
            .map(|n| at(n.try_into(), "tokens_per_minute"))
            .transpose()?,
        token_quota: set
            .token_quota
            .map(|quota| {
                Ok::<_, FieldError>(TokenQuota {
                    tokens: at(quota.tokens.try_into(), "token_quota.tokens")?,
                    period: period_from_proto(quota.period, "token_quota.period")?,
                })
            })
            .transpose()?,
        budget: set
            .budget
            .map(|budget| {
                Ok::<_, FieldError>(Budget {
                    usd: money(budget.micro_usd, "budget.usd")?,
                    period: period_from_proto(budget.period, "budget.period")?,
                })
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Snapshot {
        serde_json::from_value(json!({
            "revision": 7,
            "pools": [{
                "name": "gpt-4o", "strategy": "weighted",
                "retry": {"max_attempts": 2, "retry_on": [429, 503], "per_try_timeout_ms": 5000, "idle_timeout_ms": 7000},
                "price": {"input_per_1m_usd": 2.5, "output_per_1m_usd": 10, "cached_input_per_1m_usd": 1.25},
                "backends": [
                    {"name": "eastus", "url": "https://e.example", "kind": "azure_openai", "weight": 3,
                     "priority": 1, "enabled": false, "api_version": "2025-04-01-preview",
                     "auth": {"type": "api_key", "secret": "keyvault://my-vault/k"},
                     "deployments": {"gpt-4o": "gpt-4o-east"}},
                    {"name": "entra", "url": "https://n.example", "kind": "azure_openai", "auth": {"type": "entra_id"}},
                    {"name": "oai", "url": "https://api.openai.com", "kind": "openai", "auth": {"type": "none"}}
                ]
            }],
            "client_keys": [
                {"id": "team-a", "pools": ["gpt-4o"], "hash": KeyHash::new("k").to_string(),
                 "limits": {"requests_per_minute": 600, "tokens_per_minute": 200000,
                            "token_quota": {"tokens": 50000000, "period": "month"},
                            "budget": {"usd": 500.25, "period": "week"},
                            "pools": {"gpt-4o": {"tokens_per_minute": 100000, "budget": {"usd": 1, "period": "hour"}}}}},
                {"id": "team-b", "hash": KeyHash::new("k2").to_string()}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn snapshot_survives_a_round_trip_through_protobuf() {
        let snapshot = sample();
        let back = Snapshot::try_from(proto::Snapshot::from(&snapshot)).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn a_snapshot_without_an_idle_timeout_gets_the_default() {
        let mut wire = proto::Snapshot::from(&sample());
        wire.pools[0].retry.as_mut().unwrap().idle_timeout_ms = 0;
        let back = Snapshot::try_from(wire).unwrap();
        assert_eq!(back.pools[0].retry.idle_timeout_ms, IdleTimeout::default());
        assert_eq!(back.pools[0].retry.per_try_timeout_ms.as_millis(), 5000);
    }

    #[test]
    fn invalid_protobuf_names_the_field() {
        let mut wire = proto::Snapshot::from(&sample());
        wire.pools[0].backends[1].url = "ftp://nope".into();
        let err = Snapshot::try_from(wire).unwrap_err();
        assert_eq!(err.field, "pools[0].backends[1].url");

        let mut wire = proto::Snapshot::from(&sample());
        wire.pools[0].backends[0].auth = None;
        assert_eq!(
            Snapshot::try_from(wire).unwrap_err().field,
            "pools[0].backends[0].auth"
        );

        let mut wire = proto::Snapshot::from(&sample());
        wire.pools.push(wire.pools[0].clone());
        assert_eq!(Snapshot::try_from(wire).unwrap_err().field, "pools[1].name");
    }
}
