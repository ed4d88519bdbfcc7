//! Request and attempt spans following the HTTP and GenAI semantic conventions.
//!
//! Spans use the [`TARGET`] target, which the binary enables only when traces are exported:
//! otherwise `info_span!` is a disabled callsite and every function here returns at once, so
//! a proxy without OpenTelemetry pays nothing per request.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::call::ClientCall;
use crate::head_sampling::{HeadSampler, Parent};
use crate::usage::Usage;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The `tracing` target of every span the proxy exports.
pub const TARGET: &str = "sluice::trace";

/// The span of one client request, continuing the client's trace when it sent `traceparent`;
/// none for a request the [`HeadSampler`] leaves out.
pub fn server_span(method: &http::Method, path: &str, headers: &HeaderMap) -> Span {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return Span::none();
    }
    // Only a request that says it continues a trace has one to read.
    let parent = headers.contains_key(&TRACEPARENT).then(|| {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
    });
    let parent = parent.filter(|parent| parent.span().span_context().is_valid());
    let decided_on = parent.as_ref().map(|parent| {
        let context = parent.span().span_context().clone();
        Parent {
            trace_id: context.trace_id(),
            sampled: context.is_sampled(),
        }
    });
    if !HeadSampler::installed().samples(decided_on) {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        // Renamed `{operation} {model}` once routed; a request refused before stays `{method}`.
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = Empty,
        trace_id = Empty,
        http.request.method = %method,
        url.path = path,
        http.route = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        sluice.pool = Empty,
        sluice.client_key = Empty,
        sluice.attempts = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

/// A request the sampler left out still tells its backends so, as the W3C propagates a trace:
/// without a `traceparent` of the client's, it gets one flagged "not sampled", so a backend
/// that follows its parent's decision does not start a trace of its own for it. Nothing is
/// added while traces are not exported.
pub fn mark_unsampled(span: &Span, headers: &mut HeaderMap) {
    if !span.is_disabled()
        || headers.contains_key(&TRACEPARENT)
        || !tracing::enabled!(target: TARGET, tracing::Level::INFO)
    {
        return;
    }
    // Ids must not be all zeros (W3C); the low bit set is enough for that.
    let trace_id = rand::random::<u128>() | 1;
    let span_id = rand::random::<u64>() | 1;
    if let Ok(value) = HeaderValue::from_bytes(&unsampled_traceparent(trace_id, span_id)) {
        headers.insert(TRACEPARENT.clone(), value);
    }
}

/// `00-{trace id}-{span id}-00`, the ids in lower-case hex, on the stack. This runs for nine
/// in ten requests at 10 % sampling, and `write!` with `{:032x}` made the whole of
/// [`mark_unsampled`] cost 1.9k instructions per request against 1.1k with the hex encoder
/// (callgrind).
fn unsampled_traceparent(trace_id: u128, span_id: u64) -> [u8; 55] {
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The slices are exactly twice the ids' lengths, so neither call can fail.
    let _ = hex::encode_to_slice(trace_id.to_be_bytes(), &mut value[3..35]);
    let _ = hex::encode_to_slice(span_id.to_be_bytes(), &mut value[36..52]);
    value
}

/// What the request turned out to be, once routed.
pub fn routed(span: &Span, call: &ClientCall, route: &'static str, client_key: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let operation = operation_name(&call.operation);
    // The span was started to read its trace id, so its name is changed on the started span.
    span.context()
        .span()
        .update_name(format!("{operation} {}", call.requested));
    span.record("http.route", route);
    span.record("gen_ai.operation.name", operation);
    span.record("gen_ai.request.model", call.requested.as_str());
    span.record("sluice.pool", call.requested.as_str());
    if let Some(key) = client_key {
        span.record("sluice.client_key", key);
    }
}

/// The span of one upstream attempt, a child of the request's span.
pub fn attempt_span(call: &ClientCall, backend: &str, base_url: &str, number: usize) -> Span {
    if !call.traced {
        // Without its request's span it would start a trace of its own.
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "attempt",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = %call.method,
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.request.model = call.requested.as_str(),
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        sluice.pool = call.requested.as_str(),
        sluice.backend = backend,
        sluice.attempt = int(number),
        sluice.cooldown_ms = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let operation = operation_name(&call.operation);
    span.record("otel.name", format!("{operation} {}", call.requested));
    span.record("gen_ai.operation.name", operation);
    if let Ok(uri) = base_url.parse::<http::Uri>() {
        if let Some(host) = uri.host() {
            span.record("server.address", host);
        }
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            span.record("server.port", i64::from(port));
        }
    }
    span
}

/// Replaces the client's `traceparent` with the attempt's, so the backend's spans hang
/// under this attempt.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The HTTP outcome, on a request or an attempt span.
pub fn status(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 400 {
        // A string, as the convention has it ("500", or "timeout" without a status).
        span.record("error.type", tracing::field::display(status));
        span.record("otel.status_code", "ERROR");
    }
}

/// An outcome without an HTTP status (`timeout`, `connect_error`, `no_backend`).
pub fn failed(span: &Span, error_type: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

/// Token counts and the model that answered, known when the response body has passed.
pub fn usage(spans: [&Span; 2], usage: Option<Usage>, response_model: Option<&str>) {
    for span in spans {
        if span.is_disabled() {
            continue;
        }
        if let Some(usage) = usage {
            span.record("gen_ai.usage.input_tokens", int(usage.prompt_tokens));
            span.record("gen_ai.usage.output_tokens", int(usage.completion_tokens));
        }
        if let Some(model) = response_model {
            span.record("gen_ai.response.model", model);
        }
    }
}

/// Numbers as OpenTelemetry integers: the tracing bridge exports unsigned ones as text.
pub fn int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// GenAI operation names for the operations with one; the path itself otherwise.
/// The GenAI name of an operation, from a fixed set: it names spans, and a name taken from
/// the client's path (`files/file-abc123/content`) would give every call a span name of its own.
fn operation_name(operation: &str) -> &'static str {
    match operation {
        "chat/completions" => "chat",
        "completions" => "text_completion",
        "embeddings" => "embeddings",
        "responses" => "responses",
        "images/generations" => "image_generation",
        "images/edits" => "images/edits",
        "images/variations" => "images/variations",
        "audio/speech" => "audio/speech",
        "audio/transcriptions" => "audio/transcriptions",
        "audio/translations" => "audio/translations",
        "moderations" => "moderations",
        _ => "other",
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The `model` of a response, read from its first bytes (it precedes the choices in both
/// JSON answers and stream chunks).
pub fn response_model(first_chunk: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"model\"";
    let head = &first_chunk[..first_chunk.len().min(2048)];
    let at = memchr::memmem::find(head, KEY)? + KEY.len();
    let rest = &head[at..];
    let open = rest.iter().position(|b| *b == b'"')?;
    if rest[..open]
        .iter()
        .any(|b| !b.is_ascii_whitespace() && *b != b':')
    {
        return None;
    }
    let value = &rest[open + 1..];
    let close = value.iter().position(|b| *b == b'"' || *b == b'\\')?;
    std::str::from_utf8(&value[..close]).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_response_model_from_json_and_stream_chunks() {
        assert_eq!(
            response_model(br#"{"id":"x","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[]}"#).as_deref(),
            Some("gpt-4o-2024-08-06")
        );
        assert_eq!(
            response_model(b"data: {\"id\":\"x\",\"model\" : \"gpt-4o\",\"choices\":[]}\n\n")
                .as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(response_model(br#"{"data":[1,2]}"#), None);
        assert_eq!(response_model(br#"{"model":null}"#), None);
    }

    #[test]
    fn operations_get_their_genai_names() {
        assert_eq!(operation_name("chat/completions"), "chat");
        assert_eq!(operation_name("embeddings"), "embeddings");
        assert_eq!(operation_name("audio/speech"), "audio/speech");
        assert_eq!(operation_name("files/file-abc123/content"), "other");
        assert_eq!(operation_name("made/up/thing"), "other");
    }

    #[test]
    fn an_unsampled_traceparent_is_the_ids_in_lower_case_hex() {
        for (trace_id, span_id) in [
            (1_u128, 1_u64),
            (u128::MAX, u64::MAX),
            (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331),
        ] {
            let value = unsampled_traceparent(trace_id, span_id);
            assert_eq!(
                std::str::from_utf8(&value).unwrap(),
                format!("00-{trace_id:032x}-{span_id:016x}-00")
            );
        }
    }

    #[test]
    fn without_a_subscriber_nothing_is_marked_unsampled() {
        let mut headers = HeaderMap::new();
        mark_unsampled(&Span::none(), &mut headers);
        assert!(headers.is_empty(), "traces are not exported");
    }

    #[test]
    fn without_a_subscriber_spans_are_disabled_and_cost_nothing() {
        let headers = HeaderMap::new();
        let span = server_span(&http::Method::POST, "/v1/chat/completions", &headers);
        assert!(span.is_disabled());
        let mut upstream = HeaderMap::new();
        inject(&span, &mut upstream);
        assert!(upstream.is_empty(), "nothing injected when tracing is off");
    }
}
