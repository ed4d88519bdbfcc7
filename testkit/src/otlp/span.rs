//! Spans as a test reads them: ids in hex, attributes in a map, enums instead of integers.

use std::fmt;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, span};

use super::attributes::{Attributes, flatten, hex};

#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    pub kind: SpanKind,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub status: SpanStatus,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    /// Attributes of the resource that exported the span (`service.name`, …).
    pub resource: Attributes,
    /// Name of the instrumentation scope (tracer).
    pub scope: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanStatus {
    pub code: StatusCode,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub attributes: Attributes,
    pub time_unix_nano: u64,
}

impl ReceivedSpan {
    /// The attribute as a string, when it is one.
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(|value| value.as_str())
    }

    /// The attribute as an integer, when it is one.
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(|value| value.as_i64())
    }

    pub fn is_child_of(&self, parent: &ReceivedSpan) -> bool {
        self.trace_id == parent.trace_id
            && self.parent_span_id.as_deref() == Some(parent.span_id.as_str())
    }
}

impl fmt::Display for ReceivedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} trace={} span={} parent={} status={:?}",
            self.name,
            self.kind,
            self.trace_id,
            self.span_id,
            self.parent_span_id.as_deref().unwrap_or("-"),
            self.status.code,
        )?;
        if !self.status.message.is_empty() {
            write!(f, " ({:?})", self.status.message)?;
        }
        write!(f, " attributes={:?}", self.attributes)
    }
}

pub(crate) fn spans_of(request: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut received = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|resource| flatten(&resource.attributes))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .as_ref()
                .map(|scope| scope.name.clone())
                .unwrap_or_default();
            received.extend(
                scope_spans
                    .spans
                    .iter()
                    .map(|span| received_span(span, &resource, &scope)),
            );
        }
    }
    received
}

fn received_span(span: &Span, resource: &Attributes, scope: &str) -> ReceivedSpan {
    let status = span.status.as_ref();
    ReceivedSpan {
        name: span.name.clone(),
        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
        status: SpanStatus {
            code: status
                .and_then(|status| StatusCode::try_from(status.code).ok())
                .unwrap_or(StatusCode::Unset),
            message: status
                .map(|status| status.message.clone())
                .unwrap_or_default(),
        },
        attributes: flatten(&span.attributes),
        events: span.events.iter().map(event).collect(),
        resource: resource.clone(),
        scope: scope.to_owned(),
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
    }
}

fn event(event: &span::Event) -> SpanEvent {
    SpanEvent {
        name: event.name.clone(),
        attributes: flatten(&event.attributes),
        time_unix_nano: event.time_unix_nano,
    }
}
