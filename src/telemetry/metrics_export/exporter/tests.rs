use std::sync::Arc;

use prometheus_client::encoding::prometheus_protobuf;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_testkit::otlp::{AggregationTemporality, MetricKind, OtlpReceiver, PointValue};
use tokio::sync::oneshot;

use super::*;
use crate::telemetry::metrics_export::config::{SERVICE_NAME, resource};
use crate::telemetry::metrics_export::otel_env::OtelEnv;

const WAIT: Duration = Duration::from_secs(10);

fn config(endpoint: String) -> MetricsExportConfig {
    let env = OtelEnv::from_vars([(SERVICE_NAME, "sluice-test")]);
    MetricsExportConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        ..MetricsExportConfig::new(endpoint, resource(&env))
    }
}

fn counter_registry(name: &str) -> (Arc<Registry>, Counter) {
    let counter = Counter::default();
    let mut registry = Registry::default();
    registry.register(name, "Requests", counter.clone());
    (Arc::new(registry), counter)
}

fn source(scope: &'static str, registry: Arc<Registry>) -> MetricsSource {
    MetricsSource::new(scope, move || prometheus_protobuf::encode(&registry))
}

/// The exporter pushes on its interval, and once more on shutdown so nothing counted since
/// the last tick is lost.
#[tokio::test]
async fn pushes_every_interval_and_once_more_at_shutdown() {
    let receiver = OtlpReceiver::start().await;
    let (registry, requests) = counter_registry("sluice_requests");
    requests.inc();
    let exporter = MetricsExporter::new(
        config(receiver.endpoint()),
        vec![source("sluice.proxy", registry)],
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(exporter.run(async {
        let _ = stopped.await;
    }));

    let first = receiver
        .wait_for_metric("sluice_requests_total", |m| m.total() == 1.0, WAIT)
        .await;
    assert_eq!(
        first.kind,
        MetricKind::Sum {
            monotonic: true,
            temporality: AggregationTemporality::Cumulative
        }
    );
    assert_eq!(first.description, "Requests.");
    assert_eq!(first.scope, "sluice.proxy");
    assert_eq!(first.resource["service.name"], "sluice-test");
    assert_eq!(first.resource["telemetry.sdk.language"], "rust");
    let point = &first.points[0];
    assert!(0 < point.start_time_unix_nano && point.start_time_unix_nano <= point.time_unix_nano);

    requests.inc_by(4);
    receiver
        .wait_for_metric("sluice_requests_total", |m| m.total() == 5.0, WAIT)
        .await;

    requests.inc();
    let exports = receiver.metric_export_count();
    stop.send(()).unwrap();
    running.await.unwrap();
    assert!(receiver.metric_export_count() > exports);
    let last = receiver.metric("sluice_requests_total").unwrap();
    assert_eq!(last.points[0].value, PointValue::Double(6.0));
}

/// Both planes in one process (`sluice dev`) export one request with a scope each, so their
/// same-named metrics stay apart.
#[tokio::test]
async fn each_source_exports_under_its_own_scope() {
    let receiver = OtlpReceiver::start().await;
    let registry = |revision| {
        let gauge = Gauge::<i64>::default();
        gauge.set(revision);
        let mut registry = Registry::default();
        registry.register("sluice_config_revision", "Config revision", gauge);
        Arc::new(registry)
    };
    let mut exporter = MetricsExporter::new(
        config(receiver.endpoint()),
        vec![
            source("sluice.proxy", registry(4)),
            source("sluice.control_plane", registry(5)),
        ],
    )
    .unwrap();
    exporter.export().await.unwrap();

    let revisions: Vec<_> = receiver
        .metrics()
        .into_iter()
        .map(|m| (m.scope, m.points[0].value.clone()))
        .collect();
    assert_eq!(
        revisions,
        [
            ("sluice.control_plane".to_owned(), PointValue::Double(5.0)),
            ("sluice.proxy".to_owned(), PointValue::Double(4.0)),
        ]
    );
    assert_eq!(receiver.metric_export_count(), 1);
}

/// A collector that refuses or is gone yields an error, not a panic or a hang, and exports
/// work again once it is back.
#[tokio::test]
async fn survives_a_collector_outage() {
    let receiver = OtlpReceiver::start().await;
    let (registry, requests) = counter_registry("sluice_requests");
    requests.inc();
    let mut exporter = MetricsExporter::new(
        config(receiver.endpoint()),
        vec![source("sluice.proxy", registry.clone())],
    )
    .unwrap();

    receiver.reject_exports(true);
    let error = exporter.export().await.unwrap_err();
    assert!(
        matches!(&error, ExportError::Rejected(status) if status.code() == tonic::Code::Unavailable),
        "{error}"
    );
    receiver.reject_exports(false);
    exporter.export().await.unwrap();
    assert_eq!(receiver.metric_export_count(), 1);

    let gone = receiver.endpoint();
    drop(receiver);
    let mut exporter =
        MetricsExporter::new(config(gone), vec![source("sluice.proxy", registry)]).unwrap();
    let started = std::time::Instant::now();
    assert!(exporter.export().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A registry that cannot be encoded is reported; the others are still exported.
#[tokio::test]
async fn an_unencodable_registry_does_not_stop_the_others() {
    let receiver = OtlpReceiver::start().await;
    let (registry, _requests) = counter_registry("sluice_requests");
    let mut exporter = MetricsExporter::new(
        config(receiver.endpoint()),
        vec![
            MetricsSource::new("sluice.broken", || Err(std::fmt::Error)),
            source("sluice.proxy", registry),
        ],
    )
    .unwrap();
    let error = exporter.export().await.unwrap_err();
    assert!(
        matches!(
            error,
            ExportError::Encode {
                scope: "sluice.broken"
            }
        ),
        "{error}"
    );
    assert!(receiver.metric("sluice_requests_total").is_some());
}

/// An outage is logged when it starts and when it ends, not at every interval.
#[test]
fn health_changes_only_on_transitions() {
    let mut health = ExportHealth::default();
    let seen: Vec<_> = [true, false, false, false, true, true, false]
        .into_iter()
        .map(|ok| health.observe(ok))
        .collect();
    assert_eq!(
        seen,
        [
            None,
            Some(Change::Failing),
            None,
            None,
            Some(Change::Recovered),
            None,
            Some(Change::Failing)
        ]
    );
}
