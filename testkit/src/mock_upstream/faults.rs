//! Faults a test can inject: what they are, how they look in JSON, and their checked form.
//!
//! JSON (for `POST /_mock/faults`), one object or an array of them:
//!
//! ```json
//! {"kind": "status", "status": 429, "retry_after_ms": 2000, "times": 1}
//! {"kind": "status", "status": 503, "headers": {"x-should-retry": "true"}, "body": {"error": {}}}
//! {"kind": "reset", "deployment": "gpt-4o"}
//! {"kind": "latency", "ms": 250, "operation": "embeddings"}
//! {"kind": "stream_abort_after", "chunks": 3, "times": 2}
//! {"kind": "stall_after", "chunks": 2}
//! ```
//!
//! `times` (default: until cleared), `deployment` and `operation` are optional on every kind.
//! `retry_after_ms` expands into the rate-limit headers of [`Fault::rate_limited`]. A `body`
//! that is a JSON string is sent as plain text (think of a proxy's HTML error page).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::routing::Operation;

/// A fault applied to the next matching requests, oldest fault first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultJson", into = "FaultJson")]
pub struct Fault {
    pub kind: FaultKind,
    /// How many requests it applies to; `None` until cleared.
    pub times: Option<u32>,
    /// Only requests for this deployment (Azure path) or model (body).
    pub deployment: Option<String>,
    /// Only requests for this operation.
    pub operation: Option<Operation>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this status instead of doing the work. Without a `body`, a body shaped like
    /// the real service's error for that status is sent.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<serde_json::Value>,
    },
    /// Close the connection without sending a response.
    Reset,
    /// Delay the response head this much more, then answer normally.
    Latency(Duration),
    /// Send this many stream events (the Azure prompt-filter chunk counts), then break the body
    /// off. Streaming requests only.
    StreamAbortAfter { chunks: u32 },
    /// Send this many stream events (the Azure prompt-filter chunk counts), then nothing more
    /// while keeping the connection open, as a backend that hangs mid-response. A plain JSON
    /// answer (any non-streaming request; `chunks` does not apply) sends its head, with the
    /// full `content-length`, and the first half of its body, then hangs the same way. The
    /// hang ends when the client goes away, or after [`STALL_LIMIT`] with the body broken off
    /// (a graceful shutdown of the mock waits for it, as for any response in flight).
    StallAfter { chunks: u32 },
}

/// The longest a [`FaultKind::StallAfter`] keeps a response hanging, so nothing waits forever.
pub const STALL_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FaultError {
    #[error("{0} is not an HTTP status code")]
    Status(u16),
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
    #[error("the value of header {0:?} is not a valid header value")]
    HeaderValue(String),
    #[error("times must be at least 1 (leave it out for \"until cleared\")")]
    ZeroTimes,
}

// === impl Fault ===

impl Fault {
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            times: None,
            deployment: None,
            operation: None,
        }
    }

    /// Answer with `status` and the service's usual error body for it.
    pub fn status(status: u16) -> Self {
        Self::new(FaultKind::Status {
            status,
            headers: Vec::new(),
            body: None,
        })
    }

    /// A 429 carrying every rate-limit signal Azure and OpenAI send: `retry-after-ms`,
    /// `retry-after` (whole seconds, rounded up), `x-ratelimit-reset-requests` (Go duration)
    /// and `x-ratelimit-remaining-requests: 0`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut fault = Self::status(429);
        if let FaultKind::Status { headers, .. } = &mut fault.kind {
            *headers = rate_limit_headers(retry_after);
        }
        fault
    }

    pub fn reset() -> Self {
        Self::new(FaultKind::Reset)
    }

    pub fn latency(delay: Duration) -> Self {
        Self::new(FaultKind::Latency(delay))
    }

    pub fn stream_abort_after(chunks: u32) -> Self {
        Self::new(FaultKind::StreamAbortAfter { chunks })
    }

    /// Hang after `chunks` stream events, or half-way through a plain body
    /// ([`FaultKind::StallAfter`]).
    pub fn stall_after(chunks: u32) -> Self {
        Self::new(FaultKind::StallAfter { chunks })
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    pub fn once(self) -> Self {
        self.times(1)
    }

    pub fn deployment(mut self, deployment: impl Into<String>) -> Self {
        self.deployment = Some(deployment.into());
        self
    }

    pub fn operation(mut self, operation: Operation) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Adds a response header to a `Status` fault (other kinds send no response of their own,
    /// so it is ignored there).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let FaultKind::Status { headers, .. } = &mut self.kind {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// Replaces the default body of a `Status` fault (ignored by other kinds).
    pub fn body(mut self, json: serde_json::Value) -> Self {
        if let FaultKind::Status { body, .. } = &mut self.kind {
            *body = Some(json);
        }
        self
    }

    /// Checks everything that could fail and pre-builds what the response needs, so applying
    /// the fault later cannot fail.
    pub(crate) fn prepare(&self) -> Result<Action, FaultError> {
        if self.times == Some(0) {
            return Err(FaultError::ZeroTimes);
        }
        Ok(match &self.kind {
            FaultKind::Status {
                status,
                headers,
                body,
            } => Action::Status(prepare_status(*status, headers, body.as_ref())?),
            FaultKind::Reset => Action::Reset,
            FaultKind::Latency(delay) => Action::Latency(*delay),
            FaultKind::StreamAbortAfter { chunks } => Action::StreamAbortAfter(*chunks),
            FaultKind::StallAfter { chunks } => Action::StallAfter(*chunks),
        })
    }
}

/// A checked fault, ready to apply.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Status(StatusReply),
    Reset,
    Latency(Duration),
    StreamAbortAfter(u32),
    StallAfter(u32),
}

#[derive(Clone, Debug)]
pub(crate) struct StatusReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `None`: build the service's default error body for the request at hand.
    pub body: Option<Bytes>,
    /// From `retry-after`, quoted by the default 429 message.
    pub retry_after_secs: Option<u64>,
}

fn prepare_status(
    status: u16,
    headers: &[(String, String)],
    body: Option<&serde_json::Value>,
) -> Result<StatusReply, FaultError> {
    let status = StatusCode::from_u16(status).map_err(|_| FaultError::Status(status))?;
    let mut header_map = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let header_name = HeaderName::try_from(name.as_str())
            .map_err(|_| FaultError::HeaderName(name.clone()))?;
        let header_value = HeaderValue::try_from(value.as_str())
            .map_err(|_| FaultError::HeaderValue(name.clone()))?;
        header_map.append(header_name, header_value);
    }
    let body = body.map(|body| match body {
        serde_json::Value::String(text) => {
            if !header_map.contains_key(CONTENT_TYPE) {
                header_map.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            Bytes::from(text.clone())
        }
        json => Bytes::from(json.to_string()),
    });
    let retry_after_secs = header_map
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse().ok());
    Ok(StatusReply {
        status,
        headers: header_map,
        body,
        retry_after_secs,
    })
}

fn rate_limit_headers(retry_after: Duration) -> Vec<(String, String)> {
    let millis = retry_after.as_millis();
    vec![
        ("retry-after-ms".to_owned(), millis.to_string()),
        ("retry-after".to_owned(), millis.div_ceil(1000).to_string()),
        (
            "x-ratelimit-reset-requests".to_owned(),
            go_duration(retry_after),
        ),
        ("x-ratelimit-remaining-requests".to_owned(), "0".to_owned()),
    ]
}

/// OpenAI writes reset times as Go durations: `12ms`, `2s`, `1.5s`, `6m0s`.
fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let minutes = millis / 60_000;
    let seconds = (millis % 60_000) as f64 / 1000.0;
    if minutes == 0 {
        format!("{seconds}s")
    } else {
        format!("{minutes}m{seconds}s")
    }
}

// === JSON form ===

#[derive(Serialize, Deserialize)]
struct FaultJson {
    #[serde(flatten)]
    kind: KindJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    times: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    operation: Option<Operation>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum KindJson {
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<serde_json::Value>,
        #[serde(default, skip_serializing)]
        retry_after_ms: Option<u64>,
    },
    Reset,
    Latency {
        ms: u64,
    },
    StreamAbortAfter {
        chunks: u32,
    },
    StallAfter {
        chunks: u32,
    },
}

impl TryFrom<FaultJson> for Fault {
    type Error = FaultError;

    fn try_from(json: FaultJson) -> Result<Self, FaultError> {
        let kind = match json.kind {
            KindJson::Status {
                status,
                headers: extra,
                body,
                retry_after_ms,
            } => {
                let mut headers = retry_after_ms
                    .map(|ms| rate_limit_headers(Duration::from_millis(ms)))
                    .unwrap_or_default();
                // Explicit headers win over the ones `retry_after_ms` implies.
                headers.retain(|(name, _)| !extra.contains_key(name));
                headers.extend(extra);
                FaultKind::Status {
                    status,
                    headers,
                    body,
                }
            }
            KindJson::Reset => FaultKind::Reset,
            KindJson::Latency { ms } => FaultKind::Latency(Duration::from_millis(ms)),
            KindJson::StreamAbortAfter { chunks } => FaultKind::StreamAbortAfter { chunks },
            KindJson::StallAfter { chunks } => FaultKind::StallAfter { chunks },
        };
        let fault = Self {
            kind,
            times: json.times,
            deployment: json.deployment,
            operation: json.operation,
        };
        fault.prepare()?;
        Ok(fault)
    }
}

impl From<Fault> for FaultJson {
    fn from(fault: Fault) -> Self {
        let kind = match fault.kind {
            FaultKind::Status {
                status,
                headers,
                body,
            } => KindJson::Status {
                status,
                headers: headers.into_iter().collect(),
                body,
                retry_after_ms: None,
            },
            FaultKind::Reset => KindJson::Reset,
            FaultKind::Latency(delay) => KindJson::Latency {
                ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            },
            FaultKind::StreamAbortAfter { chunks } => KindJson::StreamAbortAfter { chunks },
            FaultKind::StallAfter { chunks } => KindJson::StallAfter { chunks },
        };
        Self {
            kind,
            times: fault.times,
            deployment: fault.deployment,
            operation: fault.operation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_json(value: serde_json::Value) -> Result<Fault, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn rate_limited_carries_every_retry_signal() {
        let Ok(Action::Status(reply)) = Fault::rate_limited(Duration::from_millis(1500)).prepare()
        else {
            panic!("a 429 fault prepares to a status reply");
        };
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.headers["retry-after-ms"], "1500");
        assert_eq!(reply.headers["retry-after"], "2");
        assert_eq!(reply.headers["x-ratelimit-reset-requests"], "1.5s");
        assert_eq!(reply.headers["x-ratelimit-remaining-requests"], "0");
        assert_eq!(reply.retry_after_secs, Some(2));
        assert!(reply.body.is_none());
    }

    #[test]
    fn go_durations_look_like_openais() {
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn json_retry_after_ms_expands_and_explicit_headers_win() {
        let fault = from_json(json!({
            "kind": "status", "status": 429, "retry_after_ms": 2000,
            "headers": {"retry-after": "7"}, "times": 2, "deployment": "gpt-4o",
            "operation": "chat/completions",
        }))
        .expect("valid fault");
        assert_eq!(fault.times, Some(2));
        assert_eq!(fault.deployment.as_deref(), Some("gpt-4o"));
        assert_eq!(fault.operation, Some(Operation::ChatCompletions));
        let FaultKind::Status { headers, .. } = &fault.kind else {
            panic!("status fault expected");
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("retry-after-ms"), Some("2000"));
        assert_eq!(get("retry-after"), Some("7"));
    }

    #[test]
    fn json_round_trips_every_kind() {
        for fault in [
            Fault::status(503)
                .header("x-should-retry", "true")
                .body(json!({"error": {}})),
            Fault::reset().once(),
            Fault::latency(Duration::from_millis(250)).operation(Operation::Embeddings),
            Fault::stream_abort_after(3).times(2).deployment("d"),
            Fault::stall_after(2)
                .once()
                .operation(Operation::ChatCompletions),
        ] {
            let json = serde_json::to_value(&fault).expect("serializable");
            assert_eq!(from_json(json).expect("parses back"), fault);
        }
        assert_eq!(
            serde_json::to_value(Fault::latency(Duration::from_millis(5))).ok(),
            Some(json!({"kind": "latency", "ms": 5}))
        );
        assert_eq!(
            serde_json::to_value(Fault::stall_after(2)).ok(),
            Some(json!({"kind": "stall_after", "chunks": 2}))
        );
    }

    #[test]
    fn invalid_faults_are_refused() {
        assert!(from_json(json!({"kind": "status", "status": 42})).is_err());
        assert!(from_json(json!({"kind": "status"})).is_err());
        assert!(from_json(json!({"kind": "teleport"})).is_err());
        assert!(from_json(json!({"kind": "reset", "times": 0})).is_err());
        assert_eq!(
            Fault::status(500).header("bad header", "x").prepare().err(),
            Some(FaultError::HeaderName("bad header".to_owned()))
        );
    }

    #[test]
    fn string_bodies_are_sent_as_text() {
        let Ok(Action::Status(reply)) = Fault::status(502)
            .body(json!("<html>bad gateway</html>"))
            .prepare()
        else {
            panic!("status reply expected");
        };
        assert_eq!(reply.headers[CONTENT_TYPE], "text/plain");
        assert_eq!(
            reply.body.as_deref(),
            Some(&b"<html>bad gateway</html>"[..])
        );
    }
}
