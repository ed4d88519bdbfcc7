//! W3C trace context on the wire: the client's `traceparent` read, the attempt's written for
//! the backend, and "not sampled" told for a request the proxy does not trace.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TraceFlags};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Whether the request says it continues a trace: only then is there one to read.
pub fn continues_a_trace(headers: &HeaderMap) -> bool {
    headers.contains_key(&TRACEPARENT)
}

/// The client's trace context, when its headers carry a valid one.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    parent.span().span_context().is_valid().then_some(parent)
}

/// Writes `context`'s trace for the backend, replacing the client's `traceparent`.
///
/// What the process's propagators (W3C trace context, then baggage: `src/telemetry/traces.rs`)
/// write, header for header. Without baggage, the one usual case, the trace context is written
/// here: through the propagators, with their `format!` and `String`s, it cost 4.6k
/// instructions per traced attempt (callgrind).
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    if !context.baggage().is_empty() {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(context, &mut HeaderInjector(headers));
        });
        return;
    }
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return;
    }
    let flags = (span_context.trace_flags() & TraceFlags::SAMPLED).to_u8();
    let value = traceparent(
        span_context.trace_id().to_bytes(),
        span_context.span_id().to_bytes(),
        flags,
    );
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(TRACEPARENT.clone(), value);
    }
    // As the W3C propagator does: the span's state, even when it has none (an empty value).
    if let Ok(state) = HeaderValue::from_str(&span_context.trace_state().header()) {
        headers.insert(TRACESTATE.clone(), state);
    }
}

/// A request the sampler left out still tells its backends so, as the W3C propagates a trace:
/// without a `traceparent` of the client's, it gets one flagged "not sampled", so a backend
/// that follows its parent's decision does not start a trace of its own for it.
pub fn mark_unsampled(headers: &mut HeaderMap) {
    // Ids must not be all zeros (W3C); the low bit set is enough for that.
    let trace_id = crate::random::draw::<u128>() | 1;
    let span_id = crate::random::draw::<u64>() | 1;
    let value = traceparent(trace_id.to_be_bytes(), span_id.to_be_bytes(), 0);
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(TRACEPARENT.clone(), value);
    }
}

/// `00-{trace id}-{span id}-{flags}`, in lower-case hex, on the stack. This runs for every
/// request at 10 % sampling (the nine in ten not traced are marked so), and `write!` with
/// `{:032x}` made [`mark_unsampled`] cost 1.9k instructions per request against 1.1k with the
/// hex encoder (callgrind).
fn traceparent(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> [u8; 55] {
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The slices are exactly twice the inputs' lengths, so no call can fail.
    let _ = hex::encode_to_slice(trace_id, &mut value[3..35]);
    let _ = hex::encode_to_slice(span_id, &mut value[36..52]);
    let _ = hex::encode_to_slice([flags], &mut value[53..55]);
    value
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsampled_traceparent_is_the_ids_in_lower_case_hex() {
        for (trace_id, span_id) in [
            (1_u128, 1_u64),
            (u128::MAX, u64::MAX),
            (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331),
        ] {
            let value = traceparent(trace_id.to_be_bytes(), span_id.to_be_bytes(), 0);
            assert_eq!(
                std::str::from_utf8(&value).unwrap(),
                format!("00-{trace_id:032x}-{span_id:016x}-00")
            );
        }
    }

    #[test]
    fn a_marked_request_carries_an_unsampled_traceparent_with_nonzero_ids() {
        let mut headers = HeaderMap::new();
        mark_unsampled(&mut headers);
        let value = headers[&TRACEPARENT].to_str().unwrap();
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "{value}");
        assert_eq!((parts[0], parts[3]), ("00", "00"), "{value}");
        for (id, len) in [(parts[1], 32), (parts[2], 16)] {
            assert_eq!(id.len(), len, "{value}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(
                id.bytes().any(|b| b != b'0'),
                "an all-zero id is invalid: {value}"
            );
        }
    }

    /// The W3C and baggage propagators, as the process installs them.
    fn propagators() -> opentelemetry::propagation::TextMapCompositePropagator {
        opentelemetry::propagation::TextMapCompositePropagator::new(vec![
            Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
            Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
        ])
    }

    fn through_the_propagators(context: &Context) -> HeaderMap {
        use opentelemetry::propagation::TextMapPropagator as _;
        let mut headers = HeaderMap::new();
        propagators().inject_context(context, &mut HeaderInjector(&mut headers));
        headers
    }

    #[test]
    fn the_trace_context_is_written_as_the_propagators_write_it() {
        use opentelemetry::KeyValue;
        use opentelemetry::trace::{SpanContext, SpanId, TraceId, TraceState};
        let trace_id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span_id = SpanId::from_hex("b7ad6b7169203331").unwrap();
        let state = TraceState::from_key_value([("vendor", "opaque"), ("other", "x1")]).unwrap();
        // Flags beyond "sampled" are not propagated (W3C version 00).
        let flags = [
            TraceFlags::SAMPLED,
            TraceFlags::NOT_SAMPLED,
            TraceFlags::new(0xff),
        ];
        let mut cases = Vec::new();
        for flags in flags {
            for state in [TraceState::default(), state.clone()] {
                let span = SpanContext::new(trace_id, span_id, flags, true, state);
                let context = Context::new().with_remote_span_context(span);
                cases.push(context.with_baggage([KeyValue::new("team", "search")]));
                cases.push(context);
            }
        }
        // No span: nothing written.
        cases.push(Context::new());
        // A context with baggage goes through the installed propagators.
        opentelemetry::global::set_text_map_propagator(propagators());
        for context in cases {
            let mut written = HeaderMap::new();
            written.insert(TRACEPARENT.clone(), HeaderValue::from_static("client's"));
            let mut expected = written.clone();
            inject(&context, &mut written);
            expected.extend(through_the_propagators(&context));
            assert_eq!(written, expected, "{context:?}");
        }
    }
}
