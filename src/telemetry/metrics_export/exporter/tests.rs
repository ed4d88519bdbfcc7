use std::sync::Arc;

use prometheus_client::encoding::prometheus_protobuf;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_testkit::otlp::{
    AggregationTemporality, MetricKind, OtlpReceiver, PointValue, Reply, Transport,
};
use tokio::sync::oneshot;

use super::*;
use crate::telemetry::metrics_export::config::{SERVICE_NAME, resource};
use crate::telemetry::metrics_export::otel_env::OtelEnv;
use crate::telemetry::otlp_target::{ENDPOINT, HEADERS, METRICS, OtlpTarget, PROTOCOL};

const WAIT: Duration = Duration::from_secs(10);

fn config(endpoint: String) -> MetricsExportConfig {
    with_target(OtlpTarget::grpc(endpoint))
}

fn with_target(mut target: OtlpTarget) -> MetricsExportConfig {
    let env = OtelEnv::from_vars([(SERVICE_NAME, "sluice-test")]);
    target.timeout = Duration::from_secs(2);
    MetricsExportConfig {
        interval: Duration::from_millis(100),
        ..MetricsExportConfig::new(target, resource(&env))
    }
}

/// The target `OTEL_EXPORTER_OTLP_ENDPOINT=base` and `…_PROTOCOL=http/protobuf` give, with
/// an API key header.
fn http_config(base: &str) -> MetricsExportConfig {
    let env = OtelEnv::from_vars([
        (ENDPOINT, base),
        (PROTOCOL, "http/protobuf"),
        (HEADERS, "api-key=s3cret"),
    ]);
    with_target(OtlpTarget::from_env(&env, &METRICS).unwrap())
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

/// Over HTTP the same request arrives as protobuf at `/v1/metrics`, with the configured
/// headers.
#[tokio::test]
async fn pushes_over_http_with_the_headers() {
    let receiver = OtlpReceiver::start().await;
    let (registry, requests) = counter_registry("sluice_requests");
    requests.inc_by(3);
    let mut exporter = MetricsExporter::new(
        http_config(&receiver.http_endpoint()),
        vec![source("sluice.proxy", registry)],
    )
    .unwrap();
    exporter.export().await.unwrap();

    let metric = receiver.metric("sluice_requests_total").unwrap();
    assert_eq!(metric.points[0].value, PointValue::Double(3.0));
    assert_eq!(metric.scope, "sluice.proxy");
    assert_eq!(metric.resource["service.name"], "sluice-test");
    assert_eq!(receiver.export_count_over(Transport::Http), 1);
    assert_eq!(receiver.last_headers()["api-key"], "s3cret");
}

/// HTTP answers map to errors that say what the collector said: 503 is transient, 401 is
/// not, a partial success names what was refused, and a collector that is gone is
/// unreachable, all without a hang.
#[tokio::test]
async fn http_failures_say_what_the_collector_said() {
    let receiver = OtlpReceiver::start().await;
    let (registry, _requests) = counter_registry("sluice_requests");
    let mut exporter = MetricsExporter::new(
        http_config(&receiver.http_endpoint()),
        vec![source("sluice.proxy", registry.clone())],
    )
    .unwrap();

    receiver.reject_exports(true);
    let error = exporter.export().await.unwrap_err();
    assert!(
        matches!(&error, ExportError::Unavailable { status: 503, message } if message == "the test receiver rejects exports"),
        "{error}"
    );
    receiver.reply_with(Reply::Unauthenticated("unknown api-key".into()));
    let error = exporter.export().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the collector refused the export (HTTP 401): unknown api-key"
    );
    receiver.reply_with(Reply::PartialSuccess {
        rejected: 2,
        message: "stale points".into(),
    });
    let error = exporter.export().await.unwrap_err();
    assert!(
        matches!(&error, ExportError::PartlyRejected { rejected: 2, message } if message == "stale points"),
        "{error}"
    );
    receiver.reply_with(Reply::Accept);
    exporter.export().await.unwrap();

    let gone = receiver.http_endpoint();
    drop(receiver);
    let mut exporter =
        MetricsExporter::new(http_config(&gone), vec![source("sluice.proxy", registry)]).unwrap();
    let started = std::time::Instant::now();
    let error = exporter.export().await.unwrap_err();
    assert!(matches!(error, ExportError::Unreachable(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
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
