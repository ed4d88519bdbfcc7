//! Signing in with an admin token, and out.

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::see;
use crate::console::ConsoleState;
use crate::console::cookie;
use crate::console::csrf;
use crate::console::form::Form;
use crate::console::session::SignInError;
use crate::console::view::{self, Chrome, Failure};

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    error: Option<&'static str>,
}

pub(crate) async fn show(State(state): State<ConsoleState>) -> Response {
    if state.sessions.auth_disabled() {
        return see("/ui/");
    }
    view::ok(&SignInPage {
        chrome: Chrome::bare(),
        error: None,
    })
}

pub(crate) async fn sign_in(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // No session yet, so no CSRF token: the origin check alone stops another site from
    // signing a browser into a session of its choosing.
    if let Err(error) = csrf::check_origin(&headers) {
        return view::failure(
            StatusCode::FORBIDDEN,
            Failure::new(
                "Request refused",
                format!("{error}. Reload the page and try again."),
            )
            .with_link("/ui/sign-in", "Sign in"),
        );
    }
    if state.sessions.auth_disabled() {
        return see("/ui/");
    }
    let form = Form::parse(&body);
    match state.sessions.open(form.value("token")).await {
        Ok(opened) => {
            let mut response = see("/ui/");
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie::set(
                    &opened.id,
                    opened.ttl,
                    state.served_over_tls || cookie::over_tls(&headers),
                ),
            );
            response
        }
        Err(SignInError::WrongToken) => view::render(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                chrome: Chrome::bare(),
                error: Some(
                    "That admin token is not accepted. Check that it was pasted whole, or ask \
                     whoever runs this control plane for a current one.",
                ),
            },
        ),
        Err(SignInError::Store(error)) => view::store_failure(&error),
    }
}

pub(crate) async fn sign_out(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Extension(_): Extension<Form>,
) -> Response {
    if let Some(id) = cookie::session_id(&headers)
        && let Err(error) = state.sessions.close(id).await
    {
        return view::store_failure(&error);
    }
    let mut response = see("/ui/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie::clear(state.served_over_tls || cookie::over_tls(&headers)),
    );
    response
}
