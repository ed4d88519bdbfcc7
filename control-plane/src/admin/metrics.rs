//! Control-plane metrics on `/metrics`: Prometheus text, or OpenMetrics text when asked for.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
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
    /// 1 while the periodic database check succeeds.
    database_up: Gauge,
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
        let database_up = Gauge::default();
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
        registry.register(
            "sluice_database_up",
            "1 while this replica's periodic database check (every 5 s) succeeds",
            database_up.clone(),
        );
        sluice_process_metrics::register(&mut registry);
        Self {
            registry,
            requests,
            durations,
            revision,
            proxies,
            database_up,
        }
    }

    /// The registry behind `/metrics`, for exports that read it on their own schedule (OTLP).
    /// Call [`Self::refresh`] first: two gauges are set when read, not when they change.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The gauge the periodic database check sets.
    pub fn database_up(&self) -> Gauge {
        self.database_up.clone()
    }

    /// Sets the gauges read at scrape time: the latest revision and the connected proxies.
    pub fn refresh(&self, revision: u64, proxies: usize) {
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        self.proxies.set(i64::try_from(proxies).unwrap_or(i64::MAX));
    }

    fn encode(&self, openmetrics: bool) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        };
        text
    }
}

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Metrics in the Prometheus text format, or OpenMetrics text when the `Accept` header asks
/// for `application/openmetrics-text`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text (0.0.4), or OpenMetrics text when asked for", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text"),
    ))))]
pub async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    state
        .metrics
        .refresh(state.store.last_known_revision(), state.proxies.connected());
    let openmetrics = sluice_model::exposition::wants_openmetrics(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok()),
    );
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    let mut response = state.metrics.encode(openmetrics).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic format names counters by their samples (`…_total`) and has no `# EOF`.
    #[test]
    fn encodes_both_formats() {
        let metrics = AdminMetrics::new();
        metrics.refresh(7, 2);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                method: "GET".into(),
                route: "/api/v1/pools".into(),
                status: 200,
            })
            .inc();
        let text = metrics.encode(false);
        assert!(
            text.contains("# TYPE sluice_admin_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("sluice_config_revision 7\n"), "{text}");
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let openmetrics = metrics.encode(true);
        assert!(
            openmetrics.contains("# TYPE sluice_admin_requests counter\n"),
            "{openmetrics}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    }
}
