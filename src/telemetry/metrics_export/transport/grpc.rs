//! OTLP/gRPC: the collector's `MetricsService` over a lazily connected tonic channel.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::telemetry::metrics_export::config::ConfigError;
use crate::telemetry::metrics_export::exporter::ExportError;
use crate::telemetry::otlp_target::{OtlpTarget, TargetError};

pub struct GrpcTransport {
    client: MetricsServiceClient<Channel>,
    metadata: MetadataMap,
}

impl GrpcTransport {
    pub fn new(target: &OtlpTarget) -> Result<Self, ConfigError> {
        let mut endpoint = Endpoint::from_shared(target.endpoint.clone())
            .map_err(|_| TargetError::Endpoint {
                var: "endpoint",
                value: target.endpoint.clone(),
            })?
            .connect_timeout(target.timeout)
            .timeout(target.timeout);
        if target.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|source| ConfigError::Tls {
                    endpoint: target.endpoint.clone(),
                    source,
                })?;
        }
        Ok(Self {
            client: MetricsServiceClient::new(endpoint.connect_lazy()),
            // The target refused keys gRPC cannot carry as text (`-bin`).
            metadata: MetadataMap::from_headers(target.headers.clone()),
        })
    }

    pub async fn export(
        &mut self,
        request: ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, ExportError> {
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        Ok(self.client.export(request).await?.into_inner())
    }
}
