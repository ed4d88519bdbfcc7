//! Span export over OTLP/gRPC, configured by the standard `OTEL_*` variables. The exporter
//! reads its endpoint, headers and timeout itself; the SDK reads the sampler
//! (`OTEL_TRACES_SAMPLER[_ARG]`) and batching (`OTEL_BSP_*`).

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::metrics_export::OtelEnv;
use super::metrics_export::config::{ENDPOINT, PROTOCOL, resource};

const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("{var}={value:?}: only OTLP over gRPC (\"grpc\") is supported")]
    Protocol { var: &'static str, value: String },
    #[error("cannot set up the OTLP span exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Traces are exported when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and an
/// OTLP endpoint is configured, as with metrics; never with `OTEL_SDK_DISABLED=true`.
pub fn wanted(env: &OtelEnv) -> bool {
    env.exports_otlp(TRACES_EXPORTER, &[TRACES_ENDPOINT, ENDPOINT])
}

/// The tracer provider when traces are wanted; also installs the W3C propagators that read
/// `traceparent` from clients and write it to backends. Call inside a tokio runtime.
pub fn provider(env: &OtelEnv) -> Result<Option<SdkTracerProvider>, TracesError> {
    if !wanted(env) {
        return Ok(None);
    }
    if let Some((var, value)) = env.non_grpc_protocol(&[TRACES_PROTOCOL, PROTOCOL]) {
        return Err(TracesError::Protocol {
            var,
            value: value.to_owned(),
        });
    }
    let exporter = SpanExporter::builder().with_tonic().build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(env))
        .build();
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    Ok(Some(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_follow_the_standard_switches() {
        let env = |vars: &[(&str, &str)]| OtelEnv::from_vars(vars.iter().copied());
        assert!(!wanted(&env(&[])), "off by default");
        assert!(wanted(&env(&[(ENDPOINT, "http://collector:4317")])));
        assert!(wanted(&env(&[(TRACES_ENDPOINT, "http://collector:4317")])));
        assert!(!wanted(&env(&[
            (ENDPOINT, "http://collector:4317"),
            (TRACES_EXPORTER, "none")
        ])));
        assert!(wanted(&env(&[(TRACES_EXPORTER, "console, otlp")])));
        assert!(!wanted(&env(&[
            (ENDPOINT, "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE")
        ])));
    }

    #[test]
    fn other_protocols_are_refused_with_the_variable_named() {
        let env = OtelEnv::from_vars([
            (ENDPOINT, "http://collector:4318"),
            (PROTOCOL, "http/protobuf"),
        ]);
        let error = provider(&env).unwrap_err().to_string();
        assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
    }
}
