//! The receiver's OTLP/HTTP side: `POST /v1/traces` and `POST /v1/metrics` with protobuf
//! bodies, answered as the OTLP specification asks (protobuf responses, `google.rpc.Status`
//! bodies on errors).

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
use tokio::net::TcpListener;

use super::{Refusal, Store, Transport};

const PROTOBUF: &str = "application/x-protobuf";

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
    match decode::<ExportTraceServiceRequest>(&headers, &body) {
        Ok(request) => answer(store.accept_spans(Transport::Http, &headers, &request)),
        Err((http, message)) => status(http, tonic::Code::InvalidArgument, message),
    }
}

async fn metrics(State(store): State<Arc<Store>>, headers: HeaderMap, body: Bytes) -> Response {
    match decode::<ExportMetricsServiceRequest>(&headers, &body) {
        Ok(request) => answer(store.accept_metrics(Transport::Http, &headers, &request)),
        Err((http, message)) => status(http, tonic::Code::InvalidArgument, message),
    }
}

/// Only protobuf bodies: a JSON or mislabelled export is a bug in the exporter under test.
fn decode<T: Message + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    if content_type != Some(PROTOBUF.as_bytes()) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {PROTOBUF}"),
        ));
    }
    T::decode(body).map_err(|error| {
        (
            StatusCode::BAD_REQUEST,
            format!("the body is not an OTLP export request: {error}"),
        )
    })
}

fn answer<T: Message>(result: Result<T, Refusal>) -> Response {
    match result {
        Ok(response) => protobuf(StatusCode::OK, response.encode_to_vec()),
        Err(Refusal::Unavailable) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            Refusal::UNAVAILABLE.to_owned(),
        ),
        Err(Refusal::Unauthenticated(message)) => status(
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            message,
        ),
    }
}

fn status(http: StatusCode, code: tonic::Code, message: String) -> Response {
    let status = tonic_types::Status {
        code: code as i32,
        message,
        details: Vec::new(),
    };
    protobuf(http, status.encode_to_vec())
}

fn protobuf(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
        body,
    )
        .into_response()
}
