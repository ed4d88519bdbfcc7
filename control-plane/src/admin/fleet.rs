//! The fleet as one, answered from the database so every replica gives the same answer:
//! proxies, a pool's backends as the proxies see them, and usage history.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::error::{ApiError, ReadErrors};
use super::extract::path_name;
use super::respond::rfc3339;
use crate::fleet::{FleetProxy, PoolStatus, pool_status, proxy_views};
use crate::store::{UsageCounts, UsageFilter, UsageRow, unix_millis};
use sluice_model::Name;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest span one usage query may cover.
const MAX_SPAN_DAYS: i64 = 400;
const DEFAULT_SPAN_MS: i64 = 7 * DAY_MS;
/// Rows one usage answer may hold; past it, the caller narrows the query.
const MAX_USAGE_ROWS: u32 = 20_000;

#[derive(Serialize, ToSchema)]
pub struct FleetProxyList {
    proxies: Vec<FleetProxy>,
}

/// Every proxy of the fleet, whichever replica its config stream is on, with its state:
/// `connected`, or `gone` once its stream closed or nothing was heard from it for
/// `--proxy-gone-after`. Proxies gone for `--proxy-forget-after` are dropped.
#[utoipa::path(get, path = "/api/v1/proxies", tag = "fleet",
    responses((status = 200, body = FleetProxyList), ReadErrors))]
pub async fn proxies(State(state): State<AdminState>) -> Result<Json<FleetProxyList>, ApiError> {
    let records = state.store.fleet_proxies().await?;
    Ok(Json(FleetProxyList {
        proxies: proxy_views(&records, unix_millis(), state.fleet.gone_after),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Traffic rates over this many recent minutes (1 to 60, default 5).
    #[param(minimum = 1, maximum = 60)]
    minutes: Option<u32>,
}

/// Each backend of the pool as the connected proxies report it: how many see it available,
/// cooling, ejected, without credential or disabled, when the cooldowns end, and the
/// attempts and errors per second over the last minutes.
#[utoipa::path(get, path = "/api/v1/pools/{pool}/status", tag = "fleet",
    params(("pool" = String, Path, description = "Pool name"), StatusQuery),
    responses((status = 200, body = PoolStatus), (status = 400, body = super::error::ErrorBody), ReadErrors))]
pub async fn pool(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<PoolStatus>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let minutes = query.minutes.unwrap_or(5);
    if !(1..=60).contains(&minutes) {
        return Err(
            ApiError::bad_request("invalid_query", "minutes must be between 1 and 60")
                .on_field("minutes"),
        );
    }
    let name = path_name(&pool, "pool")?;
    let stored = state.store.get_pool(&name).await?;
    let now = unix_millis();
    let since = floor(now, MINUTE_MS) - (i64::from(minutes) - 1) * MINUTE_MS;
    let records = state.store.fleet_proxies().await?;
    let traffic = state.store.backend_traffic(name.as_str(), since).await?;
    let backends: Vec<(String, bool)> = stored
        .value
        .backends
        .iter()
        .map(|b| (b.name.to_string(), b.enabled))
        .collect();
    Ok(Json(pool_status(
        name.as_str(),
        &backends,
        &records,
        &traffic,
        now,
        state.fleet.gone_after,
        minutes,
    )))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this client key's usage.
    key: Option<String>,
    /// Only usage of this pool.
    pool: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (UTC); rounded down to a whole bucket. Default: `to`
    /// minus 7 days.
    from: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (UTC), exclusive; rounded up to a whole bucket.
    /// Default: now.
    to: Option<String>,
    /// `hour` or `day` (UTC days; default `day`).
    group_by: Option<String>,
}

/// One bucket of one key's use of one pool.
#[derive(Serialize, ToSchema)]
pub struct UsageBucket {
    /// RFC 3339 start of the bucket.
    start: String,
    key: String,
    pool: String,
    #[serde(flatten)]
    counts: UsageCounts,
    /// `cost_micro_usd` in US dollars.
    cost_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageTotals {
    #[serde(flatten)]
    counts: UsageCounts,
    cost_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageHistory {
    /// `hour` or `day`.
    group_by: String,
    /// RFC 3339; the query's bounds rounded out to whole buckets.
    from: String,
    to: String,
    buckets: Vec<UsageBucket>,
    totals: UsageTotals,
}

/// Requests, tokens and cost per client key and pool, in hourly or daily buckets, from the
/// proxies' reports. `Accept: text/csv` gives the same rows as CSV for chargeback.
#[utoipa::path(get, path = "/api/v1/usage", tag = "fleet", params(UsageQuery),
    responses(
        (status = 200, description = "Usage history",
            content((UsageHistory = "application/json"), (String = "text/csv"))),
        (status = 400, body = super::error::ErrorBody),
        ReadErrors))]
pub async fn usage(
    State(state): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = usage_filter(&query, unix_millis())?;
    let mut rows = state.store.usage_history(&filter).await?;
    if rows.len() > MAX_USAGE_ROWS as usize {
        return Err(ApiError::bad_request(
            "too_many_rows",
            format!(
                "more than {MAX_USAGE_ROWS} rows: narrow from/to, group by day or filter by key or pool"
            ),
        ));
    }
    let group_by = if filter.bucket_ms == DAY_MS {
        "day"
    } else {
        "hour"
    };
    if wants_csv(&headers) {
        let filename = format!(
            "sluice-usage-{}-{}.csv",
            date_of(filter.from_unix_ms),
            date_of(filter.to_unix_ms)
        );
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            usage_csv(&rows),
        )
            .into_response());
    }
    let mut totals = UsageCounts::default();
    for row in &rows {
        totals.add(&row.counts);
    }
    let buckets = rows
        .drain(..)
        .map(|row| UsageBucket {
            start: rfc3339(row.start_unix_ms),
            cost_usd: usd(row.counts.cost_micro_usd),
            key: row.client_key,
            pool: row.pool,
            counts: row.counts,
        })
        .collect();
    Ok(Json(UsageHistory {
        group_by: group_by.to_owned(),
        from: rfc3339(filter.from_unix_ms),
        to: rfc3339(filter.to_unix_ms),
        buckets,
        totals: UsageTotals {
            cost_usd: usd(totals.cost_micro_usd),
            counts: totals,
        },
    })
    .into_response())
}

fn usage_filter(query: &UsageQuery, now: i64) -> Result<UsageFilter, ApiError> {
    let bucket_ms = match query.group_by.as_deref() {
        None | Some("day") => DAY_MS,
        Some("hour") => HOUR_MS,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_query", "group_by must be hour or day")
                    .on_field("group_by"),
            );
        }
    };
    let name = |value: &Option<String>, field: &'static str| {
        value
            .as_deref()
            .map(|raw| {
                Name::try_from(raw)
                    .map(|name| name.to_string())
                    .map_err(|e| {
                        ApiError::bad_request("invalid_query", e.to_string()).on_field(field)
                    })
            })
            .transpose()
    };
    let client_key = name(&query.key, "key")?;
    let pool = name(&query.pool, "pool")?;
    let to = match &query.to {
        Some(raw) => parse_time(raw, "to")?,
        None => now,
    };
    let from = match &query.from {
        Some(raw) => parse_time(raw, "from")?,
        None => to.saturating_sub(DEFAULT_SPAN_MS),
    };
    let (from, to) = (floor(from, bucket_ms), ceil(to, bucket_ms));
    if from >= to {
        return Err(
            ApiError::bad_request("invalid_query", "from must be before to").on_field("from"),
        );
    }
    if to - from > MAX_SPAN_DAYS * DAY_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("from and to may be at most {MAX_SPAN_DAYS} days apart"),
        )
        .on_field("from"));
    }
    Ok(UsageFilter {
        client_key,
        pool,
        from_unix_ms: from,
        to_unix_ms: to,
        bucket_ms,
        max_rows: MAX_USAGE_ROWS,
    })
}

/// An RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC), as Unix ms.
fn parse_time(raw: &str, field: &'static str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let invalid = || {
        ApiError::bad_request(
            "invalid_query",
            format!(
                "{field} must be an RFC 3339 time (2026-12-01T00:00:00Z) or a date (2026-12-01)"
            ),
        )
        .on_field(field)
    };
    let moment = match time::OffsetDateTime::parse(raw, &Rfc3339) {
        Ok(moment) => moment,
        Err(_) => {
            let date_format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]")
                .map_err(|_| invalid())?;
            time::Date::parse(raw, &date_format)
                .map_err(|_| invalid())?
                .midnight()
                .assume_utc()
        }
    };
    let millis = moment.unix_timestamp_nanos() / 1_000_000;
    // Before 1970 or past year 9999 there is no usage to find.
    i64::try_from(millis)
        .ok()
        .filter(|ms| (0..=253_402_300_799_999).contains(ms))
        .ok_or_else(invalid)
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().unwrap_or("").trim() == "text/csv")
}

/// Key ids and pool names are names (letters, digits, `-`, `_`, `.`), so no field needs
/// quoting.
fn usage_csv(rows: &[UsageRow]) -> String {
    let mut csv = String::from(
        "start,key,pool,requests,input_tokens,output_tokens,cost_usd,rate_limited\r\n",
    );
    for row in rows {
        let c = &row.counts;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\r\n",
            rfc3339(row.start_unix_ms),
            row.client_key,
            row.pool,
            c.requests,
            c.input_tokens,
            c.output_tokens,
            usd_text(c.cost_micro_usd),
            c.rate_limited,
        ));
    }
    csv
}

fn usd(micro_usd: u64) -> f64 {
    micro_usd as f64 / 1e6
}

/// Exact dollars with six decimals: a spreadsheet adds these without float drift.
fn usd_text(micro_usd: u64) -> String {
    format!("{}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}

fn date_of(unix_ms: i64) -> String {
    rfc3339(unix_ms).chars().take(10).collect()
}

fn floor(unix_ms: i64, step: i64) -> i64 {
    unix_ms - unix_ms.rem_euclid(step)
}

fn ceil(unix_ms: i64, step: i64) -> i64 {
    let floored = floor(unix_ms, step);
    if floored == unix_ms {
        unix_ms
    } else {
        floored + step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> UsageQuery {
        let encoded = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let uri: axum::http::Uri = format!("/api/v1/usage?{encoded}").parse().unwrap();
        Query::try_from_uri(&uri).unwrap().0
    }

    const NOW: i64 = 1_764_590_400_000; // 2025-12-01T12:00:00Z

    #[test]
    fn bounds_round_out_to_whole_buckets() {
        let filter = usage_filter(
            &query(&[
                ("from", "2025-11-30T10:30:00Z"),
                ("to", "2025-12-01T10:30:00Z"),
                ("group_by", "hour"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(rfc3339(filter.from_unix_ms), "2025-11-30T10:00:00Z");
        assert_eq!(rfc3339(filter.to_unix_ms), "2025-12-01T11:00:00Z");
        let days = usage_filter(&query(&[("from", "2025-11-30")]), NOW).unwrap();
        assert_eq!(rfc3339(days.from_unix_ms), "2025-11-30T00:00:00Z");
        assert_eq!(rfc3339(days.to_unix_ms), "2025-12-02T00:00:00Z");
        assert_eq!(days.bucket_ms, DAY_MS);
        let default = usage_filter(&query(&[]), NOW).unwrap();
        assert_eq!(rfc3339(default.from_unix_ms), "2025-11-24T00:00:00Z");
    }

    #[test]
    fn bad_queries_name_their_field() {
        for (pairs, field) in [
            (vec![("group_by", "week")], "group_by"),
            (vec![("from", "yesterday")], "from"),
            (vec![("to", "2025-13-01")], "to"),
            (vec![("from", "2025-12-02"), ("to", "2025-12-01")], "from"),
            (vec![("from", "2024-01-01"), ("to", "2025-12-01")], "from"),
            (vec![("key", "not%20a%20name")], "key"),
            (vec![("pool", "")], "pool"),
            (vec![("from", "1969-12-31")], "from"),
        ] {
            let error = usage_filter(&query(&pairs), NOW).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{pairs:?}");
            assert_eq!(error.detail().field.as_deref(), Some(field), "{pairs:?}");
        }
    }

    #[test]
    fn csv_is_exact_in_dollars() {
        let rows = [UsageRow {
            start_unix_ms: NOW,
            client_key: "team-a".into(),
            pool: "gpt-4o".into(),
            counts: UsageCounts {
                requests: 3,
                input_tokens: 1000,
                output_tokens: 20,
                cost_micro_usd: 1_234_567,
                rate_limited: 1,
            },
        }];
        assert_eq!(
            usage_csv(&rows),
            "start,key,pool,requests,input_tokens,output_tokens,cost_usd,rate_limited\r\n\
             2025-12-01T12:00:00Z,team-a,gpt-4o,3,1000,20,1.234567,1\r\n"
        );
    }

    #[test]
    fn csv_is_chosen_by_accept() {
        let mut headers = HeaderMap::new();
        assert!(!wants_csv(&headers));
        headers.insert(
            header::ACCEPT,
            "application/json, text/csv;q=0.9".parse().unwrap(),
        );
        assert!(wants_csv(&headers));
    }
}
