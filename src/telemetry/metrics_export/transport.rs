//! How one export request reaches the collector: OTLP/gRPC through tonic, or OTLP/HTTP with
//! protobuf or JSON bodies through reqwest. Both carry the same `ExportMetricsServiceRequest`.

mod grpc;
mod http;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

use super::config::ConfigError;
use super::exporter::ExportError;
use crate::telemetry::otlp_target::{OtlpTarget, Protocol};

pub enum Transport {
    Grpc(grpc::GrpcTransport),
    Http(http::HttpTransport),
}

impl Transport {
    /// Prepares the connection without dialling: a collector that is down at start only
    /// delays the first export. Must be called inside a tokio runtime.
    pub fn new(target: &OtlpTarget) -> Result<Self, ConfigError> {
        Ok(match target.protocol {
            Protocol::Grpc => Self::Grpc(grpc::GrpcTransport::new(target)?),
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                Self::Http(http::HttpTransport::new(target)?)
            }
        })
    }

    /// Sends one request; the caller bounds the whole call with the export timeout.
    pub async fn export(
        &mut self,
        request: ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, ExportError> {
        match self {
            Self::Grpc(grpc) => grpc.export(request).await,
            Self::Http(http) => http.export(&request).await,
        }
    }
}
