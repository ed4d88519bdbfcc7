//! The admin console at `/ui/`: server-rendered pages over the same store, validation and
//! audit log as the REST API, signed in with an admin token into a database-backed session.
//!
//! Served by the control plane itself, outside the OpenAPI document: a browser surface with
//! cookies, CSRF protection and a strict Content-Security-Policy, not part of the API.

mod assets;
mod cookie;
mod csrf;
mod form;
mod guard;
mod headers;
mod pages;
mod session;
mod states;
mod usage_chart;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::admin::{AdminAuth, AdminState};
use session::Sessions;

/// Settings of the admin console.
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    /// How long a session lasts after sign-in; it is not extended by use.
    pub session_ttl: Duration,
}

impl ConsoleOptions {
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            session_ttl: Self::DEFAULT_SESSION_TTL,
        }
    }
}

#[derive(Clone)]
pub(crate) struct ConsoleState {
    admin: AdminState,
    sessions: Arc<Sessions>,
    /// The admin listener itself serves TLS, so every browser reaches the console over it.
    served_over_tls: bool,
}

/// The console's routes, all under `/ui`; merged into the admin API's router.
/// `served_over_tls`: the admin listener serves TLS itself (session cookies get `Secure`).
pub fn router(
    admin: AdminState,
    auth: Arc<AdminAuth>,
    options: ConsoleOptions,
    served_over_tls: bool,
) -> Router {
    let state = ConsoleState {
        served_over_tls,
        sessions: Arc::new(Sessions::new(
            admin.store.clone(),
            auth,
            options.session_ttl,
        )),
        admin,
    };
    let signed_in = Router::new()
        .route("/ui/", get(pages::overview::show))
        .route("/ui/overview/live", get(pages::overview::live))
        .route("/ui/sign-out", post(pages::sign_in::sign_out))
        .route(
            "/ui/pools",
            get(pages::pools::list).post(pages::pools::create),
        )
        .route("/ui/pools/{pool}", get(pages::pools::detail))
        .route("/ui/pools/{pool}/live", get(pages::pool_fleet::live))
        .route(
            "/ui/pools/{pool}/delete",
            get(pages::pools::confirm_delete).post(pages::pools::delete),
        )
        .route("/ui/pools/{pool}/backends", post(pages::backends::create))
        .route(
            "/ui/pools/{pool}/backends/{backend}/enabled",
            post(pages::backends::set_enabled),
        )
        .route(
            "/ui/pools/{pool}/backends/{backend}/balance",
            post(pages::backends::set_balance),
        )
        .route(
            "/ui/pools/{pool}/backends/{backend}/delete",
            get(pages::backends::confirm_delete).post(pages::backends::delete),
        )
        .route("/ui/keys", get(pages::keys::list).post(pages::keys::create))
        .route(
            "/ui/keys/{id}",
            get(pages::keys::detail).post(pages::keys::update),
        )
        .route(
            "/ui/keys/{id}/revoke",
            get(pages::keys::confirm_revoke).post(pages::keys::revoke),
        )
        .route("/ui/proxies", get(pages::proxies::list))
        .route("/ui/proxies/live", get(pages::proxies::live))
        .route("/ui/usage", get(pages::usage::show))
        .route("/ui/usage.csv", get(pages::usage::csv))
        .route("/ui/audit", get(pages::audit::list))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_session,
        ));
    let public = Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/sign-in",
            get(pages::sign_in::show).post(pages::sign_in::sign_in),
        )
        .route("/ui/assets/{file}", get(assets::serve))
        // Below every other /ui route in matching priority: an HTML "not found" page.
        .route("/ui/{*rest}", get(pages::not_found));
    signed_in
        .merge(public)
        .layer(middleware::from_fn(headers::secure))
        .with_state(state)
}
