//! Everything the process reports: logs, OTLP traces and OTLP metrics. Traces and metrics
//! follow the standard `OTEL_*` variables and are off unless an OTLP endpoint is configured.

pub mod metrics_export;
pub mod otlp_target;
mod traces;

use anyhow::Context as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::logging::{self, LogArgs};
use metrics_export::{MetricsExportConfig, MetricsExporter, MetricsSource, OtelEnv};

pub struct Telemetry {
    env: OtelEnv,
    tracer: Option<SdkTracerProvider>,
}

/// Sets up logging and, when configured, span export. Call once, inside the runtime.
pub fn init(log: &LogArgs) -> anyhow::Result<Telemetry> {
    let env = OtelEnv::from_process();
    let traces = traces::provider(&env).context("OTEL_* trace settings")?;
    let tracer = traces.as_ref().map(|(provider, _)| provider);
    logging::init(log, tracer)?;
    let tracer = traces.map(|(provider, target)| {
        tracing::info!(
            endpoint = %target.endpoint,
            protocol = %target.protocol,
            "exporting traces over OTLP"
        );
        provider
    });
    Ok(Telemetry { env, tracer })
}

impl Telemetry {
    /// Starts pushing `sources` over OTLP when metrics export is configured.
    pub fn export_metrics(&self, sources: Vec<MetricsSource>) -> anyhow::Result<MetricsExport> {
        let Some(config) =
            MetricsExportConfig::from_env(&self.env).context("OTEL_* metric settings")?
        else {
            return Ok(MetricsExport(None));
        };
        let exporter = MetricsExporter::new(config, sources).context("OTLP metrics exporter")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(exporter.run(async {
            let _ = stopped.await;
        }));
        Ok(MetricsExport(Some((stop, task))))
    }

    /// Sends the spans still buffered.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(error) = tracer.shutdown()
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

/// A running metrics export (or none).
pub struct MetricsExport(Option<(oneshot::Sender<()>, JoinHandle<()>)>);

impl MetricsExport {
    /// Exports one last time, so what happened since the last interval is not lost.
    pub async fn finish(self) {
        if let Some((stop, task)) = self.0 {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
