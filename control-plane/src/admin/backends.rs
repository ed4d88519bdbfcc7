use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use sluice_model::Backend;

use super::AdminState;
use super::error::{ApiError, ReadErrors, WriteErrors};
use super::extract::{ApiJson, IfMatch, path_name};
use super::respond::{created, tagged};
use crate::store::Actor;

#[derive(Serialize, ToSchema)]
pub struct BackendList {
    pub backends: Vec<Backend>,
}

/// List a pool's backends in order.
#[utoipa::path(get, path = "/api/v1/pools/{pool}/backends", tag = "backends",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, body = BackendList), ReadErrors))]
pub async fn list(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
) -> Result<Json<BackendList>, ApiError> {
    let pool = path_name(&pool, "pool")?;
    let backends = state.store.list_backends(&pool).await?;
    Ok(Json(BackendList {
        backends: backends.into_iter().map(|b| b.value).collect(),
    }))
}

/// Add a backend to a pool.
#[utoipa::path(post, path = "/api/v1/pools/{pool}/backends", tag = "backends", request_body = Backend,
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 201, body = Backend, headers(("ETag" = String), ("Location" = String))), WriteErrors))]
pub async fn create(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(pool): Path<String>,
    ApiJson(backend): ApiJson<Backend>,
) -> Result<Response, ApiError> {
    let pool = path_name(&pool, "pool")?;
    backend.validate()?;
    let stored = state.store.create_backend(&actor, &pool, &backend).await?;
    Ok(created(
        &format!("/api/v1/pools/{pool}/backends/{}", backend.name),
        stored.revision,
        &stored.value,
    ))
}

/// Read one backend.
#[utoipa::path(get, path = "/api/v1/pools/{pool}/backends/{backend}", tag = "backends",
    params(("pool" = String, Path, description = "Pool name"), ("backend" = String, Path, description = "Backend name")),
    responses((status = 200, body = Backend, headers(("ETag" = String))), ReadErrors))]
pub async fn get(
    State(state): State<AdminState>,
    Path((pool, backend)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let pool = path_name(&pool, "pool")?;
    let name = path_name(&backend, "backend")?;
    let stored = state.store.get_backend(&pool, &name).await?;
    Ok(tagged(StatusCode::OK, stored.revision, &stored.value))
}

/// Replace a backend; `name` in the body must match the URL.
#[utoipa::path(put, path = "/api/v1/pools/{pool}/backends/{backend}", tag = "backends", request_body = Backend,
    params(("pool" = String, Path, description = "Pool name"), ("backend" = String, Path, description = "Backend name"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read; 412 if the backend changed since")),
    responses((status = 200, body = Backend, headers(("ETag" = String))), WriteErrors))]
pub async fn replace(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((pool, backend_name)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    ApiJson(backend): ApiJson<Backend>,
) -> Result<Response, ApiError> {
    let pool = path_name(&pool, "pool")?;
    let name = path_name(&backend_name, "backend")?;
    if backend.name != name {
        return Err(ApiError::invalid(
            "name",
            "name must match the backend in the URL; backends cannot be renamed",
        ));
    }
    backend.validate()?;
    let stored = state
        .store
        .replace_backend(&actor, &pool, &backend, precondition.as_ref())
        .await?;
    Ok(tagged(StatusCode::OK, stored.revision, &stored.value))
}

/// Remove a backend from its pool.
#[utoipa::path(delete, path = "/api/v1/pools/{pool}/backends/{backend}", tag = "backends",
    params(("pool" = String, Path, description = "Pool name"), ("backend" = String, Path, description = "Backend name"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((pool, backend)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
) -> Result<StatusCode, ApiError> {
    let pool = path_name(&pool, "pool")?;
    let name = path_name(&backend, "backend")?;
    state
        .store
        .delete_backend(&actor, &pool, &name, precondition.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
