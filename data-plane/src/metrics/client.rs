//! The client's view of the proxy: every call it answers, its own refusals included, counted
//! by pool, client key, status class and error code, and timed end to end.
//!
//! Pools and keys come from config, so their label values are bounded. Each (pool, key) has a
//! cell of handles made on its first call (one registry lookup per series, ever); after that a
//! call costs an index and atomic adds.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::Response;
use http_body_util::Either;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::histogram::LatencyHistogram;
use super::{CLASSES, PoolLabels, status_class};
use crate::body::ProxyBody;
use crate::client_error::ErrorCode;

/// The pool or key label of a call refused before its pool or key was known.
pub const UNKNOWN: &str = "_none";
/// The key label of clients without a key (`--allow-anonymous`), as in `sluice_tokens`.
pub const ANONYMOUS: &str = "anonymous";
/// The code label of a response passed on from a backend.
const FROM_BACKEND: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    pool: String,
    client_key: String,
    class: &'static str,
    /// The error code of a response the proxy made itself; `none` for a backend's.
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    pool: String,
    client_key: String,
    class: &'static str,
}

/// The client metrics' families, registered once.
#[derive(Clone, Default)]
pub struct ClientFamilies {
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, LatencyHistogram>,
    time_to_first_token: Family<PoolLabels, LatencyHistogram>,
    time_per_output_token: Family<PoolLabels, LatencyHistogram>,
}

impl ClientFamilies {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_client_requests",
            "Client calls answered, by pool, client key, status class and error code (none when a backend answered); the proxy's own refusals included",
            self.requests.clone(),
        );
        registry.register(
            "sluice_client_request_duration_seconds",
            "Client calls from request to the response body's end, by pool, client key and status class",
            self.durations.clone(),
        );
        registry.register(
            "sluice_time_to_first_token_seconds",
            "Streamed calls: time from the client request to the first event of the response",
            self.time_to_first_token.clone(),
        );
        registry.register(
            "sluice_time_per_output_token_seconds",
            "Streamed calls: time after the first event per further output token",
            self.time_per_output_token.clone(),
        );
    }

    /// The cells of one pool (or of calls with no pool, named [`UNKNOWN`]) for a config whose
    /// key ids are `keys`, in slot order.
    pub fn pool(&self, pool: &str, keys: Arc<[Box<str>]>) -> PoolClients {
        let streams = (pool != UNKNOWN).then(|| {
            let labels = PoolLabels {
                pool: pool.to_owned(),
            };
            StreamTimes {
                first_token: self.time_to_first_token.get_or_create(&labels).clone(),
                per_output_token: self.time_per_output_token.get_or_create(&labels).clone(),
            }
        });
        PoolClients {
            families: self.clone(),
            pool: pool.into(),
            streams,
            cells: keys.iter().map(|_| OnceLock::new()).collect(),
            keys,
        }
    }
}

/// Key ids by slot for a config's keys, then the anonymous clients' slot.
pub fn key_labels<'a>(ids: impl Iterator<Item = &'a str>) -> Arc<[Box<str>]> {
    ids.chain([ANONYMOUS]).map(Box::from).collect()
}

#[derive(Clone)]
struct StreamTimes {
    first_token: LatencyHistogram,
    per_output_token: LatencyHistogram,
}

/// The client cells of one pool, by key slot.
pub struct PoolClients {
    families: ClientFamilies,
    pool: Box<str>,
    streams: Option<StreamTimes>,
    keys: Arc<[Box<str>]>,
    cells: Box<[OnceLock<Arc<ClientCell>>]>,
}

impl PoolClients {
    /// The cell of the caller in `slot`; `None` for a slot the config does not have.
    pub fn cell(&self, slot: usize) -> Option<&Arc<ClientCell>> {
        let cell = self.cells.get(slot)?;
        Some(cell.get_or_init(|| {
            Arc::new(ClientCell {
                families: self.families.clone(),
                pool: self.pool.clone(),
                client_key: self.keys[slot].clone(),
                streams: self.streams.clone(),
                requests: std::array::from_fn(|_| OnceLock::new()),
                durations: std::array::from_fn(|_| OnceLock::new()),
            })
        }))
    }
}

/// Responses passed on from a backend, by status class, then the proxy's own by error code.
const REQUEST_SLOTS: usize = CLASSES.len() + ErrorCode::ALL.len();

/// The handles of one (pool, client key), each series made on its first use.
pub struct ClientCell {
    families: ClientFamilies,
    pool: Box<str>,
    client_key: Box<str>,
    streams: Option<StreamTimes>,
    requests: [OnceLock<Counter>; REQUEST_SLOTS],
    durations: [OnceLock<LatencyHistogram>; CLASSES.len()],
}

impl ClientCell {
    /// Counts one answered call; returns its status class index.
    fn count(&self, status: u16, code: Option<ErrorCode>) -> usize {
        let class = status_class(Some(status));
        let slot = code.map_or(class, |code| CLASSES.len() + code as usize);
        self.requests[slot]
            .get_or_init(|| {
                self.families
                    .requests
                    .get_or_create(&RequestLabels {
                        pool: self.pool.to_string(),
                        client_key: self.client_key.to_string(),
                        class: CLASSES[class],
                        code: code.map_or(FROM_BACKEND, ErrorCode::as_str),
                    })
                    .clone()
            })
            .inc();
        class
    }

    fn duration(&self, class: usize) -> &LatencyHistogram {
        self.durations[class].get_or_init(|| {
            self.families
                .durations
                .get_or_create(&DurationLabels {
                    pool: self.pool.to_string(),
                    client_key: self.client_key.to_string(),
                    class: CLASSES[class],
                })
                .clone()
        })
    }
}

/// Counts an answered call. A body the proxy made is complete now; a backend's body is timed
/// when it ends (see [`BodyTiming`]).
pub(crate) fn record(cell: &Arc<ClientCell>, response: &mut Response<ProxyBody>, started: Instant) {
    let code = response.extensions().get::<ErrorCode>().copied();
    let class = cell.count(response.status().as_u16(), code);
    match response.body_mut() {
        Either::Left(passed) => passed.as_mut().time_for_client(BodyTiming {
            cell: cell.clone(),
            class,
        }),
        Either::Right(_) => cell
            .duration(class)
            .observe(started.elapsed().as_secs_f64()),
    }
}

/// Where a passed-on body reports its end.
pub struct BodyTiming {
    cell: Arc<ClientCell>,
    class: usize,
}

/// A passed-on body's times, in seconds since the client's request.
pub struct BodyTimes {
    pub ended: f64,
    /// The first data of a stream (server-sent events), `None` for other bodies.
    pub first_event: Option<f64>,
    pub output_tokens: Option<u64>,
}

impl BodyTiming {
    pub fn ended(self, times: BodyTimes) {
        let cell = &self.cell;
        cell.duration(self.class).observe(times.ended);
        let (Some(streams), Some(first)) = (&cell.streams, times.first_event) else {
            return;
        };
        streams.first_token.observe(first);
        // The first event carries the first token; the rest came in the time after it.
        if let Some(later_tokens) = times.output_tokens.and_then(|n| n.checked_sub(1))
            && later_tokens > 0
        {
            streams
                .per_output_token
                .observe((times.ended - first) / later_tokens as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Exposition, ProxyMetrics};

    #[test]
    fn counts_own_refusals_by_code_and_backend_answers_by_class() {
        let metrics = ProxyMetrics::new();
        let pool = metrics
            .clients
            .pool("gpt-4o", key_labels(["team-a"].into_iter()));
        let cell = pool.cell(0).unwrap();
        assert_eq!(cell.count(200, None), 2);
        assert_eq!(cell.count(200, None), 2);
        assert_eq!(cell.count(429, Some(ErrorCode::RateLimitExceeded)), 4);
        assert!(pool.cell(2).is_none(), "one key and the anonymous slot");
        pool.cell(1).unwrap().count(502, None);
        let text = metrics.encode(Exposition::PrometheusText);
        for sample in [
            r#"sluice_client_requests_total{pool="gpt-4o",client_key="team-a",class="2xx",code="none"} 2"#,
            r#"sluice_client_requests_total{pool="gpt-4o",client_key="team-a",class="4xx",code="rate_limit_exceeded"} 1"#,
            r#"sluice_client_requests_total{pool="gpt-4o",client_key="anonymous",class="5xx",code="none"} 1"#,
        ] {
            assert!(text.contains(sample), "{sample} missing from\n{text}");
        }
    }

    #[test]
    fn streams_time_their_first_token_and_the_tokens_after_it() {
        let metrics = ProxyMetrics::new();
        let pool = metrics.clients.pool("p", key_labels(std::iter::empty()));
        let cell = pool.cell(0).unwrap().clone();
        let timing = |class| BodyTiming {
            cell: cell.clone(),
            class,
        };
        timing(2).ended(BodyTimes {
            ended: 2.5,
            first_event: Some(0.5),
            output_tokens: Some(5),
        });
        // Not a stream: no token times.
        timing(2).ended(BodyTimes {
            ended: 1.0,
            first_event: None,
            output_tokens: Some(5),
        });
        let text = metrics.encode(Exposition::PrometheusText);
        for sample in [
            r#"sluice_time_to_first_token_seconds_count{pool="p"} 1"#,
            r#"sluice_time_to_first_token_seconds_sum{pool="p"} 0.5"#,
            r#"sluice_time_per_output_token_seconds_sum{pool="p"} 0.5"#,
            r#"sluice_client_request_duration_seconds_count{pool="p",client_key="anonymous",class="2xx"} 2"#,
        ] {
            assert!(text.contains(sample), "{sample} missing from\n{text}");
        }
    }

    #[test]
    fn calls_without_a_pool_have_no_stream_times() {
        let metrics = ProxyMetrics::new();
        let pool = metrics
            .clients
            .pool(UNKNOWN, key_labels(std::iter::empty()));
        assert!(pool.cell(0).unwrap().streams.is_none());
    }
}
