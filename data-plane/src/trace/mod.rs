//! Request and attempt spans following the HTTP and GenAI semantic conventions.
//!
//! Spans are made only while traces are exported, which the binary says by installing a
//! [`HeadSampler`]; otherwise every method here returns at once, so a proxy without
//! OpenTelemetry pays nothing per request. They use the [`TARGET`] target, which the binary
//! enables only then too.
//!
//! A [`Traced`] span holds its OpenTelemetry span beside the `tracing` one. Its attributes are
//! set there directly, several at a time. Recorded as `tracing` fields instead, one at a time,
//! each passed through the registry, both layers (the log layer too, which keeps only
//! `trace_id`) and a vector of its own: about 1.5k instructions a field, 28k for a sampled
//! request; and finding the OpenTelemetry span again from the `tracing` one costs about 800
//! (callgrind).

mod propagation;

use http::HeaderMap;
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use sluice_model::BackendUrl;

use crate::call::ClientCall;
use crate::head_sampling::{HeadSampler, Parent};
use crate::usage::Usage;

/// The `tracing` target of every span the proxy exports.
pub const TARGET: &str = "sluice::trace";

/// The target of attempt spans, within [`TARGET`]: a filter can leave them out by it (the log
/// layer does: a line logged in an attempt shows the request span's `trace_id`).
pub const ATTEMPT_TARGET: &str = "sluice::trace::attempt";

/// A span of `$target` named `$name` with the fields `$field`s and the attributes a request's and an
/// attempt's spans both carry. The attributes are set on the OpenTelemetry span, never recorded
/// through `tracing`; they are declared (empty) so that the layer makes room for all of them at
/// once, where the span's attribute vector grew three times otherwise.
macro_rules! traced_span {
    ($target:expr, $name:expr, $($field:tt)*) => {
        tracing::info_span!(
            target: $target,
            $name,
            $($field)*
            http.request.method = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            gen_ai.operation.name = Empty,
            gen_ai.request.model = Empty,
            gen_ai.response.model = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            sluice.pool = Empty,
        )
    };
}

/// A request's or an attempt's span while traces are exported and the request is sampled;
/// otherwise nothing, and every method returns at once.
#[derive(Clone)]
pub struct Traced {
    /// Entered while the request's or attempt's futures run; its last exit is the span's end.
    span: Span,
    /// The OpenTelemetry span, started: `None` when not traced.
    otel: Option<Context>,
}

impl Traced {
    pub fn none() -> Self {
        Self {
            span: Span::none(),
            otel: None,
        }
    }

    /// The span of one client request, continuing the client's trace when it sent
    /// `traceparent`. A request the [`HeadSampler`] leaves out gets none, and is marked "not
    /// sampled" for its backends instead.
    pub fn request<B>(request: &mut http::Request<B>) -> Self {
        let Some(sampler) = HeadSampler::installed() else {
            return Self::none();
        };
        let continues = propagation::continues_a_trace(request.headers());
        let parent = continues
            .then(|| propagation::extract(request.headers()))
            .flatten();
        let decided_on = parent.as_ref().map(|parent| {
            let context = parent.span().span_context().clone();
            Parent {
                trace_id: context.trace_id(),
                sampled: context.is_sampled(),
            }
        });
        if !sampler.samples(decided_on) {
            if !continues {
                propagation::mark_unsampled(request.headers_mut());
            }
            return Self::none();
        }
        let span = traced_span!(
            TARGET,
            "request",
            // Renamed `{operation} {model}` once routed; one refused before stays `{method}`.
            otel.name = request.method().as_str(),
            otel.kind = "server",
            trace_id = Empty,
            url.path = Empty,
            http.route = Empty,
            sluice.client_key = Empty,
            sluice.attempts = Empty,
        );
        if let Some(parent) = parent {
            let _ = span.set_parent(parent);
        }
        let traced = Self::started(span);
        let Some(otel) = &traced.otel else {
            return traced;
        };
        traced.set(
            [
                KeyValue::new("http.request.method", method_value(request.method())),
                KeyValue::new("url.path", request.uri().path().to_owned()),
            ],
            false,
        );
        // For the log layer, which shows a request's trace id in its log lines.
        let mut trace_id = [0; 32];
        // The buffer is exactly twice the id's length, and hex is ASCII: neither fails.
        let _ = hex::encode_to_slice(
            otel.span().span_context().trace_id().to_bytes(),
            &mut trace_id,
        );
        if let Ok(trace_id) = std::str::from_utf8(&trace_id) {
            traced.span.record("trace_id", trace_id);
        }
        traced
    }

    /// The span of one upstream attempt, a child of the request's span.
    pub fn attempt(call: &ClientCall<'_>, backend: &str, url: &BackendUrl, number: usize) -> Self {
        if !call.traced {
            // Without its request's span it would start a trace of its own.
            return Self::none();
        }
        let span = traced_span!(
            ATTEMPT_TARGET,
            "attempt",
            otel.kind = "client",
            server.address = Empty,
            server.port = Empty,
            sluice.backend = Empty,
            sluice.attempt = Empty,
            sluice.cooldown_ms = Empty,
        );
        let traced = Self::started(span);
        let Some(otel) = &traced.otel else {
            return traced;
        };
        let operation = operation_name(call.operation());
        let (address, port) = server_address(url);
        otel.span()
            .update_name(format!("{operation} {}", call.requested));
        traced.set(
            [
                KeyValue::new("http.request.method", method_value(&call.method)),
                KeyValue::new("gen_ai.operation.name", operation),
                KeyValue::new("gen_ai.request.model", call.requested.to_owned()),
                KeyValue::new("sluice.pool", call.requested.to_owned()),
                KeyValue::new("sluice.backend", backend.to_owned()),
                KeyValue::new("sluice.attempt", int(number)),
            ]
            .into_iter()
            .chain(address.map(|address| KeyValue::new("server.address", address.to_owned())))
            .chain(port.map(|port| KeyValue::new("server.port", i64::from(port)))),
            false,
        );
        traced
    }

    /// Starts the OpenTelemetry span of `span` and keeps it at hand; none for a disabled span.
    fn started(span: Span) -> Self {
        if span.is_disabled() {
            return Self::none();
        }
        let otel = span.context();
        let otel = otel.span().span_context().is_valid().then_some(otel);
        Self { span, otel }
    }

    pub fn is_traced(&self) -> bool {
        self.otel.is_some()
    }

    /// The `tracing` span, to enter while the request's or attempt's futures run.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// What the request turned out to be, once routed.
    pub fn routed(&self, call: &ClientCall<'_>, route: &'static str, client_key: Option<&str>) {
        let Some(otel) = &self.otel else {
            return;
        };
        let operation = operation_name(call.operation());
        // The span was started to read its trace id, so its name is changed on the started span.
        otel.span()
            .update_name(format!("{operation} {}", call.requested));
        self.set(
            [
                KeyValue::new("http.route", route),
                KeyValue::new("gen_ai.operation.name", operation),
                KeyValue::new("gen_ai.request.model", call.requested.to_owned()),
                KeyValue::new("sluice.pool", call.requested.to_owned()),
            ]
            .into_iter()
            .chain(client_key.map(|key| KeyValue::new("sluice.client_key", key.to_owned()))),
            false,
        );
    }

    /// Replaces the client's `traceparent` with the attempt's, so the backend's spans hang
    /// under this attempt.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(otel) = &self.otel {
            propagation::inject(otel, headers);
        }
    }

    /// The HTTP outcome, on a request or an attempt span.
    pub fn status(&self, status: u16) {
        if self.otel.is_none() {
            return;
        }
        let code = KeyValue::new("http.response.status_code", i64::from(status));
        if status >= 400 {
            // A string, as the convention has it ("500", or "timeout" without a status).
            self.set(
                [code, KeyValue::new("error.type", status.to_string())],
                true,
            );
        } else {
            self.set([code], false);
        }
    }

    /// An outcome without an HTTP status (`timeout`, `connect_error`, `no_backend`).
    pub fn failed(&self, error_type: &'static str) {
        self.set([KeyValue::new("error.type", error_type)], true);
    }

    /// How many attempts the request took.
    pub fn attempts(&self, attempts: usize) {
        self.set([KeyValue::new("sluice.attempts", int(attempts))], false);
    }

    /// How long the backend asked to be left alone (`Retry-After` and its kin).
    pub fn cooldown(&self, cooldown_ms: u64) {
        self.set(
            [KeyValue::new("sluice.cooldown_ms", int(cooldown_ms))],
            false,
        );
    }

    /// Token counts and the model that answered, known when the response body has passed.
    pub fn usage(&self, usage: Option<Usage>, response_model: Option<&str>) {
        if self.otel.is_none() {
            return;
        }
        let tokens = usage.map(|usage| {
            [
                KeyValue::new("gen_ai.usage.input_tokens", int(usage.prompt_tokens)),
                KeyValue::new("gen_ai.usage.output_tokens", int(usage.completion_tokens)),
            ]
        });
        let model =
            response_model.map(|model| KeyValue::new("gen_ai.response.model", model.to_owned()));
        self.set(tokens.into_iter().flatten().chain(model), false);
    }

    /// Sets attributes, and the error status when `error`, in one step.
    fn set(&self, attributes: impl IntoIterator<Item = KeyValue>, error: bool) {
        let Some(otel) = &self.otel else {
            return;
        };
        let span = otel.span();
        span.set_attributes(attributes);
        if error {
            span.set_status(Status::error(""));
        }
    }
}

/// Numbers as OpenTelemetry integers: the tracing bridge exports unsigned ones as text.
fn int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// The method as the convention spells it; the usual ones without an allocation.
fn method_value(method: &http::Method) -> opentelemetry::Value {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match KNOWN.iter().find(|known| **known == method.as_str()) {
        Some(known) => (*known).into(),
        None => method.as_str().to_owned().into(),
    }
}

/// `server.address` and `server.port` of a backend, from its URL as parsed when the config was
/// read; the port is implied by the scheme when the URL has none.
fn server_address(url: &BackendUrl) -> (Option<&str>, Option<u16>) {
    let url = url.as_url();
    (url.host_str(), url.port_or_known_default())
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
    fn while_traces_are_not_exported_requests_get_no_span_and_no_header() {
        let mut request = http::Request::post("/v1/chat/completions")
            .body(())
            .unwrap();
        let span = Traced::request(&mut request);
        assert!(!span.is_traced());
        assert!(
            request.headers().is_empty(),
            "not marked unsampled: traces are not exported"
        );
        let mut upstream = HeaderMap::new();
        span.inject(&mut upstream);
        assert!(upstream.is_empty(), "nothing injected when tracing is off");
    }

    #[test]
    fn the_usual_methods_are_named_without_an_allocation() {
        assert!(matches!(
            method_value(&http::Method::POST),
            opentelemetry::Value::String(name) if name.as_str() == "POST"
        ));
        let custom = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_value(&custom).as_str(), "PROPFIND");
    }

    #[test]
    fn a_backends_address_and_port_come_from_its_url() {
        let url = |raw: &str| BackendUrl::try_from(raw.to_owned());
        assert_eq!(
            server_address(&url("https://eastus.openai.azure.com").unwrap()),
            (Some("eastus.openai.azure.com"), Some(443))
        );
        assert_eq!(
            server_address(&url("http://127.0.0.1:8081/v1").unwrap()),
            (Some("127.0.0.1"), Some(8081))
        );
        // What has no address never becomes a backend's URL.
        assert!(url("not a url").is_err());
    }
}
