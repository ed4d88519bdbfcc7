//! Histograms updated with plain atomic adds. prometheus-client's own histogram takes a mutex
//! per observation, which two busy cores contend on at every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Latency bucket bounds in seconds: 1 ms doubling to about 131 s, then +Inf.
const LATENCY_BOUNDS: [f64; 19] = bounds(0.001, 2.0);

/// Token bucket bounds: powers of 4 from 1 to about 4 million, then +Inf.
const TOKEN_BOUNDS: [f64; 13] = bounds(1.0, 4.0);

/// `first` multiplied by `factor` for each further bound, the last one +Inf.
const fn bounds<const N: usize>(first: f64, factor: f64) -> [f64; N] {
    let mut bounds = [f64::INFINITY; N];
    let mut i = 0;
    let mut bound = first;
    while i + 1 < N {
        bounds[i] = bound;
        bound *= factor;
        i += 1;
    }
    bounds
}

/// Per-bucket (not cumulative) counts over `N` bounds, the last one +Inf, and the sum of the
/// observations in whole units (nanoseconds, tokens) so that it too is one atomic add.
#[derive(Debug)]
struct Buckets<const N: usize> {
    counts: [AtomicU64; N],
    sum_units: AtomicU64,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_units: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Buckets<N> {
    fn observe(&self, bounds: &[f64; N], value: f64, units: u64) {
        // NaN lands in the first bucket rather than nowhere; +Inf is the last bound.
        let bucket = bounds.partition_point(|bound| *bound < value).min(N - 1);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_units.fetch_add(units, Ordering::Relaxed);
    }

    fn encode(
        &self,
        bounds: &[f64; N],
        units_per_value: f64,
        mut encoder: MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        // The encoder makes the counts cumulative itself.
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .zip(&self.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total: one fewer shared counter to bump per observation.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_units.load(Ordering::Relaxed) as f64 / units_per_value;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Durations in seconds, summed in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: Arc<Buckets<{ LATENCY_BOUNDS.len() }>>,
}

impl LatencyHistogram {
    pub fn observe(&self, seconds: f64) {
        // Saturating float-to-int cast; negative or NaN inputs add zero to the sum.
        self.inner
            .observe(&LATENCY_BOUNDS, seconds, (seconds * 1e9) as u64);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.inner.encode(&LATENCY_BOUNDS, 1e9, encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Token counts of single calls.
#[derive(Clone, Debug, Default)]
pub struct TokenHistogram {
    inner: Arc<Buckets<{ TOKEN_BOUNDS.len() }>>,
}

impl TokenHistogram {
    pub fn observe(&self, tokens: u64) {
        self.inner.observe(&TOKEN_BOUNDS, tokens as f64, tokens);
    }
}

impl TypedMetric for TokenHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for TokenHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.inner.encode(&TOKEN_BOUNDS, 1.0, encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::{Metric, Registry};

    use super::*;

    fn text(name: &str, metric: impl Metric) -> String {
        let mut registry = Registry::default();
        registry.register(name, "test", metric);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn assert_has(text: &str, samples: &[&str]) {
        for sample in samples {
            assert!(text.contains(sample), "{sample} missing from\n{text}");
        }
    }

    #[test]
    fn latency_encodes_cumulative_buckets() {
        let histogram = LatencyHistogram::default();
        for seconds in [0.0005, 0.0015, 0.0015, 1000.0, f64::NAN, -1.0] {
            histogram.observe(seconds);
        }
        assert_has(
            &text("latency_seconds", histogram),
            &[
                "latency_seconds_bucket{le=\"0.001\"} 3",
                "latency_seconds_bucket{le=\"0.002\"} 5",
                "latency_seconds_bucket{le=\"131.072\"} 5",
                "latency_seconds_bucket{le=\"+Inf\"} 6",
                "latency_seconds_count 6",
                "latency_seconds_sum 1000.0035",
            ],
        );
    }

    #[test]
    fn tokens_go_in_powers_of_four() {
        let histogram = TokenHistogram::default();
        for tokens in [0, 1, 2, 4, 5, 300, 5_000_000] {
            histogram.observe(tokens);
        }
        assert_has(
            &text("usage_tokens", histogram),
            &[
                "usage_tokens_bucket{le=\"1.0\"} 2",
                "usage_tokens_bucket{le=\"4.0\"} 4",
                "usage_tokens_bucket{le=\"16.0\"} 5",
                "usage_tokens_bucket{le=\"1024.0\"} 6",
                "usage_tokens_bucket{le=\"4194304.0\"} 6",
                "usage_tokens_bucket{le=\"+Inf\"} 7",
                "usage_tokens_count 7",
                "usage_tokens_sum 5000312.0",
            ],
        );
    }
}
