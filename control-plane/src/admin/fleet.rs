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
use crate::fleet::usage::{
    UsageError, UsageParams, csv_filename, group_name, usage_csv, usage_filter, usage_rows, usd,
};
use crate::fleet::{FleetProxy, PoolStatus, proxy_views, read_pool_status};
use crate::store::{UsageCounts, UsageFilter, UsageRow, unix_millis};

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
    let status = read_pool_status(&state.store, state.fleet.gone_after, &name, minutes).await?;
    Ok(Json(status))
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
    let filter = usage_filter(&query.params(), unix_millis()).map_err(usage_error)?;
    let mut rows = usage_rows(&state.store, &filter)
        .await
        .map_err(usage_error)?;
    if wants_csv(&headers) {
        return Ok(csv_response(&filter, &rows));
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
        group_by: group_name(&filter).to_owned(),
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

impl UsageQuery {
    fn params(&self) -> UsageParams<'_> {
        UsageParams {
            key: self.key.as_deref(),
            pool: self.pool.as_deref(),
            from: self.from.as_deref(),
            to: self.to.as_deref(),
            group_by: self.group_by.as_deref(),
        }
    }
}

fn usage_error(error: UsageError) -> ApiError {
    match error {
        UsageError::Invalid { field, message } => {
            ApiError::bad_request("invalid_query", message).on_field(field)
        }
        UsageError::TooManyRows => ApiError::bad_request("too_many_rows", error.to_string()),
        UsageError::Store(error) => error.into(),
    }
}

/// The usage rows as a CSV download; the console's download is the same response.
pub(crate) fn csv_response(filter: &UsageFilter, rows: &[UsageRow]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", csv_filename(filter)),
            ),
        ],
        usage_csv(rows),
    )
        .into_response()
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().unwrap_or("").trim() == "text/csv")
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

    #[test]
    fn bad_queries_are_400s_on_their_field() {
        let error = usage_filter(&query(&[("key", "not%20a%20name")]).params(), 0)
            .map_err(usage_error)
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.detail().field.as_deref(), Some("key"));
        let too_many = usage_error(UsageError::TooManyRows);
        assert_eq!(too_many.detail().code, "too_many_rows");
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
