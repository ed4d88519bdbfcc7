//! Span export over OTLP, gRPC or HTTP (`http/protobuf`), configured by the standard
//! `OTEL_*` variables. The proxy applies the sampler (`OTEL_TRACES_SAMPLER[_ARG]`) itself,
//! before it builds a request's spans ([`HeadSampler`]), so the SDK keeps every span it gets;
//! the SDK reads batching (`OTEL_BSP_*`).
//!
//! The batch processor exports from its own thread, outside any tokio runtime: the gRPC
//! exporter hands its calls to the runtime it was built in, and the HTTP exporter uses
//! reqwest's blocking client, which runs its own runtime.

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use sluice_data_plane::head_sampling::{HeadSampler, SamplerError};

use super::metrics_export::OtelEnv;
use super::metrics_export::config::resource;
use super::otlp_target::{ENDPOINT, OtlpTarget, Protocol, TRACES, TargetError};

const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("cannot set up the OTLP span exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Traces are exported when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and an
/// OTLP endpoint is configured, as with metrics; never with `OTEL_SDK_DISABLED=true`.
pub fn wanted(env: &OtelEnv) -> bool {
    env.exports_otlp(TRACES_EXPORTER, &[TRACES.endpoint, ENDPOINT])
}

/// The tracer provider and where it exports, when traces are wanted; also installs the W3C
/// propagators that read `traceparent` from clients and write it to backends. Call inside a
/// tokio runtime.
pub fn provider(env: &OtelEnv) -> Result<Option<(SdkTracerProvider, OtlpTarget)>, TracesError> {
    if !wanted(env) {
        return Ok(None);
    }
    let target = OtlpTarget::from_env(env, &TRACES)?;
    HeadSampler::from_env(env.get(TRACES_SAMPLER), env.get(TRACES_SAMPLER_ARG))?.install();
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_batch_exporter(exporter(&target)?)
        .with_resource(resource(env))
        .build();
    // `sluice_data_plane::trace::propagation::inject` writes what these two write for a context
    // without baggage itself, and its test holds it to them: change them together.
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    Ok(Some((provider, target)))
}

/// Both exporters read the headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`) from the process
/// environment themselves, after anything passed in, so they are not passed; the target has
/// already checked them. The gRPC exporter reads its endpoint and timeout the same way, as it
/// always has.
fn exporter(target: &OtlpTarget) -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    match target.protocol {
        Protocol::Grpc => SpanExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf | Protocol::HttpJson => SpanExporter::builder()
            .with_http()
            .with_protocol(if target.protocol == Protocol::HttpJson {
                opentelemetry_otlp::Protocol::HttpJson
            } else {
                opentelemetry_otlp::Protocol::HttpBinary
            })
            .with_endpoint(&target.endpoint)
            .with_timeout(target.timeout)
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_follow_the_standard_switches() {
        let env = |vars: &[(&str, &str)]| OtelEnv::from_vars(vars.iter().copied());
        assert!(!wanted(&env(&[])), "off by default");
        assert!(wanted(&env(&[(ENDPOINT, "http://collector:4317")])));
        assert!(wanted(&env(&[(TRACES.endpoint, "http://collector:4317")])));
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
    fn an_unknown_protocol_is_refused_with_the_variable_named() {
        let env = OtelEnv::from_vars([
            (ENDPOINT, "http://collector:4318"),
            (TRACES.protocol, "http/xml"),
        ]);
        let error = provider(&env).unwrap_err().to_string();
        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=\"http/xml\""),
            "{error}"
        );
    }

    #[test]
    fn a_bad_sampler_is_refused_with_the_variable_named() {
        let env = OtelEnv::from_vars([
            (ENDPOINT, "http://collector:4318"),
            (TRACES_SAMPLER, "parentbased_traceidratio"),
            (TRACES_SAMPLER_ARG, "ten percent"),
        ]);
        let error = provider(&env).unwrap_err().to_string();
        assert!(
            error.starts_with("OTEL_TRACES_SAMPLER_ARG=\"ten percent\""),
            "{error}"
        );
    }
}
