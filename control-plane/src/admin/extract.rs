//! Request extractors that fail with the API's own error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use sluice_model::Name;

use super::error::ApiError;
use crate::store::Precondition;

/// Largest admin request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// JSON body: 415 unless the content type is JSON, 413 over [`BODY_LIMIT`], 400 when it does
/// not parse, 422 with the field's path when a field is unknown, missing or invalid.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let body =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(BODY_LIMIT),
                    _ => ApiError::bad_request("invalid_body", rejection.body_text()),
                })?;
        parse_json(&body).map(Self)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would also build a struct from a JSON array of its fields; the API takes objects.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b == b'[' || *b == b'"' || b.is_ascii_digit()) {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = without_position(&inner);
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(
                "invalid_json",
                format!("body is not valid JSON: {message}"),
            );
        }
        ApiError::invalid(field_of(&path, &message), message)
    })?;
    deserializer.end().map_err(|_| {
        ApiError::bad_request(
            "invalid_json",
            "body has trailing data after the JSON value",
        )
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; the field path says more to an API user.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The path serde reports for a missing field is its parent; name the field itself.
fn field_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(field)) => field.to_owned(),
        (".", None) => String::new(),
        (parent, Some(field)) => format!("{parent}.{field}"),
        (parent, None) => parent.to_owned(),
    }
}

/// The `If-Match` header as a store precondition; absent means "write regardless".
pub struct IfMatch(pub Option<Precondition>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let invalid = || {
            ApiError::bad_request(
                "invalid_header",
                "If-Match must be * or a list of ETags as returned by GET, e.g. \"12\"",
            )
            .on_field("If-Match")
        };
        let value = value.to_str().map_err(|_| invalid())?.trim();
        if value == "*" {
            return Ok(Self(Some(Precondition::Exists)));
        }
        let mut revisions = Vec::new();
        for tag in value.split(',').map(str::trim) {
            // Weak tags never match under If-Match's strong comparison.
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let opaque = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(invalid)?;
            if let (false, Ok(revision)) = (weak, opaque.parse::<u64>()) {
                revisions.push(revision);
            }
        }
        Ok(Self(Some(Precondition::AtRevision(revisions))))
    }
}

/// The `ETag` for a resource last changed at `revision`.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// A name from the URL; one that breaks the naming rules cannot exist, hence 404.
pub fn path_name(raw: &str, what: &str) -> Result<Name, ApiError> {
    Name::try_from(raw).map_err(|_| ApiError::not_found(format!("{what} '{raw}' does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
    }

    fn rejection(body: &str) -> (StatusCode, Option<String>, String) {
        let error = parse_json::<Sample>(body.as_bytes()).unwrap_err();
        let detail = error.detail();
        (error.status(), detail.field.clone(), detail.message.clone())
    }

    #[test]
    fn syntax_errors_are_400_and_field_errors_422_with_paths() {
        assert_eq!(rejection("{").0, StatusCode::BAD_REQUEST);
        assert_eq!(rejection(r#"{"name": "a"} x"#).0, StatusCode::BAD_REQUEST);
        let (status, field, message) = rejection(r#"{"name": "a", "extra": 1}"#);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field.as_deref(), Some("extra"));
        assert!(message.contains("unknown field"), "{message}");
        assert!(!message.contains("line"), "{message}");
        let (_, field, _) = rejection(r#"{"name": "a", "inner": {}}"#);
        assert_eq!(field.as_deref(), Some("inner.url"));
        let (_, field, _) = rejection(r#"{}"#);
        assert_eq!(field.as_deref(), Some("name"));
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), ok, "{value}");
        }
    }
}
