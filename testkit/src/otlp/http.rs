//! The receiver's OTLP/HTTP side: `POST /v1/traces` and `POST /v1/metrics` with protobuf or
//! JSON bodies, answered as the OTLP specification asks (the request's encoding,
//! `google.rpc.Status` bodies on errors).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use super::{Refusal, Store, Transport};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// How a request was encoded; its answer is encoded the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Self> {
        match headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes)? {
            b"application/x-protobuf" => Some(Self::Protobuf),
            b"application/json" => Some(Self::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        }
    }
}

pub(super) async fn serve(listener: TcpListener, store: Arc<Store>) {
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(store);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the OTLP/HTTP receiver stopped");
    }
}

async fn traces(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    let encoding = Encoding::of(&headers);
    match decode::<ExportTraceServiceRequest>(encoding, &body) {
        Ok((request, encoding)) => answer(
            encoding,
            store.accept_spans(Transport::Http, &headers, &request),
        ),
        Err((http, message)) => status(encoding, http, tonic::Code::InvalidArgument, message),
    }
}

async fn metrics(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    let encoding = Encoding::of(&headers);
    match decode::<ExportMetricsServiceRequest>(encoding, &body) {
        Ok((request, encoding)) => answer(
            encoding,
            store.accept_metrics(Transport::Http, &headers, &request),
        ),
        Err((http, message)) => status(encoding, http, tonic::Code::InvalidArgument, message),
    }
}

/// Protobuf or OTLP JSON bodies; anything mislabelled is a bug in the exporter under test.
fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Option<Encoding>,
    body: &[u8],
) -> Result<(T, Encoding), (StatusCode, String)> {
    let Some(encoding) = encoding else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {PROTOBUF} or {JSON}"),
        ));
    };
    let decoded = match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|error| error.to_string()),
        Encoding::Json => serde_json::from_slice(body).map_err(|error| error.to_string()),
    };
    decoded.map(|request| (request, encoding)).map_err(|error| {
        (
            StatusCode::BAD_REQUEST,
            format!("the body is not an OTLP export request: {error}"),
        )
    })
}

fn answer<T: Message + Serialize>(encoding: Encoding, result: Result<T, Refusal>) -> Response {
    match result {
        Ok(response) => {
            let bytes = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&response).unwrap_or_default(),
            };
            respond(encoding, StatusCode::OK, bytes)
        }
        Err(Refusal::Unavailable) => status(
            Some(encoding),
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            Refusal::UNAVAILABLE.to_owned(),
        ),
        Err(Refusal::Unauthenticated(message)) => status(
            Some(encoding),
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            message,
        ),
    }
}

/// A `google.rpc.Status`, in the request's encoding (protobuf when it had none).
fn status(
    encoding: Option<Encoding>,
    http: StatusCode,
    code: tonic::Code,
    message: String,
) -> Response {
    if encoding == Some(Encoding::Json) {
        let status = serde_json::json!({"code": code as i32, "message": message});
        return respond(Encoding::Json, http, status.to_string().into_bytes());
    }
    let status = tonic_types::Status {
        code: code as i32,
        message,
        details: Vec::new(),
    };
    respond(Encoding::Protobuf, http, status.encode_to_vec())
}

fn respond(encoding: Encoding, http: StatusCode, bytes: Vec<u8>) -> Response {
    (
        http,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        )],
        bytes,
    )
        .into_response()
}
