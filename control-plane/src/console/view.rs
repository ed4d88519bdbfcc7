//! What every page shares: the frame around it (navigation, assets, the CSRF token for its
//! forms), rendering to a response, and the failure page.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::assets::{self, AssetUrls};
use super::session::Visitor;
use crate::admin::rfc3339;
use crate::store::StoreError;

/// Which navigation entry a page belongs to: `overview`, `pools`, `keys`, `proxies`,
/// `audit`, or empty for none.
pub(crate) type Section = &'static str;

/// The frame of a page.
pub(crate) struct Chrome {
    pub section: Section,
    /// The session's CSRF token for the page's forms; `None` without a session.
    pub csrf: Option<String>,
    /// Signed in (a session) as opposed to authentication being off.
    pub signed_in: bool,
    pub show_nav: bool,
    pub assets: AssetUrls,
}

impl Chrome {
    pub fn for_visitor(visitor: &Visitor, section: Section) -> Self {
        Self {
            section,
            csrf: visitor.csrf.clone(),
            signed_in: visitor.csrf.is_some(),
            show_nav: true,
            assets: assets::urls(),
        }
    }

    /// Pages outside a session: sign-in and failures.
    pub fn bare() -> Self {
        Self {
            section: "",
            csrf: None,
            signed_in: false,
            show_nav: false,
            assets: assets::urls(),
        }
    }

    /// `aria-current` for a navigation entry.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }

    /// The hidden CSRF value for forms ("" without a session, where none is checked).
    pub fn token(&self) -> &str {
        self.csrf.as_deref().unwrap_or("")
    }
}

/// Renders a page with `status`.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

pub(crate) fn ok(page: &impl Template) -> Response {
    render(StatusCode::OK, page)
}

/// What went wrong, for the failure page.
pub(crate) struct Failure {
    pub title: String,
    pub message: String,
    pub link: Option<(String, String)>,
}

impl Failure {
    pub fn new(title: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            message: message.into(),
            link: None,
        }
    }

    pub fn with_link(mut self, href: &str, text: &str) -> Self {
        self.link = Some((href.to_owned(), text.to_owned()));
        self
    }
}

#[derive(Template)]
#[template(path = "console/failure.html")]
struct FailurePage {
    chrome: Chrome,
    failure: Failure,
}

pub(crate) fn failure(status: StatusCode, failure: Failure) -> Response {
    render(
        status,
        &FailurePage {
            chrome: Chrome::bare(),
            failure,
        },
    )
}

/// The database failed us; the message is the store's, which never carries secrets.
pub(crate) fn store_failure(error: &StoreError) -> Response {
    let status = if error.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    tracing::error!(%error, "console request failed in the config store");
    failure(
        status,
        Failure::new(
            "The config store failed",
            format!("{error}. Try again shortly."),
        )
        .with_link("/ui/", "Back to the overview"),
    )
}

pub(crate) fn not_found(what: impl Into<String>) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        Failure::new("Not found", what).with_link("/ui/", "Back to the overview"),
    )
}

/// `2026-12-03 08:10:49 UTC` from Unix milliseconds: the API's RFC 3339, easier on eyes.
pub(crate) fn timestamp(unix_ms: i64) -> String {
    readable(&rfc3339(unix_ms))
}

/// The same for the RFC 3339 strings the proxy registry keeps.
pub(crate) fn readable(rfc3339_text: &str) -> String {
    match rfc3339_text.split_once('T') {
        Some((date, rest)) => {
            let time = rest.split(['.', 'Z', '+']).next().unwrap_or(rest);
            format!("{date} {time} UTC")
        }
        None => rfc3339_text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_utc_seconds() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            readable("2026-12-03T08:10:49.123Z"),
            "2026-12-03 08:10:49 UTC"
        );
    }
}
