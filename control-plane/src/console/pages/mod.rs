//! One module per page family; each renders its own template.

pub(crate) mod audit;
pub(crate) mod backends;
pub(crate) mod keys;
pub(crate) mod overview;
pub(crate) mod pool_fleet;
pub(crate) mod pools;
pub(crate) mod proxies;
pub(crate) mod sign_in;
pub(crate) mod usage;

use axum::response::{Redirect, Response};

use super::view;
use crate::admin::ApiError;
use crate::store::StoreError;

pub(crate) async fn not_found() -> Response {
    view::not_found("There is no console page at this address.")
}

/// After a successful change, the browser loads the page to show (POST-redirect-GET), so a
/// reload does not repeat the change.
pub(crate) fn see(location: &str) -> Response {
    axum::response::IntoResponse::into_response(Redirect::to(location))
}

/// A store error a form can show (a refusal about the request) as an API error, or the
/// failure page for one it cannot (the database failing).
pub(crate) fn refusal(error: StoreError) -> Result<ApiError, Box<Response>> {
    if matches!(
        error,
        StoreError::Timeout(_)
            | StoreError::Unavailable(_)
            | StoreError::Corrupt { .. }
            | StoreError::Database(_)
            | StoreError::MigrationDrift(_)
            | StoreError::Migrate(_)
            | StoreError::UnsupportedUrl(_)
    ) {
        Err(Box::new(view::store_failure(&error)))
    } else {
        Ok(ApiError::from(error))
    }
}

/// Where a removal leads: to `done` when it happened (or the thing was already gone), else
/// to a page saying why it was refused, with a link `back`.
pub(crate) fn removal_outcome(
    removed: Result<(), StoreError>,
    done: &str,
    refused_title: &str,
    back: (&str, &str),
) -> Response {
    match removed {
        Ok(()) | Err(StoreError::NotFound(_)) => see(done),
        Err(error) => match refusal(error) {
            Ok(api) => view::failure(
                api.status(),
                view::Failure::new(refused_title, api.detail().message.clone())
                    .with_link(back.0, back.1),
            ),
            Err(page) => *page,
        },
    }
}

/// A whole number typed into a form, as JSON; `None` when left empty.
pub(crate) fn number_field(
    raw: &str,
    field: &'static str,
) -> Result<Option<serde_json::Value>, super::form::Problem> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<u64>()
        .map(|n| Some(serde_json::Value::from(n)))
        .map_err(|_| super::form::Problem::new(field, "must be a whole number, like 600"))
}

/// An amount of US dollars typed into a form, as JSON; `None` when left empty.
pub(crate) fn usd_field(
    raw: &str,
    field: &'static str,
) -> Result<Option<serde_json::Value>, super::form::Problem> {
    if raw.is_empty() {
        return Ok(None);
    }
    let number = raw.trim_start_matches('$').parse::<f64>().ok();
    number
        .and_then(serde_json::Number::from_f64)
        .map(|n| Some(serde_json::Value::Number(n)))
        .ok_or_else(|| {
            super::form::Problem::new(field, "must be an amount of US dollars, like 12.50")
        })
}
