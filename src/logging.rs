use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sluice_data_plane::trace::{ATTEMPT_TARGET, TARGET as TRACE_TARGET};
use std::fmt;
use tracing::Level;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "SLUICE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter in tracing's EnvFilter syntax, e.g. `info,sluice_control_plane=debug`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    pub log: String,
}

/// Logs to stdout with `args`' filter and format; with a tracer, spans of the proxy's
/// [`TRACE_TARGET`] go to OpenTelemetry as well.
pub fn init(args: &LogArgs, tracer: Option<&SdkTracerProvider>) -> anyhow::Result<()> {
    subscriber(args, tracer)?.try_init()?;
    Ok(())
}

fn subscriber(
    args: &LogArgs,
    tracer: Option<&SdkTracerProvider>,
) -> anyhow::Result<impl tracing::Subscriber + Send + Sync + 'static> {
    // Libraries below us log at debug level per request and connection; keep them quiet
    // unless asked for by name. Request spans are off for the log output unless JSON logs
    // should carry their trace ids: a span nobody listens to costs the request path nothing.
    let spans_in_logs = tracer.is_some() && matches!(args.log_format, LogFormat::Json);
    // The operator's directives come after ours, so naming a quieted target turns it back up.
    // Of the proxy's spans only the request's: its `trace_id` is all a log line shows of a span,
    // and a line logged inside an attempt then shows it too; the attempt's span would cost the
    // log layer its making, every enter and exit, and its closing, for nothing.
    let filter = EnvFilter::try_new(format!(
        "{QUIET},{},{TRACE_TARGET}={},{ATTEMPT_TARGET}=off",
        args.log,
        if spans_in_logs { "info" } else { "off" }
    ))?;
    let output = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(spans_in_logs)
            .with_span_list(false)
            .fmt_fields(TraceIdOnly)
            .with_filter(filter)
            .boxed(),
    };
    // A list, not an `Option` layer: an absent `Option` layer counts as interested in every
    // callsite, which would make the registry build every request span nobody exports.
    let mut layers = vec![output];
    if let Some(provider) = tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("sluice"))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                // Nothing reads OpenTelemetry's current context: spans are told their parents,
                // and `traceparent` is written from the attempt's span. Activating it on every
                // enter of a sampled request's spans costs a context clone and a thread-local
                // stack push each time.
                .with_context_activation(false)
                .with_filter(Targets::new().with_target(TRACE_TARGET, Level::INFO))
                .boxed(),
        );
    }
    Ok(tracing_subscriber::registry().with(layers))
}

/// What a JSON log line shows of the request span it happened in: its `trace_id`, the link to
/// the trace, and nothing else. The span's other fields are in the trace; formatting all of
/// them into every span (and parsing and re-writing them on every `record`, as tracing's
/// `JsonFields` does) cost more than the rest of a traced request.
struct TraceIdOnly;

impl<'writer> FormatFields<'writer> for TraceIdOnly {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut trace_id = TraceIdVisitor(None);
        fields.record(&mut trace_id);
        // Always a JSON object: the JSON formatter reads it back as one.
        match trace_id.0 {
            Some(id) => write_trace_id(&mut writer, &id),
            None => writer.write_str("{}"),
        }
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut trace_id = TraceIdVisitor(None);
        fields.record(&mut trace_id);
        if let Some(id) = trace_id.0 {
            current.fields.clear();
            write_trace_id(&mut current.fields, &id)?;
        }
        Ok(())
    }
}

/// The span's fields as the JSON object the log line shows: `{"trace_id":"…"}`. Escaped by
/// `serde_json::to_string`, which is about a tenth of the cost of formatting a JSON value.
fn write_trace_id(out: &mut impl fmt::Write, id: &str) -> fmt::Result {
    let id = serde_json::to_string(id).map_err(|_| fmt::Error)?;
    out.write_str("{\"trace_id\":")?;
    out.write_str(&id)?;
    out.write_str("}")
}

struct TraceIdVisitor(Option<String>);

impl Visit for TraceIdVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "trace_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = Some(value.to_owned());
        }
    }
}

/// The Azure SDK logs every failed request and its credential choices at info; Sluice logs
/// the outcome itself (with the reason), once per backend.
const QUIET: &str = "sqlx=warn,hyper=warn,h2=warn,tower=warn,tonic=warn,reqwest=warn,\
                     opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn,\
                     typespec_client_core=warn,azure_core=warn,azure_identity=warn";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(log_format: LogFormat) -> LogArgs {
        LogArgs {
            log_format,
            log: "trace".into(),
        }
    }

    fn chat_request() -> http::Request<()> {
        http::Request::post("/v1/chat/completions")
            .body(())
            .unwrap()
    }

    /// Without a tracer, request spans must be disabled callsites, even with every log on and
    /// a sampler installed: the registry would otherwise allocate and track two spans per
    /// request for nothing.
    #[test]
    fn request_spans_cost_nothing_without_a_tracer() {
        sluice_data_plane::head_sampling::HeadSampler::default().install();
        for format in [LogFormat::Text, LogFormat::Json] {
            let subscriber = subscriber(&args(format), None).unwrap();
            tracing::subscriber::with_default(subscriber, || {
                let span = sluice_data_plane::trace::Traced::request(&mut chat_request());
                assert!(!span.is_traced());
            });
        }
    }

    #[test]
    fn request_spans_are_recorded_with_a_tracer() {
        // As the binary does when it exports traces.
        sluice_data_plane::head_sampling::HeadSampler::default().install();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(&args(LogFormat::Text), Some(&provider)).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = sluice_data_plane::trace::Traced::request(&mut chat_request());
            assert!(span.is_traced());
        });
    }

    #[test]
    fn a_bad_filter_is_refused() {
        let bad = LogArgs {
            log_format: LogFormat::Text,
            log: "info,=[".into(),
        };
        assert!(subscriber(&bad, None).is_err());
    }
}
