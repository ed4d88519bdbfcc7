//! OTLP/HTTP with protobuf or JSON bodies (`http/protobuf`, `http/json`): one POST per
//! export, its answer mapped to [`ExportError`] as the OTLP specification describes
//! (`google.rpc.Status` bodies on errors; 429, 502, 503 and 504 are transient).

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
use crate::telemetry::otlp_target::{OtlpTarget, Protocol};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// Enough of a non-OTLP error body (a load balancer's page, say) to tell what answered.
const MESSAGE_LIMIT: usize = 200;

pub struct HttpTransport {
    client: reqwest::Client,
    /// OTLP's JSON mapping instead of protobuf, for requests and the answers read.
    json: bool,
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
        let json = target.protocol == Protocol::HttpJson;
        let mut headers = target.headers.clone();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if json { JSON } else { PROTOBUF }),
        );
        Ok(Self {
            client,
            json,
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
            .body(self.encode(request)?)
            .send()
            .await
            .map_err(|error| self.unsent(&error))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| value.as_bytes().to_vec())
            .unwrap_or_default();
        let body = response
            .bytes()
            .await
            .map_err(|error| self.unsent(&error))?;
        if !status.is_success() {
            return Err(failure(status, &content_type, &body));
        }
        if self.json {
            // An empty body is a full success; serde needs at least `{}`.
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(ExportMetricsServiceResponse::default());
            }
            serde_json::from_slice(&body).map_err(|e| ExportError::BadJson(e.to_string()))
        } else {
            ExportMetricsServiceResponse::decode(body).map_err(ExportError::BadResponse)
        }
    }

    fn encode(&self, request: &ExportMetricsServiceRequest) -> Result<Vec<u8>, ExportError> {
        if self.json {
            serde_json::to_vec(request).map_err(|e| ExportError::BadJson(e.to_string()))
        } else {
            Ok(request.encode_to_vec())
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
fn failure(status: StatusCode, content_type: &[u8], body: &[u8]) -> ExportError {
    let message = error_message(status, content_type, body);
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

/// The `google.rpc.Status` message of a protobuf or JSON body; else the start of the body;
/// else the status's reason phrase.
fn error_message(status: StatusCode, content_type: &[u8], body: &[u8]) -> String {
    let rpc_message = if content_type.starts_with(PROTOBUF.as_bytes()) {
        tonic_types::Status::decode(body)
            .ok()
            .map(|rpc| rpc.message)
    } else if content_type.starts_with(JSON.as_bytes()) {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|rpc| rpc["message"].as_str().map(str::to_owned))
    } else {
        None
    };
    if let Some(message) = rpc_message.filter(|m| !m.is_empty()) {
        return message;
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
                matches!(failure(status, b"", b""), ExportError::Unavailable { status, .. } if status == code),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 500] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(failure(status, b"", b""), ExportError::Refused { status, .. } if status == code),
                "{code}"
            );
        }
    }

    #[test]
    fn the_message_comes_from_the_rpc_status_then_the_body_then_the_reason() {
        let bad_request = StatusCode::BAD_REQUEST;
        assert_eq!(
            error_message(
                bad_request,
                PROTOBUF.as_bytes(),
                &rpc_status("metric name missing")
            ),
            "metric name missing"
        );
        assert_eq!(
            error_message(bad_request, b"text/plain", b"  invalid api key\n"),
            "invalid api key"
        );
        assert_eq!(
            error_message(bad_request, b"text/plain", b""),
            "Bad Request"
        );
        assert_eq!(
            error_message(
                bad_request,
                b"application/json; charset=utf-8",
                br#"{"code": 3, "message": "metric name missing"}"#
            ),
            "metric name missing",
            "http/json collectors answer with the status in JSON"
        );
        let page = "x".repeat(MESSAGE_LIMIT + 50);
        let shown = error_message(StatusCode::BAD_GATEWAY, b"text/html", page.as_bytes());
        assert_eq!(shown.chars().count(), MESSAGE_LIMIT + 1, "{shown}");
        assert_eq!(
            failure(
                StatusCode::UNAUTHORIZED,
                PROTOBUF.as_bytes(),
                &rpc_status("bad key")
            )
            .to_string(),
            "the collector refused the export (HTTP 401): bad key"
        );
    }
}
