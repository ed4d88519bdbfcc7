//! What the mock saw: a request counter and the most recent requests.
//!
//! Recording keeps the body as the shared `Bytes` the server already holds and parses JSON
//! only when a test asks, so the request path pays a header-map clone and a short lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, HeaderMap};
use axum::http::{Method, Uri};
use serde::Serialize;

/// How many requests a mock remembers.
pub const RECORDED_REQUESTS: usize = 1000;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// 1 for the first request this mock counted.
    pub seq: u64,
    pub received_at: SystemTime,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body parsed as JSON; `None` when it is not JSON.
    pub body: Option<serde_json::Value>,
    pub raw_body: Bytes,
}

impl RecordedRequest {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The token of `Authorization: Bearer …`.
    pub fn bearer_token(&self) -> Option<&str> {
        self.headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    }

    /// The `api-key` header.
    pub fn api_key(&self) -> Option<&str> {
        self.header("api-key")
    }
}

/// The JSON form served by `GET /_mock/requests`. Header values that are not text are left out;
/// repeated headers are joined with `, `.
#[derive(Serialize)]
pub(crate) struct RecordedRequestJson<'a> {
    seq: u64,
    received_at_ms: u128,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: BTreeMap<&'a str, String>,
    body: Option<&'a serde_json::Value>,
}

impl<'a> From<&'a RecordedRequest> for RecordedRequestJson<'a> {
    fn from(request: &'a RecordedRequest) -> Self {
        let mut headers: BTreeMap<&str, String> = BTreeMap::new();
        for (name, value) in &request.headers {
            let Ok(value) = value.to_str() else { continue };
            headers
                .entry(name.as_str())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
        Self {
            seq: request.seq,
            received_at_ms: request
                .received_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis()),
            method: request.method.as_str(),
            path: &request.path,
            query: request.query.as_deref(),
            headers,
            body: request.body.as_ref(),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    received_at: SystemTime,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: bool,
    total: AtomicU64,
    recent: Mutex<VecDeque<Entry>>,
}

impl Recorder {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            total: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(if enabled {
                RECORDED_REQUESTS
            } else {
                0
            })),
        }
    }

    /// Counts the request and, when enabled, remembers it (evicting the oldest).
    pub fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
        let seq = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled {
            return;
        }
        let entry = Entry {
            seq,
            received_at: SystemTime::now(),
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            body: body.clone(),
        };
        let mut recent = self.lock();
        if recent.len() == RECORDED_REQUESTS {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn recorded(&self) -> usize {
        self.lock().len()
    }

    /// The remembered requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        // Clone out cheaply (`Bytes` and `Uri` share their buffers) under the lock; JSON
        // parsing happens after it is released.
        let entries: Vec<Entry> = self.lock().iter().cloned().collect();
        entries
            .into_iter()
            .map(|entry| RecordedRequest {
                seq: entry.seq,
                received_at: entry.received_at,
                method: entry.method,
                path: entry.uri.path().to_owned(),
                query: entry.uri.query().map(str::to_owned),
                headers: entry.headers,
                body: serde_json::from_slice(&entry.body).ok(),
                raw_body: entry.body,
            })
            .collect()
    }

    /// Forgets the remembered requests and restarts the counter.
    pub fn reset(&self) {
        let mut recent = self.lock();
        recent.clear();
        self.total.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        // Entries are pushed and popped whole, so a poisoned queue is still consistent.
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn record(recorder: &Recorder, path: &str, body: &'static [u8]) {
        let mut headers = HeaderMap::new();
        headers.insert("api-key", HeaderValue::from_static("k"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let uri: Uri = path.parse().expect("valid uri");
        recorder.record(&Method::POST, &uri, &headers, &Bytes::from_static(body));
    }

    #[test]
    fn remembers_requests_with_parsed_bodies() {
        let recorder = Recorder::new(true);
        record(&recorder, "/v1/embeddings?x=1", br#"{"input":"a"}"#);
        record(&recorder, "/nope", b"not json");
        let requests = recorder.requests();
        assert_eq!(requests.len(), 2);
        let first = &requests[0];
        assert_eq!((first.seq, first.path.as_str()), (1, "/v1/embeddings"));
        assert_eq!(first.query.as_deref(), Some("x=1"));
        assert_eq!(
            first.body.as_ref().map(|b| b["input"].clone()),
            Some("a".into())
        );
        assert_eq!(first.api_key(), Some("k"));
        assert_eq!(first.bearer_token(), Some("t"));
        assert!(requests[1].body.is_none());
    }

    #[test]
    fn keeps_only_the_most_recent() {
        let recorder = Recorder::new(true);
        for _ in 0..RECORDED_REQUESTS + 5 {
            record(&recorder, "/", b"{}");
        }
        let requests = recorder.requests();
        assert_eq!(requests.len(), RECORDED_REQUESTS);
        assert_eq!(requests[0].seq, 6);
        assert_eq!(recorder.count(), RECORDED_REQUESTS as u64 + 5);
        recorder.reset();
        assert_eq!((recorder.count(), recorder.recorded()), (0, 0));
    }

    #[test]
    fn disabled_recorder_still_counts() {
        let recorder = Recorder::new(false);
        record(&recorder, "/", b"{}");
        assert_eq!(recorder.count(), 1);
        assert!(recorder.requests().is_empty());
    }

    #[test]
    fn json_form_joins_repeated_headers() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let request = RecordedRequest {
            seq: 1,
            received_at: SystemTime::UNIX_EPOCH,
            method: Method::POST,
            path: "/".to_owned(),
            query: None,
            headers,
            body: None,
            raw_body: Bytes::new(),
        };
        let json = serde_json::to_value(RecordedRequestJson::from(&request)).ok();
        assert_eq!(
            json.map(|j| j["headers"]["x-a"].clone()),
            Some("1, 2".into())
        );
    }
}
