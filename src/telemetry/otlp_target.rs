//! Where and how one signal (traces, metrics) is sent over OTLP: the protocol, the URL, the
//! headers and the timeout, resolved from the standard `OTEL_EXPORTER_OTLP_*` variables as the
//! OpenTelemetry spec describes. The signal's own variable replaces the general one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::AsciiMetadataKey;
use tonic::transport::Uri;

use super::metrics_export::otel_env::{KeyValueError, OtelEnv, parse_key_values};

pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";

/// The spec's default: ten seconds per export.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The OTLP transports Sluice speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`, the default.
    Grpc,
    /// `http/protobuf`: the same messages, POSTed as `application/x-protobuf`.
    HttpProtobuf,
    /// `http/json`: the same messages in OTLP's JSON mapping, POSTed as `application/json`.
    HttpJson,
}

impl Protocol {
    fn parse(var: &'static str, value: &str) -> Result<Self, TargetError> {
        match value {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            _ => Err(TargetError::Protocol {
                var,
                value: value.to_owned(),
            }),
        }
    }

    /// The spec's defaults: a local collector's gRPC or HTTP port.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Self::Grpc => "http://localhost:4317",
            Self::HttpProtobuf | Self::HttpJson => "http://localhost:4318",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        })
    }
}

/// A signal's own variables, and the path OTLP/HTTP appends to the general endpoint.
#[derive(Debug)]
pub struct Signal {
    pub endpoint: &'static str,
    pub protocol: &'static str,
    pub headers: &'static str,
    pub timeout: &'static str,
    pub http_path: &'static str,
}

pub const TRACES: Signal = Signal {
    endpoint: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    protocol: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    headers: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    timeout: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    http_path: "/v1/traces",
};

pub const METRICS: Signal = Signal {
    endpoint: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    protocol: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    headers: "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    timeout: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    http_path: "/v1/metrics",
};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{var}={value:?}: the supported protocols are \"grpc\", \"http/protobuf\" and \"http/json\""
    )]
    Protocol { var: &'static str, value: String },
    #[error("{var}={value:?} is not an http:// or https:// URL")]
    Endpoint { var: &'static str, value: String },
    #[error("{var}={value:?} is not a positive number of milliseconds")]
    Milliseconds { var: &'static str, value: String },
    #[error("{var} is malformed")]
    Headers {
        var: &'static str,
        #[source]
        source: KeyValueError,
    },
    /// Neither the value nor the key's position is shown: values may be credentials.
    #[error("{var}: {key:?} cannot be sent as a header")]
    Header { var: &'static str, key: String },
}

/// Where one signal goes.
#[derive(Clone)]
pub struct OtlpTarget {
    pub protocol: Protocol,
    /// gRPC: the collector's `http(s)://host:port`. HTTP: the URL every export is POSTed to.
    pub endpoint: String,
    /// For one export, connecting included.
    pub timeout: Duration,
    /// Sent with every export (credentials of a hosted collector, typically).
    pub headers: HeaderMap,
}

impl OtlpTarget {
    /// The target the `OTEL_*` variables give `signal`.
    pub fn from_env(env: &OtelEnv, signal: &Signal) -> Result<Self, TargetError> {
        let protocol = match env.first(&[signal.protocol, PROTOCOL]) {
            Some((var, value)) => Protocol::parse(var, value)?,
            None => Protocol::Grpc,
        };
        Ok(Self {
            protocol,
            endpoint: endpoint(env, signal, protocol)?,
            timeout: milliseconds(env, &[signal.timeout, TIMEOUT])?.unwrap_or(DEFAULT_TIMEOUT),
            headers: headers(env, &[signal.headers, HEADERS], protocol)?,
        })
    }

    /// A gRPC target with the spec's defaults but for `endpoint`.
    #[cfg(test)]
    pub fn grpc(endpoint: impl Into<String>) -> Self {
        Self {
            protocol: Protocol::Grpc,
            endpoint: endpoint.into(),
            timeout: DEFAULT_TIMEOUT,
            headers: HeaderMap::new(),
        }
    }
}

/// Header values are left out: they are usually credentials.
impl fmt::Debug for OtlpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<_> = self.headers.keys().collect();
        f.debug_struct("OtlpTarget")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("headers", &header_names)
            .finish()
    }
}

/// The signal's own endpoint is used as it is. The general one is a gRPC collector's address,
/// or for HTTP the base URL the signal's path is appended to (so `…/otlp/` and `…/otlp` both
/// become `…/otlp/v1/traces`).
fn endpoint(env: &OtelEnv, signal: &Signal, protocol: Protocol) -> Result<String, TargetError> {
    if let Some((var, value)) = env.first(&[signal.endpoint]) {
        return valid_endpoint(var, value);
    }
    let base = match env.first(&[ENDPOINT]) {
        Some((var, value)) => valid_endpoint(var, value)?,
        None => protocol.default_endpoint().to_owned(),
    };
    Ok(match protocol {
        Protocol::Grpc => base,
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            format!("{}{}", base.trim_end_matches('/'), signal.http_path)
        }
    })
}

fn valid_endpoint(var: &'static str, value: &str) -> Result<String, TargetError> {
    let invalid = || TargetError::Endpoint {
        var,
        value: value.to_owned(),
    };
    let uri = Uri::from_str(value).map_err(|_| invalid())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(value.to_owned()),
        _ => Err(invalid()),
    }
}

pub fn milliseconds(env: &OtelEnv, vars: &[&'static str]) -> Result<Option<Duration>, TargetError> {
    let Some((var, value)) = env.first(vars) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Some(Duration::from_millis(millis))),
        _ => Err(TargetError::Milliseconds {
            var,
            value: value.to_owned(),
        }),
    }
}

/// The first of `vars` that is set wins whole: the signal's list replaces the general one
/// rather than adding to it, as the spec says.
fn headers(
    env: &OtelEnv,
    vars: &[&'static str],
    protocol: Protocol,
) -> Result<HeaderMap, TargetError> {
    let mut headers = HeaderMap::new();
    let Some((var, list)) = env.first(vars) else {
        return Ok(headers);
    };
    let pairs = parse_key_values(list).map_err(|source| TargetError::Headers { var, source })?;
    for (key, value) in pairs {
        let invalid = || TargetError::Header {
            var,
            key: key.clone(),
        };
        // Lowercase, as gRPC metadata requires; HTTP header names are case-insensitive.
        let name = HeaderName::from_str(&key.to_ascii_lowercase()).map_err(|_| invalid())?;
        // gRPC treats `-bin` keys as base64 binary metadata, which a text list cannot carry.
        if protocol == Protocol::Grpc && AsciiMetadataKey::from_str(name.as_str()).is_err() {
            return Err(invalid());
        }
        let mut value = HeaderValue::from_str(&value).map_err(|_| invalid())?;
        // Keeps the value out of the HTTP stack's own debug output.
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
