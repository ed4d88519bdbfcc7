//! OTLP/HTTP with protobuf bodies: one POST per export, its answer mapped to [`ExportError`]
//! as the OTLP specification describes (`google.rpc.Status` bodies on errors; 429, 502, 503
//! and 504 are transient).

use std::error::Error as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::telemetry::metrics_export::config::ConfigError;
use crate::telemetry::metrics_export::exporter::ExportError;
use crate::telemetry::otlp_target::OtlpTarget;

const PROTOBUF: &str = "application/x-protobuf";
/// Enough of a non-OTLP error body (a load balancer's page, say) to tell what answered.
const MESSAGE_LIMIT: usize = 200;

pub struct HttpTransport {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    timeout: Duration,
}

impl HttpTransport {
    pub fn new(target: &OtlpTarget) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(target.timeout)
            .timeout(target.timeout)
            .build()
            .map_err(|source| ConfigError::HttpClient {
                endpoint: target.endpoint.clone(),
                source,
            })?;
        let mut headers = target.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
        Ok(Self {
            client,
            url: target.endpoint.clone(),
            headers,
            timeout: target.timeout,
        })
    }

    pub async fn export(
        &self,
        request: &ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, ExportError> {
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(request.encode_to_vec())
            .send()
            .await
            .map_err(|error| self.unsent(&error))?;
        let status = response.status();
        let protobuf = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(PROTOBUF.as_bytes()));
        let body = response
            .bytes()
            .await
            .map_err(|error| self.unsent(&error))?;
        if status.is_success() {
            ExportMetricsServiceResponse::decode(body).map_err(ExportError::BadResponse)
        } else {
            Err(failure(status, protobuf, &body))
        }
    }

    fn unsent(&self, error: &reqwest::Error) -> ExportError {
        if error.is_timeout() {
            return ExportError::Timeout(self.timeout);
        }
        // reqwest's own message only says a request failed; the cause (refused, DNS, TLS) is
        // further down the chain.
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(error) = cause {
            message.push_str(": ");
            message.push_str(&error.to_string());
            cause = error.source();
        }
        ExportError::Unreachable(message)
    }
}

/// An error status, transient or not, with the collector's explanation.
fn failure(status: StatusCode, protobuf: bool, body: &[u8]) -> ExportError {
    let message = error_message(status, protobuf, body);
    match status {
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => ExportError::Unavailable {
            status: status.as_u16(),
            message,
        },
        _ => ExportError::Refused {
            status: status.as_u16(),
            message,
        },
    }
}

/// The `google.rpc.Status` message of a protobuf body; else the start of the body; else the
/// status's reason phrase.
fn error_message(status: StatusCode, protobuf: bool, body: &[u8]) -> String {
    if protobuf
        && let Ok(rpc) = tonic_types::Status::decode(body)
        && !rpc.message.is_empty()
    {
        return rpc.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned();
    }
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc_status(message: &str) -> Vec<u8> {
        tonic_types::Status {
            code: 3,
            message: message.to_owned(),
            details: Vec::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn the_specs_retryable_statuses_are_transient() {
        for code in [429, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(failure(status, false, b""), ExportError::Unavailable { status, .. } if status == code),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 500] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(failure(status, false, b""), ExportError::Refused { status, .. } if status == code),
                "{code}"
            );
        }
    }

    #[test]
    fn the_message_comes_from_the_rpc_status_then_the_body_then_the_reason() {
        let bad_request = StatusCode::BAD_REQUEST;
        assert_eq!(
            error_message(bad_request, true, &rpc_status("metric name missing")),
            "metric name missing"
        );
        assert_eq!(
            error_message(bad_request, false, b"  invalid api key\n"),
            "invalid api key"
        );
        assert_eq!(error_message(bad_request, false, b""), "Bad Request");
        let page = "x".repeat(MESSAGE_LIMIT + 50);
        let shown = error_message(StatusCode::BAD_GATEWAY, false, page.as_bytes());
        assert_eq!(shown.chars().count(), MESSAGE_LIMIT + 1, "{shown}");
        assert_eq!(
            failure(StatusCode::UNAUTHORIZED, true, &rpc_status("bad key")).to_string(),
            "the collector refused the export (HTTP 401): bad key"
        );
    }
}
