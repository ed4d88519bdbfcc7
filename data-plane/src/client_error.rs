//! Responses the proxy makes itself, in OpenAI's error shape so the official SDKs raise the
//! right exception and apply their own retry logic (`retry-after-ms`, `retry-after`).

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;

use crate::body::ProxyBody;
use crate::canonical_path::NonCanonical;
use crate::quota::{LimitKind, Refused, go_duration};
use sluice_model::{MicroUsd, Name};

/// The `code` of an error the proxy answers itself. Also put on the response as an extension,
/// so the client request counter labels it from a small fixed set, without reading the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidApiKey,
    PermissionDenied,
    NotFound,
    InvalidJson,
    MissingModel,
    DeploymentNotFound,
    ModelNotFound,
    RequestTooLarge,
    InvalidPath,
    BadUpstreamUri,
    UpstreamIdleTimeout,
    InvalidBody,
    RateLimitExceeded,
    InsufficientQuota,
    NoBackend,
    TooManyConcurrentRequests,
    NotReady,
    UpstreamUnreachable,
    UpstreamTimeout,
}

impl ErrorCode {
    pub const ALL: [Self; 19] = [
        Self::InvalidApiKey,
        Self::PermissionDenied,
        Self::NotFound,
        Self::InvalidJson,
        Self::MissingModel,
        Self::DeploymentNotFound,
        Self::ModelNotFound,
        Self::RequestTooLarge,
        Self::InvalidPath,
        Self::BadUpstreamUri,
        Self::UpstreamIdleTimeout,
        Self::InvalidBody,
        Self::RateLimitExceeded,
        Self::InsufficientQuota,
        Self::NoBackend,
        Self::TooManyConcurrentRequests,
        Self::NotReady,
        Self::UpstreamUnreachable,
        Self::UpstreamTimeout,
    ];

    /// The code as OpenAI's SDKs read it in `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::InvalidJson => "invalid_json",
            Self::MissingModel => "missing_model",
            Self::DeploymentNotFound => "DeploymentNotFound",
            Self::ModelNotFound => "model_not_found",
            Self::RequestTooLarge => "request_too_large",
            Self::InvalidPath => "invalid_path",
            Self::BadUpstreamUri => "bad_upstream_uri",
            Self::UpstreamIdleTimeout => "upstream_idle_timeout",
            Self::InvalidBody => "invalid_body",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::InsufficientQuota => "insufficient_quota",
            Self::NoBackend => "no_backend",
            Self::TooManyConcurrentRequests => "too_many_concurrent_requests",
            Self::NotReady => "not_ready",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }
}

pub struct ClientError {
    status: StatusCode,
    kind: &'static str,
    code: ErrorCode,
    message: String,
    param: Option<&'static str>,
    retry_after: Option<Duration>,
    /// `x-should-retry`, which the official SDKs obey over their own retry rules.
    should_retry: Option<bool>,
}

impl ClientError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            should_retry: None,
        }
    }

    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            ErrorCode::InvalidApiKey,
            "Missing API key: send it in the api-key header or as Authorization: Bearer <key>.",
        )
    }

    pub fn wrong_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            ErrorCode::InvalidApiKey,
            "Incorrect API key provided.",
        )
    }

    pub fn key_not_allowed(pool: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            ErrorCode::PermissionDenied,
            format!("This API key may not use the deployment '{pool}'."),
        )
    }

    pub fn unknown_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            ErrorCode::NotFound,
            "Unknown path: call /openai/deployments/{deployment}/{operation}, /openai/v1/{operation} or /v1/{operation}.",
        )
    }

    pub fn invalid_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            ErrorCode::InvalidJson,
            "We could not parse the JSON body of your request: it must be a JSON object with a \"model\".",
        )
    }

    pub fn missing_model() -> Self {
        Self {
            param: Some("model"),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                ErrorCode::MissingModel,
                "The request body must be JSON with a \"model\" naming the deployment.",
            )
        }
    }

    pub fn unknown_deployment(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            ErrorCode::DeploymentNotFound,
            format!("The API deployment '{}' does not exist.", echo(name)),
        )
    }

    pub fn unknown_model(id: &str) -> Self {
        Self {
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                ErrorCode::ModelNotFound,
                format!(
                    "The model '{}' does not exist or you do not have access to it.",
                    echo(id)
                ),
            )
        }
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            ErrorCode::RequestTooLarge,
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn non_canonical_path(why: NonCanonical) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            ErrorCode::InvalidPath,
            format!("The request path is not canonical: {why}."),
        )
    }

    /// The URI for the backend could not be built from the call (a bug or a config the model
    /// should have refused): the call fails, the backend is not blamed.
    pub fn bad_upstream_uri() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            ErrorCode::BadUpstreamUri,
            "The proxy could not build a valid URI for the backend from this request.",
        )
    }

    /// The backend went silent in the middle of a response (sent as the last SSE event).
    pub fn upstream_idle(idle: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            ErrorCode::UpstreamIdleTimeout,
            format!(
                "The backend sent nothing for {} s in the middle of the response; the response is incomplete.",
                idle.as_secs()
            ),
        )
    }

    pub fn unreadable_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            ErrorCode::InvalidBody,
            "The request body could not be read.",
        )
    }

    /// Every backend is rate limited or ejected: come back when the first one is free.
    pub fn all_cooling(pool: &str, wait: Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                ErrorCode::RateLimitExceeded,
                format!(
                    "All backends of '{pool}' are rate limited or recovering. Please retry after {} ms.",
                    wait.as_millis()
                ),
            )
        }
    }

    /// A client key's limit refused the call. Rates come back within a minute (the SDKs retry
    /// after `retry-after-ms`); an exhausted quota or budget does not, so SDKs are told not to.
    pub fn over_limit(key: &Name, refused: &Refused) -> Self {
        let scope = match &refused.pool {
            Some(pool) => format!("key '{key}' on pool '{pool}'"),
            None => format!("key '{key}'"),
        };
        let wait = refused.wait;
        let (kind, code, message) = match refused.kind {
            LimitKind::RequestsPerMinute => (
                "requests",
                ErrorCode::RateLimitExceeded,
                format!(
                    "Rate limit reached for {scope} on requests per minute: Limit {}. Please try again in {}.",
                    refused.limit,
                    go_duration(wait)
                ),
            ),
            LimitKind::TokensPerMinute => (
                "tokens",
                ErrorCode::RateLimitExceeded,
                format!(
                    "Rate limit reached for {scope} on tokens per minute: Limit {}. Please try again in {}.",
                    refused.limit,
                    go_duration(wait)
                ),
            ),
            LimitKind::TokenQuota => (
                "insufficient_quota",
                ErrorCode::InsufficientQuota,
                format!(
                    "You exceeded the token quota of {scope}: Limit {} tokens. It resets at {}.",
                    refused.limit,
                    reset_at(wait)
                ),
            ),
            LimitKind::Budget => (
                "insufficient_quota",
                ErrorCode::InsufficientQuota,
                format!(
                    "You exceeded the budget of {scope}: Limit {}. It resets at {}.",
                    amount(refused.kind, refused.limit),
                    reset_at(wait)
                ),
            ),
        };
        if refused.too_large() {
            // As OpenAI says it: no wait makes such a call fit.
            return Self {
                should_retry: Some(false),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    kind,
                    code,
                    format!(
                        "Request too large for {scope} on {}: Limit {}, Requested {}. The input or output tokens must be reduced in order to run successfully.",
                        refused.kind.as_str(),
                        amount(refused.kind, refused.limit),
                        amount(refused.kind, refused.requested)
                    ),
                )
            };
        }
        Self {
            retry_after: Some(wait),
            should_retry: refused.kind.is_quota().then_some(false),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, kind, code, message)
        }
    }

    pub fn no_usable_backend(pool: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            ErrorCode::NoBackend,
            format!(
                "No backend of '{pool}' can take requests (none enabled, or their credentials are unavailable)."
            ),
        )
    }

    /// The proxy is at `--max-concurrent-requests`; a moment later, or another proxy, has room.
    pub fn at_capacity() -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            should_retry: Some(true),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                ErrorCode::TooManyConcurrentRequests,
                "The proxy is serving as many requests as it takes at once; retry in a second.",
            )
        }
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            ErrorCode::NotReady,
            "The proxy has not received its configuration yet; retry shortly.",
        )
    }

    pub fn upstream_unreachable() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            ErrorCode::UpstreamUnreachable,
            "The backend could not be reached.",
        )
    }

    pub fn upstream_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            ErrorCode::UpstreamTimeout,
            "The backend did not answer in time.",
        )
    }

    /// `{"error":{…}}` in OpenAI's shape.
    pub fn body(&self) -> String {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code.as_str(),
        }})
        .to_string()
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(self.body()))));
        *response.status_mut() = self.status;
        // For the client request counter, which must not parse bodies.
        response.extensions_mut().insert(self.code);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(wait) = self.retry_after {
            set_retry_after(headers, wait);
        }
        if let Some(should_retry) = self.should_retry {
            headers.insert(
                X_SHOULD_RETRY.clone(),
                HeaderValue::from_static(if should_retry { "true" } else { "false" }),
            );
        }
        response
    }
}

/// A client-chosen name as quoted back in an error: names the proxy knows are short, and a
/// client should not be able to make the proxy echo megabytes.
fn echo(name: &str) -> std::borrow::Cow<'_, str> {
    const LONGEST: usize = 128;
    match name.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}…", &name[..cut]).into(),
        None => name.into(),
    }
}

/// `retry-after` (whole seconds, rounded up) and `retry-after-ms`, the signals the official
/// SDKs wait on; never zero, which some clients take as "hammer now".
pub fn set_retry_after(headers: &mut HeaderMap, wait: Duration) {
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds as u64));
    headers.insert(
        RETRY_AFTER_MS.clone(),
        HeaderValue::from(wait.as_millis().max(1) as u64),
    );
}

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// An amount of a limit as people read it: money in dollars, the rest as counts.
fn amount(kind: LimitKind, value: u64) -> String {
    match kind {
        LimitKind::Budget => MicroUsd::from_micros(value).to_string(),
        _ => value.to_string(),
    }
}

/// When a period that ends in `wait` starts again, in RFC 3339 (UTC).
fn reset_at(wait: Duration) -> String {
    let at = time::OffsetDateTime::now_utc() + wait;
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{} s from now", wait.as_secs()))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn all_cooling_tells_clients_when_to_come_back() {
        let response =
            ClientError::all_cooling("gpt-4o", Duration::from_millis(1500)).into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn error_codes_are_listed_in_index_order() {
        for (index, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index, "{code:?}");
        }
    }

    #[tokio::test]
    async fn the_response_carries_its_code_for_the_metrics() {
        let response = ClientError::wrong_key().into_response();
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::InvalidApiKey)
        );
    }

    #[tokio::test]
    async fn at_capacity_asks_for_a_retry_in_a_second() {
        let response = ClientError::at_capacity().into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["retry-after-ms"], "1000");
        assert_eq!(response.headers()["x-should-retry"], "true");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "too_many_concurrent_requests");
        assert_eq!(body["error"]["type"], "server_error");
    }
}
