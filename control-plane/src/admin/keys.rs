use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use sluice_model::Name;

use super::AdminState;
use super::error::{ApiError, ReadErrors, WriteErrors};
use super::extract::{ApiJson, path_name};
use super::respond::{created, rfc3339};
use crate::store::{Actor, ClientKeyRecord, NewClientKey};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    #[schema(value_type = String, example = "team-a")]
    id: Name,
    /// Pools the key may use; empty or omitted means every pool.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pools: Vec<Name>,
}

/// A client key as the API shows it: never the key, never its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    #[schema(value_type = String)]
    id: Name,
    #[schema(value_type = Vec<String>)]
    pools: Vec<Name>,
    /// Last four characters of the key.
    hint: String,
    created_at: String,
}

impl From<ClientKeyRecord> for KeyView {
    fn from(record: ClientKeyRecord) -> Self {
        Self {
            id: record.key.id,
            pools: record.key.pools,
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

/// Read one client key (without the key).
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Client key id")),
    responses((status = 200, body = KeyView), ReadErrors))]
pub async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let id = path_name(&id, "client key")?;
    Ok(Json(state.store.get_key(&id).await?.into()))
}

/// Revoke a client key.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Client key id")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_name(&id, "client key")?;
    state.store.delete_key(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
