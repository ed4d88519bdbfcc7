use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, ToSchema};

use sluice_model::FieldError;

use crate::store::StoreError;

/// Every error the admin API returns: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `invalid_field`, `database_unavailable`, …
    pub code: &'static str,
    pub message: String,
    /// The offending field, as a path like `backends[0].auth.secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
                field: None,
            },
        }
    }

    pub fn on_field(mut self, field: impl Into<String>) -> Self {
        self.detail.field = Some(field.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required: Authorization: Bearer <token>",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The Redis that holds the fleet's counts did not answer.
    pub fn quota_store_unavailable(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "quota_store_unavailable",
            format!("cannot read the fleet's usage: {error}"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not support that method",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A well-formed request whose content breaks a rule (422); `field` is empty when the
    /// rule is about the body as a whole.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        let field = field.into();
        if field.is_empty() {
            error
        } else {
            error.on_field(field)
        }
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request bodies must be JSON: Content-Type: application/json",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::invalid(error.field, error.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => Self::not_found(error.to_string()),
            StoreError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "already_exists", error.to_string())
            }
            StoreError::PreconditionFailed { .. } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("{error}; read it again and retry with its new ETag"),
            ),
            StoreError::InvalidReference { field, message } => Self::invalid(field, message),
            StoreError::Invalid(error) => error.into(),
            StoreError::Timeout(_) | StoreError::Unavailable(_) => {
                tracing::warn!(error = %error_chain(&error), "config database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the config database is unavailable; nothing was changed, retry shortly",
                )
            }
            other => {
                // Database details stay in the log; clients get a generic message.
                tracing::error!(error = %error_chain(&other), "admin request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the control plane's log",
                )
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// OpenAPI: the error responses a route can give, all with an `ErrorBody`.
fn error_responses(statuses: &[(u16, &str)]) -> BTreeMap<String, RefOr<ApiResponse>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

const UNAUTHORIZED: (u16, &str) = (401, "Missing or wrong admin token");
const UNAVAILABLE: (u16, &str) = (503, "The config database is unavailable");

/// Errors of an authenticated read.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        error_responses(&[UNAUTHORIZED, (404, "No such resource"), UNAVAILABLE])
    }
}

/// Errors of a read that also asks the quota store.
pub struct UsageErrors;

impl IntoResponses for UsageErrors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        error_responses(&[
            UNAUTHORIZED,
            (404, "No such resource"),
            (
                503,
                "The config database or the quota store (Redis) is unavailable",
            ),
        ])
    }
}

/// Errors of an authenticated write.
pub struct WriteErrors;

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        error_responses(&[
            (400, "Malformed JSON or header"),
            UNAUTHORIZED,
            (404, "No such resource"),
            (409, "The resource already exists"),
            (412, "If-Match does not match the resource's current ETag"),
            (413, "Body larger than 1 MiB"),
            (415, "Body is not JSON"),
            (422, "A field is invalid"),
            UNAVAILABLE,
        ])
    }
}
