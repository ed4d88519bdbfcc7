//! An in-process OTLP/gRPC receiver: the collector's trace and metrics services on
//! `127.0.0.1:0`, keeping what arrives so a test can assert on the spans and metrics Sluice
//! exports.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use sluice_testkit::otlp::{OtlpReceiver, SpanKind};
//!
//! let receiver = OtlpReceiver::start().await;
//! // … run sluice with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint() and send it a call …
//! let spans = receiver
//!     .wait_for_spans(|spans| spans.iter().any(|s| s.kind == SpanKind::Server), Duration::from_secs(10))
//!     .await;
//! let requests = receiver
//!     .wait_for_metric("sluice_upstream_responses_total", |m| m.total() >= 1.0, Duration::from_secs(10))
//!     .await;
//! # }
//! ```

mod attributes;
mod metric;
mod span;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

pub use attributes::Attributes;
pub use metric::{
    AggregationTemporality, DataPoint, HistogramValue, MetricKind, PointValue, ReceivedMetric,
};
pub use span::{ReceivedSpan, SpanEvent, SpanKind, SpanStatus, StatusCode};

/// A running receiver. Dropping it stops the server.
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Store>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Serves the OTLP trace and metrics services on `127.0.0.1:0` until dropped.
    ///
    /// # Panics
    /// When no loopback port can be bound: the test cannot run then.
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("the OTLP receiver binds a port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let store = Arc::new(Store::default());
        let collector = Collector(Arc::clone(&store));
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the OTLP receiver stopped");
            }
        });
        OtlpReceiver {
            addr,
            store,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().spans.clone()
    }

    /// The latest export of each metric (per name and instrumentation scope), by name.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.store.lock().metrics.values().cloned().collect()
    }

    /// The latest export of the metric called `name` (the first scope's, if several export it).
    pub fn metric(&self, name: &str) -> Option<ReceivedMetric> {
        self.store.lock().metrics_named(name).next().cloned()
    }

    /// Export calls accepted so far, traces and metrics together.
    pub fn export_count(&self) -> usize {
        let received = self.store.lock();
        received.trace_exports + received.metric_exports
    }

    pub fn trace_export_count(&self) -> usize {
        self.store.lock().trace_exports
    }

    pub fn metric_export_count(&self) -> usize {
        self.store.lock().metric_exports
    }

    /// While `reject` is on, exports fail with `UNAVAILABLE` and nothing is kept, as with a
    /// collector that is down or overloaded.
    pub fn reject_exports(&self, reject: bool) {
        self.store.reject.store(reject, Ordering::SeqCst);
    }

    /// Waits until `ready` holds for the spans received so far and returns them all.
    ///
    /// # Panics
    /// After `timeout`, listing the spans that did arrive.
    pub async fn wait_for_spans(
        &self,
        ready: impl Fn(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let found = self
            .wait_until(timeout, |received| {
                ready(&received.spans).then(|| received.spans.clone())
            })
            .await;
        found.unwrap_or_else(|| {
            let spans = self.spans();
            let mut message = format!(
                "the expected spans did not arrive within {timeout:?}; {} span(s) did:",
                spans.len()
            );
            for span in &spans {
                let _ = write!(message, "\n  - {span}");
            }
            panic!("{message}")
        })
    }

    /// Waits until an export of the metric `name` satisfies `matches` and returns it.
    ///
    /// # Panics
    /// After `timeout`, listing the metrics that did arrive (with the points of `name`).
    pub async fn wait_for_metric(
        &self,
        name: &str,
        matches: impl Fn(&ReceivedMetric) -> bool,
        timeout: Duration,
    ) -> ReceivedMetric {
        let found = self
            .wait_until(timeout, |received| {
                received
                    .metrics_named(name)
                    .find(|metric| matches(metric))
                    .cloned()
            })
            .await;
        found.unwrap_or_else(|| {
            let received = self.store.lock();
            let mut message = format!(
                "no export of {name} matched within {timeout:?}; {} metric export(s) arrived with:",
                received.metric_exports
            );
            for metric in received.metrics.values() {
                let _ = write!(message, "\n  - {metric}");
                if metric.name == name {
                    for point in &metric.points {
                        let _ = write!(message, "\n      {:?} {:?}", point.attributes, point.value);
                    }
                }
            }
            panic!("{message}")
        })
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&Received) -> Option<T>,
    ) -> Option<T> {
        // Subscribing before the first check means no export can slip in between unseen.
        let mut changed = self.store.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = check(&self.store.lock());
            if found.is_some() {
                return found;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the store is gone (cannot happen while `self` lives).
                _ => return None,
            }
        }
    }
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What arrived, shared by the gRPC services and the receiver handle.
struct Store {
    received: Mutex<Received>,
    /// Bumped after every accepted export, to wake waiters.
    changed: watch::Sender<u64>,
    reject: AtomicBool,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            changed: watch::Sender::new(0),
            reject: AtomicBool::new(false),
        }
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        // A test that panicked while holding the lock leaves consistent data behind.
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accepting(&self) -> Result<(), Status> {
        if self.reject.load(Ordering::SeqCst) {
            Err(Status::unavailable("the test receiver rejects exports"))
        } else {
            Ok(())
        }
    }

    fn record(&self, update: impl FnOnce(&mut Received)) {
        update(&mut self.lock());
        self.changed.send_modify(|generation| *generation += 1);
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Latest export per (name, scope): a registry exports its whole state each time.
    metrics: BTreeMap<(String, String), ReceivedMetric>,
    trace_exports: usize,
    metric_exports: usize,
}

impl Received {
    fn metrics_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ReceivedMetric> {
        self.metrics
            .range((name.to_owned(), String::new())..)
            .take_while(move |((metric, _), _)| metric == name)
            .map(|(_, metric)| metric)
    }
}

#[derive(Clone)]
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.accepting()?;
        let spans = span::spans_of(request.get_ref());
        self.0.record(|received| {
            received.spans.extend(spans);
            received.trace_exports += 1;
        });
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.accepting()?;
        let metrics = metric::metrics_of(request.get_ref());
        self.0.record(|received| {
            for metric in metrics {
                received
                    .metrics
                    .insert((metric.name.clone(), metric.scope.clone()), metric);
            }
            received.metric_exports += 1;
        });
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[cfg(test)]
mod tests;
