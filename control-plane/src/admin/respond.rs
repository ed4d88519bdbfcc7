//! Successful responses: JSON bodies with their `ETag` and, for creations, `Location`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::extract::etag;

/// `status` with a JSON body tagged with the revision it reflects.
pub fn tagged<T: Serialize>(status: StatusCode, revision: u64, body: &T) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(revision)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// 201 Created with `Location` and `ETag`.
pub fn created<T: Serialize>(location: &str, revision: u64, body: &T) -> Response {
    let mut response = tagged(StatusCode::CREATED, revision, body);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// RFC 3339 text for a Unix timestamp in milliseconds.
pub fn rfc3339(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The current time as RFC 3339.
pub fn rfc3339_now() -> String {
    rfc3339(crate::store::unix_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
    }
}
