//! An in-process OTLP receiver: the collector's trace and metrics services over gRPC and over
//! HTTP (`http/protobuf`: `POST /v1/traces`, `POST /v1/metrics`), each on a port of
//! `127.0.0.1`, keeping what arrives (and the headers it came with) so a test can assert on
//! the spans and metrics Sluice exports.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use sluice_testkit::otlp::{OtlpReceiver, SpanKind};
//!
//! let receiver = OtlpReceiver::start().await;
//! // … run sluice with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint() (or with
//! // OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and receiver.http_endpoint()) and send it a call …
//! let spans = receiver
//!     .wait_for_spans(|spans| spans.iter().any(|s| s.kind == SpanKind::Server), Duration::from_secs(10))
//!     .await;
//! let requests = receiver
//!     .wait_for_metric("sluice_upstream_responses_total", |m| m.total() >= 1.0, Duration::from_secs(10))
//!     .await;
//! # }
//! ```

mod attributes;
mod http;
mod metric;
mod span;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
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

/// How the receiver answers exports, as a collector would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reply {
    /// Keep everything and answer success.
    #[default]
    Accept,
    /// Keep nothing; gRPC `UNAVAILABLE`, HTTP 503: a collector that is down or overloaded.
    Unavailable,
    /// Keep nothing; gRPC `UNAUTHENTICATED`, HTTP 401, with this message: bad credentials,
    /// which retrying does not fix.
    Unauthenticated(String),
    /// Keep everything but answer that `rejected` items were refused, with `message`.
    PartialSuccess { rejected: i64, message: String },
}

/// The transport an export arrived over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// A running receiver. Dropping it stops both servers.
pub struct OtlpReceiver {
    addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<Store>,
    server: JoinHandle<()>,
    http_server: JoinHandle<()>,
}

async fn bind_loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the OTLP receiver binds a port on 127.0.0.1");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, addr)
}

impl OtlpReceiver {
    /// Serves the OTLP trace and metrics services, over gRPC and over HTTP, on two ports of
    /// `127.0.0.1` until dropped.
    ///
    /// # Panics
    /// When no loopback port can be bound: the test cannot run then.
    pub async fn start() -> OtlpReceiver {
        let (listener, addr) = bind_loopback().await;
        let (http_listener, http_addr) = bind_loopback().await;
        let store = Arc::new(Store::default());
        let http_server = tokio::spawn(http::serve(http_listener, Arc::clone(&store)));
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
            http_addr,
            store,
            server,
            http_server,
        }
    }

    /// `http://127.0.0.1:PORT` of the gRPC services, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT` of the HTTP services, for `OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (exporters append `/v1/traces`,
    /// `/v1/metrics`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
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

    /// Exports kept so far that arrived over `transport`, traces and metrics together.
    pub fn export_count_over(&self, transport: Transport) -> usize {
        let received = self.store.lock();
        received
            .transports
            .iter()
            .filter(|t| **t == transport)
            .count()
    }

    /// The headers (gRPC metadata) of the latest export kept, names lowercase. Repeated
    /// headers are joined with `,`.
    pub fn last_headers(&self) -> BTreeMap<String, String> {
        self.store.lock().last_headers.clone()
    }

    /// While `reject` is on, exports fail with `UNAVAILABLE` (HTTP 503) and nothing is kept,
    /// as with a collector that is down or overloaded.
    pub fn reject_exports(&self, reject: bool) {
        self.reply_with(if reject {
            Reply::Unavailable
        } else {
            Reply::Accept
        });
    }

    /// How exports are answered from now on.
    pub fn reply_with(&self, reply: Reply) {
        *self
            .store
            .reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reply;
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
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
        self.http_server.abort();
    }
}

/// What arrived, shared by the gRPC and HTTP services and the receiver handle.
struct Store {
    received: Mutex<Received>,
    /// Bumped after every accepted export, to wake waiters.
    changed: watch::Sender<u64>,
    reply: Mutex<Reply>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            changed: watch::Sender::new(0),
            reply: Mutex::default(),
        }
    }
}

/// Why an export was turned away; each transport says it its own way.
enum Refusal {
    Unavailable,
    Unauthenticated(String),
}

impl Refusal {
    const UNAVAILABLE: &str = "the test receiver rejects exports";

    fn into_status(self) -> Status {
        match self {
            Self::Unavailable => Status::unavailable(Self::UNAVAILABLE),
            Self::Unauthenticated(message) => Status::unauthenticated(message),
        }
    }
}

/// Items refused from an export that was otherwise kept.
struct Partial {
    rejected: i64,
    message: String,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        // A test that panicked while holding the lock leaves consistent data behind.
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an export through `update`, unless the receiver is set to refuse it.
    fn accept(
        &self,
        transport: Transport,
        headers: &hyper::HeaderMap,
        update: impl FnOnce(&mut Received),
    ) -> Result<Option<Partial>, Refusal> {
        let reply = self
            .reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let partial = match reply {
            Reply::Accept => None,
            Reply::Unavailable => return Err(Refusal::Unavailable),
            Reply::Unauthenticated(message) => return Err(Refusal::Unauthenticated(message)),
            Reply::PartialSuccess { rejected, message } => Some(Partial { rejected, message }),
        };
        let mut last_headers = BTreeMap::<String, String>::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            last_headers
                .entry(name.as_str().to_owned())
                .and_modify(|joined| {
                    joined.push(',');
                    joined.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        {
            let mut received = self.lock();
            update(&mut received);
            received.transports.push(transport);
            received.last_headers = last_headers;
        }
        self.changed.send_modify(|generation| *generation += 1);
        Ok(partial)
    }

    fn accept_spans(
        &self,
        transport: Transport,
        headers: &hyper::HeaderMap,
        request: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, Refusal> {
        let spans = span::spans_of(request);
        let partial = self.accept(transport, headers, |received| {
            received.spans.extend(spans);
            received.trace_exports += 1;
        })?;
        Ok(ExportTraceServiceResponse {
            partial_success: partial.map(|partial| ExportTracePartialSuccess {
                rejected_spans: partial.rejected,
                error_message: partial.message,
            }),
        })
    }

    fn accept_metrics(
        &self,
        transport: Transport,
        headers: &hyper::HeaderMap,
        request: &ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, Refusal> {
        let metrics = metric::metrics_of(request);
        let partial = self.accept(transport, headers, |received| {
            for metric in metrics {
                received
                    .metrics
                    .insert((metric.name.clone(), metric.scope.clone()), metric);
            }
            received.metric_exports += 1;
        })?;
        Ok(ExportMetricsServiceResponse {
            partial_success: partial.map(|partial| ExportMetricsPartialSuccess {
                rejected_data_points: partial.rejected,
                error_message: partial.message,
            }),
        })
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Latest export per (name, scope): a registry exports its whole state each time.
    metrics: BTreeMap<(String, String), ReceivedMetric>,
    trace_exports: usize,
    metric_exports: usize,
    /// One entry per export kept.
    transports: Vec<Transport>,
    last_headers: BTreeMap<String, String>,
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
        let headers = request.metadata().clone().into_headers();
        self.0
            .accept_spans(Transport::Grpc, &headers, request.get_ref())
            .map(Response::new)
            .map_err(Refusal::into_status)
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        self.0
            .accept_metrics(Transport::Grpc, &headers, request.get_ref())
            .map(Response::new)
            .map_err(Refusal::into_status)
    }
}

#[cfg(test)]
mod tests;
