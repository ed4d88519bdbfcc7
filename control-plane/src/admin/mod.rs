//! The admin REST API (axum): pools, backends, client keys, config, proxies, audit log,
//! health and metrics, documented by the OpenAPI document it serves at `/openapi.json`.

mod auth;
mod backends;
mod config;
mod error;
mod extract;
mod fleet;
mod health;
mod keys;
mod metrics;
mod pools;
mod respond;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::{Json, Router, middleware};
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{AdminAuth, AdminAuthError};
pub use error::{ApiError, ErrorBody};
pub use extract::BODY_LIMIT;
pub(crate) use extract::parse_json;
pub(crate) use fleet::csv_response;
pub use metrics::AdminMetrics;
pub use respond::{rfc3339, rfc3339_now};

use crate::fleet::{FleetSettings, ProxyRegistry};
use crate::quota_usage::UsageReader;
use crate::store::Store;

#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub proxies: ProxyRegistry,
    pub fleet: FleetSettings,
    pub metrics: Arc<AdminMetrics>,
    /// Fleet-wide usage from the proxies' Redis; `None`: each proxy counts alone.
    pub usage: Option<Arc<UsageReader>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice control plane", description = "Admin API of Sluice, the gateway for OpenAI and Azure OpenAI traffic."),
    components(schemas(ErrorBody)),
    tags(
        (name = "pools", description = "Pools: what clients address as a deployment or model"),
        (name = "backends", description = "Upstream deployments inside a pool"),
        (name = "keys", description = "Client keys for the proxies"),
        (name = "config", description = "Snapshot and audit log"),
        (name = "fleet", description = "Proxies, backend states and usage history, as the proxies report them"),
        (name = "operations", description = "Health, readiness and metrics (no authentication)"),
    )
)]
struct ApiDoc;

const ADMIN_SECURITY: &str = "admin_token";

/// The admin API with its OpenAPI document.
pub fn router(state: AdminState, auth: Arc<AdminAuth>) -> Router {
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(pools::list, pools::create))
        .routes(routes!(pools::get, pools::replace, pools::delete))
        .routes(routes!(backends::list, backends::create))
        .routes(routes!(backends::get, backends::replace, backends::delete))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::get, keys::replace, keys::delete))
        .routes(routes!(keys::usage))
        .routes(routes!(config::config))
        .routes(routes!(fleet::proxies))
        .routes(routes!(fleet::pool))
        .routes(routes!(fleet::usage))
        .routes(routes!(config::audit))
        .split_for_parts();
    require_admin_token_in_doc(&mut doc);
    let api = api.route_layer(middleware::from_fn_with_state(auth, auth::require_admin));

    let (operations, operations_doc) = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
        .split_for_parts();
    doc.merge(operations_doc);
    let doc = Arc::new(doc);

    api.merge(operations)
        .layer(axum::Extension(doc))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Marks every `/api/v1` operation as needing the bearer admin token.
fn require_admin_token_in_doc(doc: &mut OpenApiDoc) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        ADMIN_SECURITY,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![SecurityRequirement::new(
                ADMIN_SECURITY,
                Vec::<String>::new(),
            )]);
        }
    }
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
async fn openapi_json(axum::Extension(doc): axum::Extension<Arc<OpenApiDoc>>) -> impl IntoResponse {
    Json(doc)
}
