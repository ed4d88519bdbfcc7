//! Pushes the metrics registries over OTLP/gRPC on a timer. Reading a registry is what a
//! scrape does, so the request path pays nothing for the export.

use std::future::Future;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::config::{ConfigError, MetricsExportConfig};
use super::convert::{MetricFamily, Timestamps, to_otlp};

type Collect = dyn Fn() -> Result<Vec<MetricFamily>, std::fmt::Error> + Send + Sync;

/// One registry to export, and the instrumentation scope its metrics are reported under
/// (`sluice.proxy`, `sluice.control_plane`: in `sluice dev` both planes share a process and
/// both have a `sluice_config_revision`).
pub struct MetricsSource {
    scope: &'static str,
    collect: Box<Collect>,
}

impl MetricsSource {
    /// `collect` reads the registry, typically `prometheus_protobuf::encode(registry)` after
    /// refreshing the gauges a scrape would refresh.
    pub fn new(
        scope: &'static str,
        collect: impl Fn() -> Result<Vec<MetricFamily>, std::fmt::Error> + Send + Sync + 'static,
    ) -> Self {
        Self {
            scope,
            collect: Box::new(collect),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Unreachable collector included: tonic reports that as `UNAVAILABLE`.
    #[error("export failed ({}): {}", .0.code(), .0.message())]
    Rejected(#[from] tonic::Status),
    #[error("no answer from the collector within {0:?}")]
    Timeout(Duration),
    #[error("the collector refused {rejected} data points: {message}")]
    PartlyRejected { rejected: i64, message: String },
    /// The other registries were still exported.
    #[error("the {scope} registry could not be encoded")]
    Encode { scope: &'static str },
}

/// Pushes every source's metrics to one OTLP/gRPC endpoint.
pub struct MetricsExporter {
    client: MetricsServiceClient<Channel>,
    endpoint: String,
    interval: Duration,
    timeout: Duration,
    headers: MetadataMap,
    resource: Resource,
    schema_url: String,
    sources: Vec<MetricsSource>,
    /// The registries' totals run from process start (about when this is created).
    started: SystemTime,
    health: ExportHealth,
}

impl MetricsExporter {
    /// Prepares the connection without dialling: a collector that is down at start only
    /// delays the first export. Must be called inside a tokio runtime.
    pub fn new(
        config: MetricsExportConfig,
        sources: Vec<MetricsSource>,
    ) -> Result<Self, ConfigError> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|_| ConfigError::Endpoint {
                var: "endpoint",
                value: config.endpoint.clone(),
            })?
            .connect_timeout(config.timeout)
            .timeout(config.timeout);
        if config.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|source| ConfigError::Tls {
                    endpoint: config.endpoint.clone(),
                    source,
                })?;
        }
        let resource = ResourceAttributesWithSchema::from(&config.resource);
        Ok(Self {
            client: MetricsServiceClient::new(endpoint.connect_lazy()),
            endpoint: config.endpoint,
            interval: config.interval,
            timeout: config.timeout,
            headers: config.headers,
            resource: Resource {
                attributes: resource.attributes.0,
                ..Default::default()
            },
            schema_url: resource.schema_url.unwrap_or_default(),
            sources,
            started: SystemTime::now(),
            health: ExportHealth::default(),
        })
    }

    /// Exports every interval until `shutdown` resolves, then once more so the counts since
    /// the last tick are not lost. Failures are logged (once per change between working and
    /// failing) and never end the loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tracing::info!(endpoint = %self.endpoint, interval = ?self.interval, "exporting metrics over OTLP");
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        // A tick missed while an export hung is skipped, not made up in a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.export_and_log().await,
                () = &mut shutdown => break,
            }
        }
        self.export_and_log().await;
    }

    async fn export_and_log(&mut self) {
        let result = self.export().await;
        match (self.health.observe(result.is_ok()), result) {
            (Some(Change::Failing), Err(error)) => tracing::warn!(
                endpoint = %self.endpoint,
                %error,
                "metrics export failing; retrying every interval"
            ),
            (Some(Change::Recovered), _) => {
                tracing::info!(endpoint = %self.endpoint, "metrics export recovered");
            }
            (None, Err(error)) => tracing::debug!(%error, "metrics export still failing"),
            _ => {}
        }
    }

    /// Reads every registry and pushes them in one request.
    pub async fn export(&mut self) -> Result<(), ExportError> {
        let mut registries = Vec::with_capacity(self.sources.len());
        let mut unencodable = None;
        for source in &self.sources {
            match (source.collect)() {
                Ok(families) => registries.push((source.scope, families)),
                Err(std::fmt::Error) => unencodable = Some(source.scope),
            }
        }
        let times = Timestamps::new(self.started, SystemTime::now());
        let request = to_otlp(&self.resource, &self.schema_url, &registries, times);
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.headers.clone();
        let response = tokio::time::timeout(self.timeout, self.client.export(request))
            .await
            .map_err(|_| ExportError::Timeout(self.timeout))??;
        if let Some(partial) = response.into_inner().partial_success
            && partial.rejected_data_points > 0
        {
            return Err(ExportError::PartlyRejected {
                rejected: partial.rejected_data_points,
                message: partial.error_message,
            });
        }
        match unencodable {
            Some(scope) => Err(ExportError::Encode { scope }),
            None => Ok(()),
        }
    }
}

/// Whether exports work, so a collector outage is logged when it starts and when it ends,
/// not at every interval.
#[derive(Debug, Default)]
struct ExportHealth {
    failing: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Change {
    Failing,
    Recovered,
}

impl ExportHealth {
    fn observe(&mut self, succeeded: bool) -> Option<Change> {
        let change = match (self.failing, succeeded) {
            (false, false) => Some(Change::Failing),
            (true, true) => Some(Change::Recovered),
            _ => None,
        };
        self.failing = !succeeded;
        change
    }
}

#[cfg(test)]
mod tests;
