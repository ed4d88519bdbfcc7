use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use sluice_model::{Backend, Name, Pool, Price, RetryPolicy, Strategy};

use super::AdminState;
use super::error::{ApiError, ReadErrors, WriteErrors};
use super::extract::{ApiJson, IfMatch, path_name};
use super::respond::{created, tagged};
use crate::store::{Actor, PoolReplacement};

#[derive(Serialize, ToSchema)]
pub struct PoolList {
    pub pools: Vec<Pool>,
}

/// A pool's new settings. `backends`, when given, replaces the whole backend list; when
/// omitted the backends stay as they are. `strategy`, `retry` and `price` are always set:
/// omitted, they are the defaults (no price). `name`, when given, must match the URL.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolUpdate {
    #[schema(value_type = Option<String>)]
    name: Option<Name>,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    retry: RetryPolicy,
    backends: Option<Vec<Backend>>,
    /// What the pool's tokens cost; required while a key's budget covers the pool.
    price: Option<Price>,
}

/// List pools with their backends.
#[utoipa::path(get, path = "/api/v1/pools", tag = "pools",
    responses((status = 200, body = PoolList), ReadErrors))]
pub async fn list(State(state): State<AdminState>) -> Result<Json<PoolList>, ApiError> {
    let pools = state.store.list_pools().await?;
    Ok(Json(PoolList {
        pools: pools.into_iter().map(|p| p.value).collect(),
    }))
}

/// Create a pool, optionally with its backends and price. A pool without a price is refused
/// while a key's budget would cover it (a key with a budget and no pool restriction).
#[utoipa::path(post, path = "/api/v1/pools", tag = "pools", request_body = Pool,
    responses((status = 201, body = Pool, headers(("ETag" = String), ("Location" = String))), WriteErrors))]
pub async fn create(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    ApiJson(pool): ApiJson<Pool>,
) -> Result<Response, ApiError> {
    pool.validate()?;
    let stored = state.store.create_pool(&actor, &pool).await?;
    Ok(created(
        &format!("/api/v1/pools/{}", pool.name),
        stored.revision,
        &stored.value,
    ))
}

/// Read one pool; its `ETag` changes whenever the pool or one of its backends changes.
#[utoipa::path(get, path = "/api/v1/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, body = Pool, headers(("ETag" = String))), ReadErrors))]
pub async fn get(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
) -> Result<Response, ApiError> {
    let name = path_name(&pool, "pool")?;
    let stored = state.store.get_pool(&name).await?;
    Ok(tagged(StatusCode::OK, stored.revision, &stored.value))
}

/// Replace a pool's strategy, retry policy and price (and its backends, when given). Leaving
/// the pool without a price is refused while a key's budget covers it.
#[utoipa::path(put, path = "/api/v1/pools/{pool}", tag = "pools", request_body = PoolUpdate,
    params(("pool" = String, Path, description = "Pool name"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read; 412 if the pool changed since")),
    responses((status = 200, body = Pool, headers(("ETag" = String))), WriteErrors))]
pub async fn replace(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(pool): Path<String>,
    IfMatch(precondition): IfMatch,
    ApiJson(update): ApiJson<PoolUpdate>,
) -> Result<Response, ApiError> {
    let name = path_name(&pool, "pool")?;
    if update.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::invalid(
            "name",
            "name must match the pool in the URL; pools cannot be renamed",
        ));
    }
    let replacement = PoolReplacement {
        strategy: update.strategy,
        retry: update.retry,
        backends: update.backends,
        price: update.price,
    };
    if let Some(backends) = &replacement.backends {
        // Validate the backends the way a whole pool is validated.
        Pool {
            name: name.clone(),
            strategy: replacement.strategy,
            retry: replacement.retry.clone(),
            backends: backends.clone(),
            price: replacement.price,
        }
        .validate()?;
    }
    let stored = state
        .store
        .replace_pool(&actor, &name, replacement, precondition.as_ref())
        .await?;
    Ok(tagged(StatusCode::OK, stored.revision, &stored.value))
}

/// Delete a pool and its backends.
#[utoipa::path(delete, path = "/api/v1/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "Pool name"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    responses((status = 204, description = "Deleted"), WriteErrors))]
pub async fn delete(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(pool): Path<String>,
    IfMatch(precondition): IfMatch,
) -> Result<StatusCode, ApiError> {
    let name = path_name(&pool, "pool")?;
    state
        .store
        .delete_pool(&actor, &name, precondition.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
