//! `/_mock/…`: drive a running mock over HTTP (faults, stats, recorded requests), so a mock
//! started by `sluice mock-upstream` can be scripted with curl. No key needed.
//!
//! - `POST /_mock/faults` with one fault or an array (format in [`super::faults`]) →
//!   `{"pending": N}`; 400 with an OpenAI-shaped error if any fault is invalid (none is added).
//! - `GET /_mock/faults` → `{"faults": [...]}`; `DELETE /_mock/faults` → `{"cleared": N}`.
//! - `GET /_mock/stats` → [`super::MockStats`].
//! - `GET /_mock/requests` → `{"requests": [{"seq", "received_at_ms", "method", "path",
//!   "query", "headers": {name: value}, "body"}]}`; `DELETE /_mock/requests` →
//!   `{"cleared": N}` and zeroes the counter.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::ErrorReply;
use super::faults::Fault;
use super::recording::RecordedRequestJson;
use super::server::{MockStats, Shared};

pub(crate) async fn add_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_faults(&body).and_then(|faults| {
        shared
            .faults
            .push(faults)
            .map_err(|error| error.to_string())
    }) {
        Ok(pending) => Json(json!({ "pending": pending })).into_response(),
        Err(message) => {
            let error = ErrorReply::invalid_body(&message);
            (
                error.status,
                [(CONTENT_TYPE, "application/json")],
                error.body,
            )
                .into_response()
        }
    }
}

/// One fault or an array; errors name the offending array element.
fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                serde_json::from_value(item).map_err(|error| format!("fault {index}: {error}"))
            })
            .collect(),
        item => serde_json::from_value(item)
            .map(|fault| vec![fault])
            .map_err(|error| error.to_string()),
    }
}

pub(crate) async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "faults": shared.faults.pending() }))
}

pub(crate) async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "cleared": shared.faults.clear() }))
}

pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(shared.stats())
}

pub(crate) async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    let requests = shared.recorder.requests();
    let requests: Vec<RecordedRequestJson<'_>> = requests.iter().map(Into::into).collect();
    Json(json!({ "requests": requests })).into_response()
}

pub(crate) async fn reset_requests(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let cleared = shared.recorder.recorded();
    shared.recorder.reset();
    Json(json!({ "cleared": cleared }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_fault_or_many_and_names_the_bad_one() {
        assert_eq!(parse_faults(br#"{"kind":"reset"}"#).map(|f| f.len()), Ok(1));
        assert_eq!(
            parse_faults(br#"[{"kind":"reset"},{"kind":"latency","ms":1}]"#).map(|f| f.len()),
            Ok(2)
        );
        let error = parse_faults(br#"[{"kind":"reset"},{"kind":"latency"}]"#).err();
        assert!(error.is_some_and(|message| message.starts_with("fault 1: ")));
        assert!(parse_faults(b"nope").is_err());
    }
}
