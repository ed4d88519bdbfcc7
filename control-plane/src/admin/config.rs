//! Read-only views: the current snapshot and the audit log.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use sluice_model::Snapshot;

use super::AdminState;
use super::error::{ApiError, ReadErrors};
use super::respond::{rfc3339, tagged};

#[derive(Serialize, ToSchema)]
pub struct ConfigView {
    revision: u64,
    snapshot: Snapshot,
}

/// The current revision and the snapshot proxies receive (secret references and key hashes only).
#[utoipa::path(get, path = "/api/v1/config", tag = "config",
    responses((status = 200, body = ConfigView, headers(("ETag" = String))), ReadErrors))]
pub async fn config(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let snapshot = state.store.snapshot().await?;
    let revision = snapshot.revision;
    Ok(tagged(
        StatusCode::OK,
        revision,
        &ConfigView { revision, snapshot },
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Return entries with an id above this one (for paging).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many entries (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryView {
    id: i64,
    revision: u64,
    at: String,
    /// Admin token id (`admin:xxxxxxxx`), never the token.
    actor: String,
    action: String,
    resource: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntryView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<i64>,
}

/// Every committed change, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "config", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = super::error::ErrorBody), ReadErrors))]
pub async fn audit(
    State(state): State<AdminState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(
            ApiError::bad_request("invalid_query", "after must not be negative").on_field("after"),
        );
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_query", "limit must be between 1 and 1000")
                .on_field("limit"),
        );
    }
    let entries = state.store.audit_log(after, limit).await?;
    let full_page = entries.len() == limit as usize;
    let next_after = entries.last().filter(|_| full_page).map(|e| e.id);
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryView {
                id: e.id,
                revision: e.revision,
                at: rfc3339(e.at_unix_ms),
                actor: e.actor,
                action: e.action,
                resource: e.resource,
            })
            .collect(),
        next_after,
    }))
}
