//! Admits requests to the signed-in pages: finds the visitor behind the session cookie (or
//! lets everyone in as `anonymous` when authentication is off), and for every state-changing
//! request checks the origin and the session's CSRF token before a handler runs.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::ConsoleState;
use super::cookie;
use super::csrf::{self, CsrfError};
use super::form::Form;
use super::session::Visitor;
use super::view::{self, Failure};
use crate::store::Actor;

/// Largest form the console accepts; its forms are a few hundred bytes.
const FORM_LIMIT: usize = 64 * 1024;

pub(crate) async fn require_session(
    State(state): State<ConsoleState>,
    request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes_state && let Err(error) = csrf::check_origin(request.headers()) {
        return refused(error);
    }
    let visitor = if state.sessions.auth_disabled() {
        Visitor {
            actor: Actor("anonymous".into()),
            csrf: None,
        }
    } else {
        let found = match cookie::session_id(request.headers()) {
            Some(id) => state.sessions.resolve(id).await,
            None => Ok(None),
        };
        match found {
            Ok(Some(visitor)) => visitor,
            Ok(None) => return signed_out(&request, changes_state),
            Err(error) => return view::store_failure(&error),
        }
    };
    let (mut parts, body) = request.into_parts();
    if changes_state {
        let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
            return view::failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                Failure::new(
                    "Form too large",
                    "The form sent was larger than the console accepts.",
                ),
            );
        };
        let form = Form::parse(&bytes);
        if let Some(expected) = &visitor.csrf {
            let presented = parts
                .headers
                .get(csrf::HEADER)
                .and_then(|v| v.to_str().ok())
                .or(Some(form.value(csrf::FIELD)).filter(|v| !v.is_empty()));
            if let Err(error) = csrf::check_token(expected, presented) {
                return refused(error);
            }
        }
        parts.extensions.insert(form);
        parts.extensions.insert(visitor);
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    } else {
        parts.extensions.insert(Form::default());
        parts.extensions.insert(visitor);
        next.run(Request::from_parts(parts, body)).await
    }
}

/// No live session: pages send the browser to sign in; changes are refused outright, as
/// replaying them after sign-in could surprise whoever started them.
fn signed_out(request: &Request, changes_state: bool) -> Response {
    let from_htmx = request.headers().contains_key("hx-request");
    if changes_state || from_htmx {
        let mut response = view::failure(
            StatusCode::UNAUTHORIZED,
            Failure::new(
                "Signed out",
                "Your console session has ended or was never opened. Sign in again.",
            )
            .with_link("/ui/sign-in", "Sign in"),
        );
        if from_htmx {
            // htmx follows this with a full page load instead of swapping in a fragment.
            response
                .headers_mut()
                .insert("hx-redirect", HeaderValue::from_static("/ui/sign-in"));
        }
        return response;
    }
    Redirect::to("/ui/sign-in").into_response()
}

fn refused(error: CsrfError) -> Response {
    tracing::warn!(%error, "console request refused");
    let mut response = view::failure(
        StatusCode::FORBIDDEN,
        Failure::new(
            "Request refused",
            format!("{error}. Reload the page and try again."),
        ),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
