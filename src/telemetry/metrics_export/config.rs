//! Whether, where and how often metrics are pushed, from the standard `OTEL_*` variables.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use super::otel_env::{KeyValueError, OtelEnv, parse_key_values};

pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub const METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
pub const METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub const EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The spec's defaults: a local collector's gRPC port, a minute, ten seconds.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(60_000);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
pub const DEFAULT_SERVICE_NAME: &str = "sluice";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not a positive number of milliseconds")]
    Milliseconds { var: &'static str, value: String },
    #[error("{var}={value:?}: only OTLP over gRPC (\"grpc\") is supported")]
    Protocol { var: &'static str, value: String },
    #[error("{var}={value:?} is not an http:// or https:// URL")]
    Endpoint { var: &'static str, value: String },
    #[error("{var} is malformed")]
    Headers {
        var: &'static str,
        #[source]
        source: KeyValueError,
    },
    /// Neither the value nor the key's position is shown: values may be credentials.
    #[error("{var}: {key:?} cannot be sent as a gRPC header")]
    Header { var: &'static str, key: String },
    #[error("TLS for the OTLP endpoint {endpoint}")]
    Tls {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Where and how often the metrics registries are pushed over OTLP/gRPC.
#[derive(Clone)]
pub struct MetricsExportConfig {
    /// `http://host:port` or `https://host:port` of an OTLP/gRPC receiver.
    pub endpoint: String,
    pub interval: Duration,
    /// For one export, connecting included.
    pub timeout: Duration,
    /// Sent with every export (credentials of a hosted collector, typically).
    pub headers: MetadataMap,
    pub resource: Resource,
}

impl MetricsExportConfig {
    /// The spec's defaults for `endpoint`, with `resource`.
    #[cfg(test)]
    pub fn new(endpoint: impl Into<String>, resource: Resource) -> Self {
        Self {
            endpoint: endpoint.into(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            headers: MetadataMap::new(),
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
        if !env.exports_otlp(METRICS_EXPORTER, &[METRICS_ENDPOINT, ENDPOINT]) {
            return Ok(None);
        }
        if let Some((var, value)) = env.non_grpc_protocol(&[METRICS_PROTOCOL, PROTOCOL]) {
            return Err(ConfigError::Protocol {
                var,
                value: value.to_owned(),
            });
        }
        let endpoint = env.first(&[METRICS_ENDPOINT, ENDPOINT]);
        let endpoint = match endpoint {
            Some((var, value)) => valid_endpoint(var, value)?,
            None => DEFAULT_ENDPOINT.to_owned(),
        };
        Ok(Some(Self {
            endpoint,
            interval: milliseconds(env, &[EXPORT_INTERVAL])?.unwrap_or(DEFAULT_INTERVAL),
            timeout: milliseconds(env, &[METRICS_TIMEOUT, TIMEOUT])?.unwrap_or(DEFAULT_TIMEOUT),
            headers: headers(env)?,
            resource: resource(env),
        }))
    }
}

/// Header values are left out: they are usually credentials.
impl fmt::Debug for MetricsExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<_> = self.headers.keys().collect();
        f.debug_struct("MetricsExportConfig")
            .field("endpoint", &self.endpoint)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("headers", &header_names)
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

fn valid_endpoint(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let invalid = || ConfigError::Endpoint {
        var,
        value: value.to_owned(),
    };
    let uri = tonic::transport::Uri::from_str(value).map_err(|_| invalid())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(value.to_owned()),
        _ => Err(invalid()),
    }
}

fn milliseconds(env: &OtelEnv, vars: &[&'static str]) -> Result<Option<Duration>, ConfigError> {
    let Some((var, value)) = env.first(vars) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Some(Duration::from_millis(millis))),
        _ => Err(ConfigError::Milliseconds {
            var,
            value: value.to_owned(),
        }),
    }
}

/// The signal's own variable replaces the general one (they are not merged), as the spec says.
fn headers(env: &OtelEnv) -> Result<MetadataMap, ConfigError> {
    let mut headers = MetadataMap::new();
    let Some((var, list)) = env.first(&[METRICS_HEADERS, HEADERS]) else {
        return Ok(headers);
    };
    let pairs = parse_key_values(list).map_err(|source| ConfigError::Headers { var, source })?;
    for (key, value) in pairs {
        let invalid = || ConfigError::Header {
            var,
            key: key.clone(),
        };
        // gRPC metadata keys are lowercase; HTTP header names are case-insensitive.
        let name = AsciiMetadataKey::from_str(&key.to_ascii_lowercase()).map_err(|_| invalid())?;
        let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use opentelemetry::Key;

    use super::*;

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
        assert_eq!(config.endpoint, "http://localhost:4317");
        assert_eq!(config.interval, Duration::from_secs(60));
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert!(config.headers.is_empty());
    }

    #[test]
    fn signal_specific_variables_win() {
        let config = enabled(&[
            (ENDPOINT, "http://general:4317"),
            (METRICS_ENDPOINT, "https://metrics.example:4317"),
            (TIMEOUT, "5000"),
            (METRICS_TIMEOUT, "2500"),
            (HEADERS, "x-general=1"),
            (METRICS_HEADERS, "Api-Key=s3cr%3Dt,x-tenant=gw"),
            (EXPORT_INTERVAL, "15000"),
        ]);
        assert_eq!(config.endpoint, "https://metrics.example:4317");
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.headers.get("api-key").unwrap(), "s3cr=t");
        assert_eq!(config.headers.get("x-tenant").unwrap(), "gw");
        assert!(config.headers.get("x-general").is_none());
        let shown = format!("{config:?}");
        assert!(
            shown.contains("api-key") && !shown.contains("s3cr"),
            "{shown}"
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
            error(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "http/protobuf")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/protobuf\": only OTLP over gRPC (\"grpc\") is supported"
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
            "OTEL_EXPORTER_OTLP_HEADERS: \"bad key\" cannot be sent as a gRPC header"
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
