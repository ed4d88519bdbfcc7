//! Control-plane metrics in Prometheus/OpenMetrics text on `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AdminState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template (`/api/v1/pools/{pool}`), never the raw path: bounded cardinality.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct AdminMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    revision: Gauge,
    proxies: Gauge,
}

impl AdminMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = HistogramFamily::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let revision = Gauge::default();
        let proxies = Gauge::default();
        registry.register(
            "sluice_admin_requests",
            "Admin API requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "sluice_admin_request_duration_seconds",
            "Admin API request latency",
            durations.clone(),
        );
        registry.register(
            "sluice_config_revision",
            "Latest config revision this control plane has committed or read",
            revision.clone(),
        );
        registry.register(
            "sluice_connected_proxies",
            "Proxies with an open config stream to this replica",
            proxies.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            revision,
            proxies,
        }
    }

    fn encode(&self, revision: u64, proxies: usize) -> String {
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        self.proxies.set(i64::try_from(proxies).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for AdminMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every routed admin request.
pub async fn track(
    State(metrics): State<Arc<AdminMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    metrics
        .durations
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(elapsed);
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Metrics in OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus/OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AdminState>) -> Response {
    let mut response = state
        .metrics
        .encode(
            state.store.last_known_revision(),
            state.proxies.list().len(),
        )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
