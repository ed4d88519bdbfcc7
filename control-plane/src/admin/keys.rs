use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use sluice_model::{Limits, Name};

use super::AdminState;
use super::error::{ApiError, ReadErrors, UsageErrors, WriteErrors};
use super::extract::{ApiJson, IfMatch, path_name};
use super::respond::{created, rfc3339, tagged};
use crate::quota_usage::{KeyUsage, per_proxy_usage};
use crate::store::{Actor, ClientKeyRecord, KeyUpdate, NewClientKey};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    #[schema(value_type = String, example = "team-a")]
    id: Name,
    /// Pools the key may use; empty or omitted means every pool.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pools: Vec<Name>,
    /// What the key may consume; empty or omitted means no limits.
    #[serde(default)]
    limits: Limits,
}

/// A key's new pools and limits; both are required, as omitting either would widen what the
/// key may do (`[]` is every pool, `{}` no limits). `id`, when given, must match the URL.
/// The key itself never changes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdateRequest {
    #[schema(value_type = Option<String>, example = "team-a")]
    id: Option<Name>,
    /// Pools the key may use; empty means every pool.
    #[schema(value_type = Vec<String>)]
    pools: Vec<Name>,
    limits: Limits,
}

/// A client key as the API shows it: never the key, never its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    #[schema(value_type = String)]
    id: Name,
    #[schema(value_type = Vec<String>)]
    pools: Vec<Name>,
    /// What the key may consume; `{}` when it has no limits.
    limits: Limits,
    /// Last four characters of the key.
    hint: String,
    created_at: String,
}

impl From<ClientKeyRecord> for KeyView {
    fn from(record: ClientKeyRecord) -> Self {
        Self {
            id: record.key.id,
            pools: record.key.pools,
            limits: record.key.limits,
            hint: record.hint,
            created_at: rfc3339(record.created_at_unix_ms),
        }
    }
}

/// The answer to creating a key: the only time the key itself is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    key: KeyView,
    /// The client key. Store it now: Sluice keeps only a salted hash.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

/// List client keys.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = KeyList), ReadErrors))]
pub async fn list(State(state): State<AdminState>) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.list_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Create a client key; the response carries the key once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKeyRequest,
    responses((status = 201, body = CreatedKey, headers(("ETag" = String), ("Location" = String))), WriteErrors))]
pub async fn create(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    ApiJson(request): ApiJson<NewKeyRequest>,
) -> Result<Response, ApiError> {
    let new = NewClientKey {
        id: request.id,
        pools: request.pools,
        limits: request.limits,
    };
    let created_key = state.store.create_key(&actor, new).await?;
    let location = format!("/api/v1/keys/{}", created_key.record.key.id);
    Ok(created(
        &location,
        created_key.revision,
        &CreatedKey {
            key: created_key.record.into(),
            secret: created_key.secret,
        },
    ))
}

/// Read one client key (without the key); its `ETag` is the revision of its last change.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Client key id")),
    responses((status = 200, body = KeyView, headers(("ETag" = String))), ReadErrors))]
pub async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_name(&id, "client key")?;
    let record = state.store.get_key(&id).await?;
    Ok(tagged(
        StatusCode::OK,
        record.revision,
        &KeyView::from(record),
    ))
}

/// What a client key consumes now: for each of its limits, the window, what the fleet used,
/// what is left and when it resets. Fleet-wide when the proxies share counts through Redis
/// (`scope: fleet`; `used` includes room leased to proxies and not spent yet, at most one
/// sync's worth); otherwise each proxy counts alone and only the windows are given
/// (`scope: per_proxy`).
#[utoipa::path(get, path = "/api/v1/keys/{id}/usage", tag = "keys",
    params(("id" = String, Path, description = "Client key id")),
    responses((status = 200, body = KeyUsage), UsageErrors))]
pub async fn usage(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<KeyUsage>, ApiError> {
    let id = path_name(&id, "client key")?;
    let record = state.store.get_key(&id).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let report = match &state.usage {
        Some(reader) => reader
            .fleet_usage(&record.key, now)
            .await
            .map_err(ApiError::quota_store_unavailable)?,
        None => per_proxy_usage(&record.key, now),
    };
    Ok(Json(report))
}

/// Replace a client key's pools and limits; the key itself stays the same.
#[utoipa::path(put, path = "/api/v1/keys/{id}", tag = "keys", request_body = KeyUpdateRequest,
    params(("id" = String, Path, description = "Client key id"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read; 412 if the key changed since")),
    responses((status = 200, body = KeyView, headers(("ETag" = String))), WriteErrors))]
pub async fn replace(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    IfMatch(precondition): IfMatch,
    ApiJson(request): ApiJson<KeyUpdateRequest>,
) -> Result<Response, ApiError> {
    let id = path_name(&id, "client key")?;
    if request.id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::invalid(
            "id",
            "id must match the key in the URL; keys cannot be renamed",
        ));
    }
    let update = KeyUpdate {
        pools: request.pools,
        limits: request.limits,
    };
    let record = state
        .store
        .update_key(&actor, &id, update, precondition.as_ref())
        .await?;
    Ok(tagged(
        StatusCode::OK,
        record.revision,
        &KeyView::from(record),
    ))
}

/// Revoke a client key.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Client key id"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    IfMatch(precondition): IfMatch,
) -> Result<StatusCode, ApiError> {
    let id = path_name(&id, "client key")?;
    state
        .store
        .delete_key(&actor, &id, precondition.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
