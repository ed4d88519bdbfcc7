//! prometheus-client's Prometheus protobuf model to OTLP, so the push export carries the same
//! series under the same names and labels as the Prometheus text on `/metrics`.
//!
//! Names are those the text shows and dashboards query (`sluice_upstream_responses_total`,
//! `sluice_upstream_duration_seconds`, `…_info`): prometheus-client computes them for the
//! protobuf model exactly as for the text. Labels become string attributes, help becomes the
//! description. Counters become monotonic cumulative sums, gauges and untyped metrics gauges,
//! histograms cumulative explicit-bucket histograms, summaries summaries. Values are doubles,
//! as in Prometheus. The exception: metrics the OpenTelemetry GenAI semantic conventions name
//! are pushed under that name and unit, with their labels under the conventions' attribute
//! names ([`SEMCONV_NAMES`]).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    self as otlp, AggregationTemporality, HistogramDataPoint, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, SummaryDataPoint, number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
pub use prom::MetricFamily;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as prom;

/// A metric the GenAI semantic conventions define, as Sluice pushes it.
struct Semconv {
    /// The family's Prometheus name.
    prometheus: &'static str,
    name: &'static str,
    /// UCUM.
    unit: &'static str,
    /// Prometheus label → the conventions' attribute; other labels keep their names.
    attributes: &'static [(&'static str, &'static str)],
}

const SEMCONV_NAMES: [Semconv; 4] = [
    Semconv {
        prometheus: "sluice_client_request_duration_seconds",
        name: "gen_ai.server.request.duration",
        unit: "s",
        attributes: &[],
    },
    Semconv {
        prometheus: "sluice_time_to_first_token_seconds",
        name: "gen_ai.server.time_to_first_token",
        unit: "s",
        attributes: &[],
    },
    Semconv {
        prometheus: "sluice_time_per_output_token_seconds",
        name: "gen_ai.server.time_per_output_token",
        unit: "s",
        attributes: &[],
    },
    Semconv {
        prometheus: "sluice_token_usage_tokens",
        name: "gen_ai.client.token.usage",
        unit: "{token}",
        attributes: &[("token_type", "gen_ai.token.type")],
    },
];

/// How a family is pushed: its name, unit and attribute names.
struct Pushed {
    name: String,
    unit: String,
    renames: &'static [(&'static str, &'static str)],
}

impl Pushed {
    fn of(family: &MetricFamily) -> Self {
        match SEMCONV_NAMES
            .iter()
            .find(|semconv| semconv.prometheus == family.name)
        {
            Some(semconv) => Self {
                name: semconv.name.to_owned(),
                unit: semconv.unit.to_owned(),
                renames: semconv.attributes,
            },
            None => Self {
                name: family.name.clone(),
                unit: ucum_unit(&family.unit),
                renames: &[],
            },
        }
    }

    fn attributes(&self, labels: &[prom::LabelPair]) -> Vec<KeyValue> {
        labels
            .iter()
            .map(|label| {
                let key = self
                    .renames
                    .iter()
                    .find(|(prometheus, _)| *prometheus == label.name)
                    .map_or(label.name.as_str(), |(_, semconv)| semconv);
                string_attribute(key, &label.value)
            })
            .collect()
    }
}

/// When the running totals started (process start) and when they were read: OTLP wants both
/// on cumulative points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    pub start_unix_nano: u64,
    pub now_unix_nano: u64,
}

impl Timestamps {
    pub fn new(start: SystemTime, now: SystemTime) -> Self {
        Self {
            start_unix_nano: unix_nanos(start),
            now_unix_nano: unix_nanos(now),
        }
    }
}

/// One export request: the resource, then each registry's families under its
/// instrumentation scope.
pub fn to_otlp(
    resource: &Resource,
    schema_url: &str,
    registries: &[(&str, Vec<MetricFamily>)],
    times: Timestamps,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: registries
                .iter()
                .map(|(scope, families)| scope_metrics(scope, families, times))
                .collect(),
            schema_url: schema_url.to_owned(),
        }],
    }
}

fn scope_metrics(scope: &str, families: &[MetricFamily], times: Timestamps) -> ScopeMetrics {
    ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: scope.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }),
        metrics: families
            .iter()
            .filter_map(|family| metric(family, times))
            .collect(),
        schema_url: String::new(),
    }
}

/// `None` for a family without series, or of a kind OTLP cannot carry.
fn metric(family: &MetricFamily, times: Timestamps) -> Option<otlp::Metric> {
    use otlp::metric::Data;
    let kind = prom::MetricType::try_from(family.r#type).unwrap_or(prom::MetricType::Untyped);
    let pushed = Pushed::of(family);
    let series = family.metric.iter();
    let data = match kind {
        prom::MetricType::Counter => Data::Sum(otlp::Sum {
            data_points: series
                .filter_map(|m| counter_point(m, &pushed, times))
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        prom::MetricType::Gauge | prom::MetricType::Untyped => Data::Gauge(otlp::Gauge {
            data_points: series
                .filter_map(|m| gauge_point(m, &pushed, times))
                .collect(),
        }),
        prom::MetricType::Histogram => Data::Histogram(otlp::Histogram {
            data_points: series
                .filter_map(|m| histogram_point(m, &pushed, times))
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        prom::MetricType::Summary => Data::Summary(otlp::Summary {
            data_points: series
                .filter_map(|m| summary_point(m, &pushed, times))
                .collect(),
        }),
        // OTLP has no gauge histogram, and prometheus-client cannot produce one.
        prom::MetricType::GaugeHistogram => return None,
    };
    let has_points = match &data {
        Data::Sum(sum) => !sum.data_points.is_empty(),
        Data::Gauge(gauge) => !gauge.data_points.is_empty(),
        Data::Histogram(histogram) => !histogram.data_points.is_empty(),
        Data::Summary(summary) => !summary.data_points.is_empty(),
        Data::ExponentialHistogram(histogram) => !histogram.data_points.is_empty(),
    };
    has_points.then(|| otlp::Metric {
        name: pushed.name,
        description: family.help.clone(),
        unit: pushed.unit,
        data: Some(data),
        ..Default::default()
    })
}

/// OTLP units are UCUM codes; Prometheus spells units out.
fn ucum_unit(unit: &str) -> String {
    match unit {
        "seconds" => "s",
        "bytes" => "By",
        "ratios" | "ratio" => "1",
        "meters" => "m",
        "grams" => "g",
        "joules" => "J",
        "volts" => "V",
        "amperes" => "A",
        "celsius" => "Cel",
        other => other,
    }
    .to_owned()
}

fn counter_point(
    series: &prom::Metric,
    pushed: &Pushed,
    times: Timestamps,
) -> Option<NumberDataPoint> {
    let counter = series.counter.as_ref()?;
    let start = counter
        .start_timestamp
        .as_ref()
        .map(|t| timestamp_nanos(t.seconds, t.nanos));
    Some(number_point(series, pushed, counter.value, start, times))
}

fn gauge_point(
    series: &prom::Metric,
    pushed: &Pushed,
    times: Timestamps,
) -> Option<NumberDataPoint> {
    // An untyped family carries its value in `untyped`, a gauge (or info) in `gauge`.
    let value = series
        .gauge
        .as_ref()
        .map(|gauge| gauge.value)
        .or_else(|| series.untyped.as_ref().map(|untyped| untyped.value))?;
    Some(number_point(series, pushed, value, None, times))
}

fn number_point(
    series: &prom::Metric,
    pushed: &Pushed,
    value: f64,
    start: Option<u64>,
    times: Timestamps,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: pushed.attributes(&series.label),
        start_time_unix_nano: start.unwrap_or(times.start_unix_nano),
        time_unix_nano: read_at(series, times),
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn histogram_point(
    series: &prom::Metric,
    pushed: &Pushed,
    times: Timestamps,
) -> Option<HistogramDataPoint> {
    let histogram = series.histogram.as_ref()?;
    // The float fields override the integer ones when set (float histograms).
    let count = if histogram.sample_count_float > 0.0 {
        histogram.sample_count_float as u64
    } else {
        histogram.sample_count
    };
    let (explicit_bounds, bucket_counts) = otlp_buckets(&histogram.bucket, count);
    Some(HistogramDataPoint {
        attributes: pushed.attributes(&series.label),
        start_time_unix_nano: started_at(histogram.start_timestamp.as_ref(), times),
        time_unix_nano: read_at(series, times),
        count,
        sum: Some(histogram.sample_sum),
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    })
}

/// OTLP's buckets from Prometheus' cumulative ones: the finite upper bounds, and one count
/// per bucket (not cumulative) plus the overflow bucket above the last bound. Prometheus'
/// +Inf bucket is optional; the overflow is whatever the finite buckets do not cover.
fn otlp_buckets(buckets: &[prom::Bucket], count: u64) -> (Vec<f64>, Vec<u64>) {
    let mut finite: Vec<(f64, u64)> = buckets
        .iter()
        .filter(|bucket| bucket.upper_bound.is_finite())
        .map(|bucket| {
            let cumulative = if bucket.cumulative_count_float > 0.0 {
                bucket.cumulative_count_float as u64
            } else {
                bucket.cumulative_count
            };
            (bucket.upper_bound, cumulative)
        })
        .collect();
    finite.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bounds = Vec::with_capacity(finite.len());
    let mut counts = Vec::with_capacity(finite.len() + 1);
    let mut below = 0;
    for (bound, cumulative) in finite {
        bounds.push(bound);
        // Saturating: a torn read of a histogram under update must not wrap around.
        counts.push(cumulative.saturating_sub(below));
        below = below.max(cumulative);
    }
    counts.push(count.saturating_sub(below));
    (bounds, counts)
}

fn summary_point(
    series: &prom::Metric,
    pushed: &Pushed,
    times: Timestamps,
) -> Option<SummaryDataPoint> {
    let summary = series.summary.as_ref()?;
    Some(SummaryDataPoint {
        attributes: pushed.attributes(&series.label),
        start_time_unix_nano: started_at(summary.start_timestamp.as_ref(), times),
        time_unix_nano: read_at(series, times),
        count: summary.sample_count,
        sum: summary.sample_sum,
        quantile_values: summary
            .quantile
            .iter()
            .map(|q| summary_data_point::ValueAtQuantile {
                quantile: q.quantile,
                value: q.value,
            })
            .collect(),
        ..Default::default()
    })
}

/// The series' own start time when it has one, the registry's otherwise.
fn started_at(start: Option<&prost_types::Timestamp>, times: Timestamps) -> u64 {
    start.map_or(times.start_unix_nano, |t| {
        timestamp_nanos(t.seconds, t.nanos)
    })
}

/// The series' own timestamp when it has one (rare: for values read from elsewhere), the
/// export's otherwise.
fn read_at(series: &prom::Metric, times: Timestamps) -> u64 {
    match u64::try_from(series.timestamp_ms) {
        Ok(millis) if millis > 0 => millis.saturating_mul(1_000_000),
        _ => times.now_unix_nano,
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// A protobuf timestamp as Unix nanoseconds; times before 1970 become 0.
fn timestamp_nanos(seconds: i64, nanos: i32) -> u64 {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let nanos = u64::try_from(nanos).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests;
