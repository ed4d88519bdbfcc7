//! Whether, where and how often metrics are pushed, from the standard `OTEL_*` variables.

use std::fmt;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;

use super::otel_env::{OtelEnv, parse_key_values};
use crate::telemetry::otlp_target::{ENDPOINT, METRICS, OtlpTarget, TargetError, milliseconds};

pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
pub const EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The spec's default: a minute.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(60_000);
pub const DEFAULT_SERVICE_NAME: &str = "sluice";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("TLS for the OTLP endpoint {endpoint}")]
    Tls {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot set up the HTTP client for {endpoint}")]
    HttpClient {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Where and how often the metrics registries are pushed over OTLP.
#[derive(Clone)]
pub struct MetricsExportConfig {
    pub target: OtlpTarget,
    pub interval: Duration,
    pub resource: Resource,
}

impl MetricsExportConfig {
    /// Pushes to `target` on the spec's default interval, with `resource`.
    #[cfg(test)]
    pub fn new(target: OtlpTarget, resource: Resource) -> Self {
        Self {
            target,
            interval: DEFAULT_INTERVAL,
            resource,
        }
    }

    /// The export the `OTEL_*` variables ask for, or `None` when metrics are not pushed.
    ///
    /// Metrics are pushed when `OTEL_METRICS_EXPORTER` names `otlp`, or when it is unset and
    /// an OTLP endpoint is configured; any other exporter (`none`, `prometheus`, …) leaves only
    /// the scrape endpoints, which are always on. `OTEL_SDK_DISABLED=true` turns it off.
    /// Temporality is always cumulative: the registries hold running totals.
    pub fn from_env(env: &OtelEnv) -> Result<Option<Self>, ConfigError> {
        if !env.exports_otlp(METRICS_EXPORTER, &[METRICS.endpoint, ENDPOINT]) {
            return Ok(None);
        }
        Ok(Some(Self {
            target: OtlpTarget::from_env(env, &METRICS)?,
            interval: milliseconds(env, &[EXPORT_INTERVAL])?.unwrap_or(DEFAULT_INTERVAL),
            resource: resource(env),
        }))
    }
}

/// Header values are left out (by [`OtlpTarget`]'s `Debug`): they are usually credentials.
impl fmt::Debug for MetricsExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsExportConfig")
            .field("target", &self.target)
            .field("interval", &self.interval)
            .field("resource", &self.resource)
            .finish()
    }
}

/// `service.name` from `OTEL_SERVICE_NAME`, else from `OTEL_RESOURCE_ATTRIBUTES`, else
/// `sluice`; the other `OTEL_RESOURCE_ATTRIBUTES`; and the SDK's `telemetry.sdk.*`.
pub fn resource(env: &OtelEnv) -> Resource {
    let attributes = match env.get(RESOURCE_ATTRIBUTES).map(parse_key_values) {
        None => Vec::new(),
        Some(Ok(attributes)) => attributes,
        // The spec: discard the whole variable and report it, but keep running.
        Some(Err(error)) => {
            tracing::warn!(%error, "ignoring {RESOURCE_ATTRIBUTES}");
            Vec::new()
        }
    };
    let service_name = env
        .get(SERVICE_NAME)
        .map(str::to_owned)
        .or_else(|| {
            attributes
                .iter()
                .find(|(key, _)| key == "service.name")
                .map(|(_, value)| value.clone())
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            attributes
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value)),
        )
        .with_service_name(service_name)
        .build()
}

#[cfg(test)]
mod tests {
    use opentelemetry::Key;

    use super::*;
    use crate::telemetry::otlp_target::{HEADERS, PROTOCOL, Protocol, TIMEOUT};

    fn config(vars: &[(&str, &str)]) -> Result<Option<MetricsExportConfig>, ConfigError> {
        MetricsExportConfig::from_env(&OtelEnv::from_vars(vars.iter().copied()))
    }

    fn enabled(vars: &[(&str, &str)]) -> MetricsExportConfig {
        config(vars)
            .expect("valid variables")
            .expect("metrics export on")
    }

    fn attribute(resource: &Resource, key: &'static str) -> Option<String> {
        resource
            .get(&Key::from_static_str(key))
            .map(|v| v.to_string())
    }

    #[test]
    fn off_unless_an_endpoint_or_the_otlp_exporter_is_configured() {
        assert!(config(&[]).unwrap().is_none());
        assert!(config(&[(SERVICE_NAME, "gw")]).unwrap().is_none());
        assert!(
            config(&[
                (ENDPOINT, "http://collector:4317"),
                (METRICS_EXPORTER, "none")
            ])
            .unwrap()
            .is_none()
        );
        assert!(
            config(&[(ENDPOINT, "http://collector:4317"), (SDK_DISABLED, "TRUE")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_otlp_exporter_alone_uses_the_spec_defaults() {
        let config = enabled(&[(METRICS_EXPORTER, "console, otlp")]);
        assert_eq!(config.target.protocol, Protocol::Grpc);
        assert_eq!(config.target.endpoint, "http://localhost:4317");
        assert_eq!(config.interval, Duration::from_secs(60));
        assert_eq!(config.target.timeout, Duration::from_secs(10));
        assert!(config.target.headers.is_empty());
    }

    #[test]
    fn signal_specific_variables_win() {
        let config = enabled(&[
            (ENDPOINT, "http://general:4317"),
            (METRICS.endpoint, "https://metrics.example:4317"),
            (TIMEOUT, "5000"),
            (METRICS.timeout, "2500"),
            (HEADERS, "x-general=1"),
            (METRICS.headers, "Api-Key=s3cr%3Dt,x-tenant=gw"),
            (EXPORT_INTERVAL, "15000"),
        ]);
        assert_eq!(config.target.endpoint, "https://metrics.example:4317");
        assert_eq!(config.target.timeout, Duration::from_millis(2500));
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.target.headers["api-key"], "s3cr=t");
        assert_eq!(config.target.headers["x-tenant"], "gw");
        assert!(!config.target.headers.contains_key("x-general"));
        let shown = format!("{config:?}");
        assert!(
            shown.contains("api-key") && !shown.contains("s3cr"),
            "{shown}"
        );
    }

    #[test]
    fn http_protobuf_posts_to_the_metrics_path() {
        let config = enabled(&[
            (ENDPOINT, "https://otlp.example.com/"),
            (PROTOCOL, "http/protobuf"),
        ]);
        assert_eq!(config.target.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            config.target.endpoint,
            "https://otlp.example.com/v1/metrics"
        );
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        let error = |vars: &[(&str, &str)]| config(vars).unwrap_err().to_string();
        assert_eq!(
            error(&[(ENDPOINT, "collector:4317")]),
            "OTEL_EXPORTER_OTLP_ENDPOINT=\"collector:4317\" is not an http:// or https:// URL"
        );
        assert_eq!(
            error(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "http/xml")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/xml\": the supported protocols are \"grpc\", \"http/protobuf\" and \"http/json\""
        );
        assert_eq!(
            error(&[(ENDPOINT, "http://c:4317"), (EXPORT_INTERVAL, "0")]),
            "OTEL_METRIC_EXPORT_INTERVAL=\"0\" is not a positive number of milliseconds"
        );
        assert_eq!(
            error(&[(ENDPOINT, "http://c:4317"), (TIMEOUT, "10s")]),
            "OTEL_EXPORTER_OTLP_TIMEOUT=\"10s\" is not a positive number of milliseconds"
        );
        let bad_header = error(&[(ENDPOINT, "http://c:4317"), (HEADERS, "bad key=secret")]);
        assert_eq!(
            bad_header,
            "OTEL_EXPORTER_OTLP_HEADERS: \"bad key\" cannot be sent as a header"
        );
        let bad_value = error(&[(ENDPOINT, "http://c:4317"), (HEADERS, "k=line%0Abreak")]);
        assert!(!bad_value.contains("break"), "{bad_value}");
    }

    #[test]
    fn resource_names_the_service_and_adds_the_attributes() {
        let env = OtelEnv::from_vars([(
            RESOURCE_ATTRIBUTES,
            "deployment.environment=prod%20eu,service.name=from-attributes",
        )]);
        let built = resource(&env);
        assert_eq!(
            attribute(&built, "service.name").as_deref(),
            Some("from-attributes")
        );
        assert_eq!(
            attribute(&built, "deployment.environment").as_deref(),
            Some("prod eu")
        );
        assert_eq!(
            attribute(&built, "telemetry.sdk.language").as_deref(),
            Some("rust")
        );

        let env = OtelEnv::from_vars([
            (SERVICE_NAME, "gateway-eu"),
            (RESOURCE_ATTRIBUTES, "service.name=ignored"),
        ]);
        assert_eq!(
            attribute(&resource(&env), "service.name").as_deref(),
            Some("gateway-eu")
        );
    }

    #[test]
    fn malformed_resource_attributes_are_dropped_whole() {
        let env = OtelEnv::from_vars([(RESOURCE_ATTRIBUTES, "team=llm,broken")]);
        let built = resource(&env);
        assert_eq!(attribute(&built, "team"), None);
        assert_eq!(attribute(&built, "service.name").as_deref(), Some("sluice"));
    }
}
