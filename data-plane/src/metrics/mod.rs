//! Proxy metrics. Per-backend handles are resolved once when a config is applied, so the
//! request path only touches atomics: no label hashing, no registry lock.

mod client;
mod histogram;
mod listener;

pub(crate) use client::record as record_client_call;
pub use client::{
    BodyTimes, BodyTiming, ClientCell, ClientFamilies, PoolClients, UNKNOWN, key_labels,
};
pub use histogram::LatencyHistogram;
use histogram::TokenHistogram;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::concurrency::Load;
use crate::quota::LimitKind;

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
    /// The client key's id (`anonymous` without one): bounded by the configured keys.
    client_key: String,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenUsageLabels {
    pool: String,
    /// Pushed over OTLP as `gen_ai.token.type`.
    token_type: Direction,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Direction {
    input,
    output,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    pool: String,
    backend: String,
    /// `ok` or `error`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    pool: String,
    backend: String,
    reason: EjectionReason,
}

/// Why a backend was taken out of rotation (ejected, not cooled down by a 429).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum EjectionReason {
    status_5xx,
    connect_error,
    timeout,
    /// The backend refused its key even after the secret was re-read.
    key_rejected,
    /// The backend lacks the pool's deployment (Azure `DeploymentNotFound`).
    deployment_not_found,
    /// The backend went silent in the middle of a response body.
    idle_timeout,
}

impl EjectionReason {
    const ALL: [Self; 6] = [
        Self::status_5xx,
        Self::connect_error,
        Self::timeout,
        Self::key_rejected,
        Self::deployment_not_found,
        Self::idle_timeout,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitedLabels {
    pool: String,
    client_key: String,
    limit: LimitLabel,
}

/// A limit's name as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct LimitLabel(LimitKind);

impl EncodeLabelValue for LimitLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.0.as_str())
    }
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
    /// The backend lacks the pool's deployment (Azure 404 `DeploymentNotFound`).
    deployment_not_found,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NackLabels {
    reason: NackReason,
}

/// Why the proxy refused a config update (and kept serving the previous one).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum NackReason {
    /// The update carried no snapshot.
    no_snapshot,
    /// The snapshot failed validation.
    invalid_snapshot,
}

impl NackReason {
    const ALL: [Self; 2] = [Self::no_snapshot, Self::invalid_snapshot];
}

/// The commit the binary was built from, when the build said (`SLUICE_COMMIT`).
const COMMIT: &str = match option_env!("SLUICE_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

type HistogramFamily<L> = Family<L, LatencyHistogram>;

/// Status classes by index: 0 = no response (transport error), then 1xx to 5xx.
pub(crate) const CLASSES: [&str; 6] = ["error", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Everything the proxy exports on its ops port.
pub struct ProxyMetrics {
    registry: Registry,
    responses: Family<ResponseLabels, Counter>,
    durations: HistogramFamily<ResponseLabels>,
    first_byte: HistogramFamily<BackendLabels>,
    tokens: Family<TokenLabels, Counter>,
    token_usage: Family<TokenUsageLabels, TokenHistogram>,
    credential_refreshes: Family<RefreshLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    ejections: Family<EjectionLabels, Counter>,
    rejected: Family<PoolLabels, Counter>,
    state: Family<StateLabels, Gauge>,
    cooldown: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    ratelimited: Family<RateLimitedLabels, Counter>,
    /// 1 while the store that limits are counted in answers (always, without Redis).
    pub quota_store_up: Gauge,
    pub revision: Gauge,
    pub control_plane_connected: Gauge,
    pub seconds_since_update: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub reports_sent: Counter,
    pub report_bytes: Counter,
    pub reports_deferred: Counter,
    /// The newest config revision offered to the proxy, applied or not.
    pub revision_offered: Gauge,
    nacks: Family<NackLabels, Counter>,
    pub clients: ClientFamilies,
    /// Calls refused before their key was known (not ready, no or wrong key).
    unidentified: PoolClients,
}

/// Metric handles of one backend, ready for the hot path.
#[derive(Clone)]
pub struct BackendMetrics {
    /// Index 0 = no response (transport error), 1..=5 = status class.
    responses: [Counter; 6],
    /// Same indexing as `responses`.
    durations: [LatencyHistogram; 6],
    pub first_byte: LatencyHistogram,
    pub tokens: Arc<KeyedTokens>,
    /// Successful and failed credential resolutions.
    credential_refreshes: [Counter; 2],
    /// Indexed like [`EjectionReason::ALL`].
    ejections: [Counter; 6],
}

/// Token counters of one client key at one backend, and the pool's tokens-per-call histograms.
pub struct TokenCounters {
    input: Counter,
    output: Counter,
    per_call: TokensPerCall,
}

impl TokenCounters {
    /// One call's usage, as the backend reported it.
    pub fn record(&self, input: u64, output: u64) {
        self.input.inc_by(input);
        self.output.inc_by(output);
        self.per_call.input.observe(input);
        self.per_call.output.observe(output);
    }
}

/// The tokens-per-call histograms of one pool, by token type.
#[derive(Clone)]
struct TokensPerCall {
    input: TokenHistogram,
    output: TokenHistogram,
}

/// Token counters of one backend, per client key: created on a key's first response and
/// read lock-free after that (copy-on-write, as keys are few and their set rarely grows).
pub struct KeyedTokens {
    family: Family<TokenLabels, Counter>,
    pool: String,
    backend: String,
    per_call: TokensPerCall,
    /// Behind one `Arc` each: a call takes its key's counters with one reference count, not
    /// one per counter (four, shared by every worker: each a contended cache line). Keyed by
    /// the config's key ids, so the fast hasher is safe.
    by_key: ArcSwap<HashMap<Box<str>, Arc<TokenCounters>, foldhash::fast::RandomState>>,
}

impl KeyedTokens {
    pub fn for_key(&self, client_key: Option<&str>) -> Arc<TokenCounters> {
        let key = client_key.unwrap_or("anonymous");
        if let Some(counters) = self.by_key.load().get(key) {
            return counters.clone();
        }
        let counter = |direction| {
            self.family
                .get_or_create(&TokenLabels {
                    pool: self.pool.clone(),
                    backend: self.backend.clone(),
                    client_key: key.to_owned(),
                    direction,
                })
                .clone()
        };
        let counters = Arc::new(TokenCounters {
            input: counter(Direction::input),
            output: counter(Direction::output),
            per_call: self.per_call.clone(),
        });
        self.by_key.rcu(|known| {
            let mut known = HashMap::clone(known);
            known.insert(key.into(), counters.clone());
            known
        });
        counters
    }
}

pub(crate) fn status_class(status: Option<u16>) -> usize {
    status.map_or(0, |s| usize::from((s / 100).clamp(1, 5)))
}

impl BackendMetrics {
    /// One finished attempt: its status (`None` without a response) and how long it took.
    pub fn response(&self, status: Option<u16>, seconds: f64) {
        let class = status_class(status);
        self.responses[class].inc();
        self.durations[class].observe(seconds);
    }

    pub fn credential_refresh(&self, ok: bool) {
        self.credential_refreshes[usize::from(!ok)].inc();
    }

    pub fn ejected(&self, reason: EjectionReason) {
        self.ejections[reason as usize].inc();
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let clients = ClientFamilies::default();
        let unidentified = clients.pool(client::UNKNOWN, Arc::new([Box::from(client::UNKNOWN)]));
        let metrics = Self {
            responses: Family::default(),
            durations: HistogramFamily::default(),
            first_byte: HistogramFamily::default(),
            tokens: Family::default(),
            token_usage: Family::default(),
            credential_refreshes: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            rejected: Family::default(),
            state: Family::default(),
            cooldown: Family::default(),
            ratelimited: Family::default(),
            quota_store_up: Gauge::default(),
            revision: Gauge::default(),
            control_plane_connected: Gauge::default(),
            seconds_since_update: Gauge::default(),
            reports_sent: Counter::default(),
            report_bytes: Counter::default(),
            reports_deferred: Counter::default(),
            revision_offered: Gauge::default(),
            nacks: Family::default(),
            clients,
            unidentified,
            registry: Registry::default(),
        };
        metrics.clients.register(&mut registry);
        sluice_process_metrics::register(&mut registry);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            })
            .set(1);
        for reason in NackReason::ALL {
            let _ = metrics.nacks.get_or_create(&NackLabels { reason });
        }
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
                "Time to the upstream response head per attempt, by pool, backend and status class",
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
                "sluice_token_usage_tokens",
                "Tokens per client call by pool and token type (input, output), from upstream usage reports",
                metrics.token_usage
            ),
            (
                "sluice_credential_refreshes",
                "Resolutions of backend credentials (Key Vault secrets, Entra ID tokens, files), by outcome",
                metrics.credential_refreshes
            ),
            (
                "sluice_retries",
                "Retries on another backend, by reason",
                metrics.retries
            ),
            (
                "sluice_backend_ejections",
                "Backends taken out of rotation, by reason (5xx, connect error, timeout, refused key, missing deployment, idle body)",
                metrics.ejections
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
                "sluice_ratelimited",
                "Client calls refused by a client key's limit, by pool, key and limit",
                metrics.ratelimited
            ),
            (
                "sluice_ratelimit_shared_up",
                "1 while the store that limits are counted in answers (Redis, or the proxy itself without one)",
                metrics.quota_store_up
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
            (
                "sluice_reports_sent",
                "Reports (backend states, per-key usage) handed to the config stream",
                metrics.reports_sent
            ),
            (
                "sluice_report_bytes",
                "Encoded bytes of the reports handed to the config stream",
                metrics.report_bytes
            ),
            (
                "sluice_reports_deferred",
                "Reports put off because the config stream's queue was full (their counts go in the next one)",
                metrics.reports_deferred
            ),
            (
                "sluice_build_info",
                "1, labelled with the version and commit the binary was built from",
                build_info
            ),
            (
                "sluice_config_revision_offered",
                "Newest config revision offered to the proxy, applied or not (minus sluice_config_revision: the revision lag)",
                metrics.revision_offered
            ),
            (
                "sluice_config_nacks",
                "Config updates the proxy refused, keeping the previous config, by reason",
                metrics.nacks
            ),
        ];
        Self {
            registry,
            ..metrics
        }
    }

    /// Adds the client listener's metrics: its workers, their in-flight requests and refusals.
    pub fn with_listener(mut self, load: &Arc<Load>) -> Self {
        listener::register(&mut self.registry, load);
        self
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
        let per_call = |token_type| {
            self.token_usage
                .get_or_create(&TokenUsageLabels {
                    pool: pool.to_owned(),
                    token_type,
                })
                .clone()
        };
        let duration = |class| {
            self.durations
                .get_or_create(&ResponseLabels {
                    pool: pool.to_owned(),
                    backend: backend.to_owned(),
                    class,
                })
                .clone()
        };
        BackendMetrics {
            responses: CLASSES.map(response),
            durations: CLASSES.map(duration),
            first_byte: self.first_byte.get_or_create(&labels).clone(),
            tokens: Arc::new(KeyedTokens {
                family: self.tokens.clone(),
                pool: pool.to_owned(),
                backend: backend.to_owned(),
                per_call: TokensPerCall {
                    input: per_call(Direction::input),
                    output: per_call(Direction::output),
                },
                by_key: ArcSwap::default(),
            }),
            credential_refreshes: ["ok", "error"].map(|outcome| {
                self.credential_refreshes
                    .get_or_create(&RefreshLabels {
                        pool: pool.to_owned(),
                        backend: backend.to_owned(),
                        outcome,
                    })
                    .clone()
            }),
            ejections: EjectionReason::ALL.map(|reason| {
                self.ejections
                    .get_or_create(&EjectionLabels {
                        pool: pool.to_owned(),
                        backend: backend.to_owned(),
                        reason,
                    })
                    .clone()
            }),
        }
    }

    /// The client cell of calls refused before their key was known.
    pub fn unidentified(&self) -> &Arc<ClientCell> {
        self.unidentified
            .cell(0)
            .expect("the unidentified pool has one slot")
    }

    pub fn nack(&self, reason: NackReason) {
        self.nacks.get_or_create(&NackLabels { reason }).inc();
    }

    pub fn retry(&self, pool: &str, reason: RetryReason) {
        self.retries
            .get_or_create(&RetryLabels {
                pool: pool.to_owned(),
                reason,
            })
            .inc();
    }

    /// A call refused by a client key's limit (pool and key come from config: bounded).
    pub fn ratelimited(&self, pool: &str, client_key: &str, limit: LimitKind) {
        self.ratelimited
            .get_or_create(&RateLimitedLabels {
                pool: pool.to_owned(),
                client_key: client_key.to_owned(),
                limit: LimitLabel(limit),
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

    /// The registry behind `/metrics`, for exports that read it on their own schedule (OTLP).
    /// The gauges set at scrape time are only as fresh as the last [`Self::backend_state`].
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn encode(&self, format: Exposition) -> String {
        format.encode(&self.registry)
    }
}

/// The text formats `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// The classic Prometheus text format (0.0.4): what `curl` and `promtool check metrics`
    /// get, and what every scraper understands.
    PrometheusText,
    /// OpenMetrics 1.0 text, for scrapers that ask for it (Prometheus does by default).
    OpenMetrics,
}

impl Exposition {
    /// OpenMetrics when the `Accept` header lists `application/openmetrics-text` with a
    /// non-zero quality, the classic text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let asks_for_openmetrics = sluice_model::exposition::wants_openmetrics(accept);
        if asks_for_openmetrics {
            Self::OpenMetrics
        } else {
            Self::PrometheusText
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    pub fn encode(self, registry: &Registry) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = match self {
            Self::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
            }
            Self::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry),
        };
        text
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_the_scraper_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(Exposition::negotiate(None), Exposition::PrometheusText);
        assert_eq!(
            Exposition::negotiate(Some("*/*")),
            Exposition::PrometheusText
        );
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text; q=0.0, text/plain")),
            Exposition::PrometheusText
        );
    }

    /// A call's usage goes to its key's counters at its backend and to its pool's
    /// tokens-per-call histograms, which all backends of the pool share.
    #[test]
    fn call_usage_is_counted_and_recorded_per_pool_and_token_type() {
        let metrics = ProxyMetrics::new();
        for backend in ["a", "b"] {
            metrics
                .backend("p", backend)
                .tokens
                .for_key(Some("team-a"))
                .record(100, 7);
        }
        let text = metrics.encode(Exposition::PrometheusText);
        for sample in [
            r#"sluice_tokens_total{pool="p",backend="a",client_key="team-a",direction="input"} 100"#,
            r#"sluice_tokens_total{pool="p",backend="b",client_key="team-a",direction="output"} 7"#,
            r#"sluice_token_usage_tokens_count{pool="p",token_type="input"} 2"#,
            r#"sluice_token_usage_tokens_sum{pool="p",token_type="input"} 200"#,
            r#"sluice_token_usage_tokens_bucket{pool="p",token_type="output",le="4"} 0"#,
            r#"sluice_token_usage_tokens_bucket{pool="p",token_type="output",le="16"} 2"#,
        ] {
            assert!(text.contains(sample), "{sample} missing from\n{text}");
        }
    }

    /// The classic format types counters by their sample name and has no `# EOF`, so
    /// `promtool check metrics` accepts it; the samples are the same in both formats.
    #[test]
    fn both_formats_carry_the_same_samples() {
        let metrics = ProxyMetrics::new();
        metrics.retry("p", RetryReason::status_429);
        metrics.backend("p", "a").response(Some(200), 0.003);
        let text = metrics.encode(Exposition::PrometheusText);
        assert!(
            text.contains("# TYPE sluice_retries_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let openmetrics = metrics.encode(Exposition::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        for sample in [
            r#"sluice_retries_total{pool="p",reason="status_429"} 1"#,
            r#"sluice_upstream_duration_seconds_count{pool="p",backend="a",class="2xx"} 1"#,
        ] {
            assert!(text.contains(sample), "{text}");
            assert!(openmetrics.contains(sample), "{openmetrics}");
        }
    }
}
