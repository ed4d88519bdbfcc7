//! The metrics registries of both planes, pushed over OTLP (gRPC or HTTP) under the same names as the
//! Prometheus text on `/metrics`.
//!
//! The registries stay the single source: an exporter task reads them every
//! `OTEL_METRIC_EXPORT_INTERVAL` as a scrape would ([`convert`] maps prometheus-client's
//! OpenMetrics model to OTLP) and pushes one request per interval, so the request path pays
//! nothing extra. [`config`] reads the standard `OTEL_*` variables.

pub mod config;
pub mod convert;
pub mod exporter;
pub mod otel_env;
mod transport;

pub use config::MetricsExportConfig;
pub use exporter::{MetricsExporter, MetricsSource};
pub use otel_env::OtelEnv;
