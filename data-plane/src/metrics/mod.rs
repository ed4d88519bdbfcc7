//! Proxy metrics. Per-backend handles are resolved once when a config is applied, so the
//! request path only touches atomics: no label hashing, no registry lock.

mod histogram;

pub use histogram::LatencyHistogram;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub pool: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    pool: String,
    backend: String,
    /// `2xx`, `4xx`, `5xx`, … or `error` when no response arrived.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    pool: String,
    backend: String,
    direction: Direction,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Direction {
    input,
    output,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub pool: String,
    pub reason: RetryReason,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RetryReason {
    status_429,
    status_5xx,
    status_other,
    /// The backend refused its key (401) even after the secret was re-read.
    key_rejected,
    connect_error,
    timeout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pool: String,
    backend: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

type HistogramFamily<L> = Family<L, LatencyHistogram>;

/// Everything the proxy exports on its ops port.
pub struct ProxyMetrics {
    registry: Registry,
    responses: Family<ResponseLabels, Counter>,
    durations: HistogramFamily<BackendLabels>,
    first_byte: HistogramFamily<BackendLabels>,
    tokens: Family<TokenLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    rejected: Family<PoolLabels, Counter>,
    state: Family<StateLabels, Gauge>,
    cooldown: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub revision: Gauge,
    pub control_plane_connected: Gauge,
    pub seconds_since_update: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// Metric handles of one backend, ready for the hot path.
#[derive(Clone)]
pub struct BackendMetrics {
    /// Index 0 = no response (transport error), 1..=5 = status class.
    responses: [Counter; 6],
    pub duration: LatencyHistogram,
    pub first_byte: LatencyHistogram,
    pub input_tokens: Counter,
    pub output_tokens: Counter,
}

impl BackendMetrics {
    pub fn response(&self, status: Option<u16>) {
        let class = status.map_or(0, |s| usize::from((s / 100).clamp(1, 5)));
        self.responses[class].inc();
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            responses: Family::default(),
            durations: HistogramFamily::default(),
            first_byte: HistogramFamily::default(),
            tokens: Family::default(),
            retries: Family::default(),
            rejected: Family::default(),
            state: Family::default(),
            cooldown: Family::default(),
            revision: Gauge::default(),
            control_plane_connected: Gauge::default(),
            seconds_since_update: Gauge::default(),
            registry: Registry::default(),
        };
        // (name, help, metric): one table, so each metric is declared once.
        macro_rules! register {
            ($(($name:literal, $help:literal, $metric:expr)),* $(,)?) => {
                $(registry.register($name, $help, $metric.clone());)*
            };
        }
        register![
            (
                "sluice_upstream_responses",
                "Upstream attempts by pool, backend and status class",
                metrics.responses
            ),
            (
                "sluice_upstream_duration_seconds",
                "Time to the upstream response head per attempt",
                metrics.durations
            ),
            (
                "sluice_time_to_first_byte_seconds",
                "Time from the client request to the first response body byte",
                metrics.first_byte
            ),
            (
                "sluice_tokens",
                "Tokens used, from upstream usage reports",
                metrics.tokens
            ),
            (
                "sluice_retries",
                "Retries on another backend, by reason",
                metrics.retries
            ),
            (
                "sluice_all_backends_unavailable",
                "Requests answered 429/503 because no backend of the pool was available",
                metrics.rejected
            ),
            (
                "sluice_backend_state",
                "1 for the backend's current state (available, cooling, ejected, disabled, no_credential)",
                metrics.state
            ),
            (
                "sluice_backend_cooldown_remaining_seconds",
                "Seconds until a cooling or ejected backend takes traffic again",
                metrics.cooldown
            ),
            (
                "sluice_config_revision",
                "Config revision the proxy serves",
                metrics.revision
            ),
            (
                "sluice_control_plane_connected",
                "1 while the config stream to the control plane is up",
                metrics.control_plane_connected
            ),
            (
                "sluice_config_age_seconds",
                "Seconds since the proxy last applied a config",
                metrics.seconds_since_update
            ),
        ];
        Self {
            registry,
            ..metrics
        }
    }

    pub fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        let labels = BackendLabels {
            pool: pool.to_owned(),
            backend: backend.to_owned(),
        };
        let response = |class| {
            self.responses
                .get_or_create(&ResponseLabels {
                    pool: pool.to_owned(),
                    backend: backend.to_owned(),
                    class,
                })
                .clone()
        };
        let tokens = |direction| {
            self.tokens
                .get_or_create(&TokenLabels {
                    pool: pool.to_owned(),
                    backend: backend.to_owned(),
                    direction,
                })
                .clone()
        };
        BackendMetrics {
            responses: ["error", "1xx", "2xx", "3xx", "4xx", "5xx"].map(response),
            duration: self.durations.get_or_create(&labels).clone(),
            first_byte: self.first_byte.get_or_create(&labels).clone(),
            input_tokens: tokens(Direction::input),
            output_tokens: tokens(Direction::output),
        }
    }

    pub fn retry(&self, pool: &str, reason: RetryReason) {
        self.retries
            .get_or_create(&RetryLabels {
                pool: pool.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn rejected(&self, pool: &str) {
        self.rejected
            .get_or_create(&PoolLabels {
                pool: pool.to_owned(),
            })
            .inc();
    }

    /// Sets a backend's state gauges (called at scrape time).
    pub fn backend_state(
        &self,
        pool: &str,
        backend: &str,
        state: &'static str,
        remaining_seconds: f64,
    ) {
        for candidate in [
            "available",
            "cooling",
            "ejected",
            "disabled",
            "no_credential",
        ] {
            self.state
                .get_or_create(&StateLabels {
                    pool: pool.to_owned(),
                    backend: backend.to_owned(),
                    state: candidate,
                })
                .set(i64::from(candidate == state));
        }
        self.cooldown
            .get_or_create(&BackendLabels {
                pool: pool.to_owned(),
                backend: backend.to_owned(),
            })
            .set(remaining_seconds);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}
