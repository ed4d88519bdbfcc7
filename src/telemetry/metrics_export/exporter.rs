//! Pushes the metrics registries over OTLP (gRPC or HTTP) on a timer. Reading a registry is what a
//! scrape does, so the request path pays nothing for the export.

use std::future::Future;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use tokio::time::{Instant, MissedTickBehavior};

use super::config::{ConfigError, MetricsExportConfig};
use super::convert::{MetricFamily, Timestamps, to_otlp};
use super::transport::Transport;
use crate::telemetry::otlp_target::Protocol;

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

/// Why an export failed. Every interval exports the registries' whole state again, so a
/// failed request is never resent: the next one carries its data, whatever the error was.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// gRPC; an unreachable collector included: tonic reports that as `UNAVAILABLE`.
    #[error("export failed ({}): {}", .0.code(), .0.message())]
    Rejected(#[from] tonic::Status),
    /// HTTP 429, 502, 503 or 504: the collector is overloaded or restarting, which passes.
    #[error("the collector is unavailable (HTTP {status}): {message}")]
    Unavailable { status: u16, message: String },
    /// Any other HTTP error status (bad credentials, wrong URL, too large): it will not pass
    /// on its own.
    #[error("the collector refused the export (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// HTTP: no connection, or it broke (refused, DNS, TLS), with the causes.
    #[error("cannot reach the collector: {0}")]
    Unreachable(String),
    #[error("the collector's answer is not an OTLP response: {0}")]
    BadResponse(#[source] prost::DecodeError),
    /// An `http/json` request that would not serialise, or an answer that is not OTLP JSON.
    #[error("OTLP JSON could not be read or written: {0}")]
    BadJson(String),
    #[error("no answer from the collector within {0:?}")]
    Timeout(Duration),
    #[error("the collector refused {rejected} data points: {message}")]
    PartlyRejected { rejected: i64, message: String },
    /// The other registries were still exported.
    #[error("the {scope} registry could not be encoded")]
    Encode { scope: &'static str },
}

/// Pushes every source's metrics to one OTLP endpoint.
pub struct MetricsExporter {
    transport: Transport,
    protocol: Protocol,
    endpoint: String,
    interval: Duration,
    timeout: Duration,
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
        let resource = ResourceAttributesWithSchema::from(&config.resource);
        Ok(Self {
            transport: Transport::new(&config.target)?,
            protocol: config.target.protocol,
            endpoint: config.target.endpoint,
            interval: config.interval,
            timeout: config.target.timeout,
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
        tracing::info!(
            endpoint = %self.endpoint,
            protocol = %self.protocol,
            interval = ?self.interval,
            "exporting metrics over OTLP"
        );
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
        let response = tokio::time::timeout(self.timeout, self.transport.export(request))
            .await
            .map_err(|_| ExportError::Timeout(self.timeout))??;
        if let Some(partial) = response.partial_success
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
