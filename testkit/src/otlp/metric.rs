//! Metrics as a test reads them: one flat list of points per metric, values as plain numbers.

use std::fmt;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
pub use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint, metric, number_data_point,
};

use super::attributes::{Attributes, flatten};

#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedMetric {
    pub name: String,
    pub description: String,
    pub unit: String,
    pub kind: MetricKind,
    pub points: Vec<DataPoint>,
    /// Name of the instrumentation scope (meter) the metric was exported under.
    pub scope: String,
    /// Attributes of the resource that exported the metric (`service.name`, …).
    pub resource: Attributes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Sum {
        monotonic: bool,
        temporality: AggregationTemporality,
    },
    Gauge,
    Histogram {
        temporality: AggregationTemporality,
    },
    ExponentialHistogram {
        temporality: AggregationTemporality,
    },
    Summary,
    /// A metric without data.
    Empty,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataPoint {
    pub attributes: Attributes,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub value: PointValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Int(i64),
    Double(f64),
    Histogram(HistogramValue),
    Summary {
        count: u64,
        sum: f64,
    },
    /// Exponential histograms are only counted: nothing Sluice exports uses them.
    ExponentialHistogram {
        count: u64,
    },
    /// A number point without a value.
    Missing,
}

/// An explicit-bucket histogram point, with OTLP's per-bucket (not cumulative) counts:
/// `bucket_counts[i]` counts values in `(explicit_bounds[i-1], explicit_bounds[i]]`, and the
/// last one those above the last bound.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    pub count: u64,
    pub sum: Option<f64>,
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
}

impl ReceivedMetric {
    /// The first point whose attributes include every `(key, string value)` pair.
    pub fn point(&self, attributes: &[(&str, &str)]) -> Option<&DataPoint> {
        self.points.iter().find(|point| {
            attributes
                .iter()
                .all(|(key, value)| point.str_attr(key) == Some(*value))
        })
    }

    /// Sum of the numeric values of all points (histograms count their `count`).
    pub fn total(&self) -> f64 {
        self.points.iter().filter_map(DataPoint::number).sum()
    }
}

impl DataPoint {
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(|value| value.as_str())
    }

    /// The value of a number point, or the count of a histogram or summary.
    pub fn number(&self) -> Option<f64> {
        match &self.value {
            PointValue::Int(value) => Some(*value as f64),
            PointValue::Double(value) => Some(*value),
            PointValue::Histogram(histogram) => Some(histogram.count as f64),
            PointValue::Summary { count, .. } | PointValue::ExponentialHistogram { count } => {
                Some(*count as f64)
            }
            PointValue::Missing => None,
        }
    }

    pub fn histogram(&self) -> Option<&HistogramValue> {
        match &self.value {
            PointValue::Histogram(histogram) => Some(histogram),
            _ => None,
        }
    }
}

impl fmt::Display for ReceivedMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:?}, scope {:?}, {} point(s)]",
            self.name,
            self.kind,
            self.scope,
            self.points.len()
        )
    }
}

pub(crate) fn metrics_of(request: &ExportMetricsServiceRequest) -> Vec<ReceivedMetric> {
    let mut received = Vec::new();
    for resource_metrics in &request.resource_metrics {
        let resource = resource_metrics
            .resource
            .as_ref()
            .map(|resource| flatten(&resource.attributes))
            .unwrap_or_default();
        for scope_metrics in &resource_metrics.scope_metrics {
            let scope = scope_metrics
                .scope
                .as_ref()
                .map(|scope| scope.name.clone())
                .unwrap_or_default();
            received.extend(scope_metrics.metrics.iter().map(|metric| {
                let (kind, points) = kind_and_points(metric);
                ReceivedMetric {
                    name: metric.name.clone(),
                    description: metric.description.clone(),
                    unit: metric.unit.clone(),
                    kind,
                    points,
                    scope: scope.clone(),
                    resource: resource.clone(),
                }
            }));
        }
    }
    received
}

fn kind_and_points(metric: &Metric) -> (MetricKind, Vec<DataPoint>) {
    let temporality = |value| {
        AggregationTemporality::try_from(value).unwrap_or(AggregationTemporality::Unspecified)
    };
    match &metric.data {
        None => (MetricKind::Empty, Vec::new()),
        Some(metric::Data::Sum(sum)) => (
            MetricKind::Sum {
                monotonic: sum.is_monotonic,
                temporality: temporality(sum.aggregation_temporality),
            },
            sum.data_points.iter().map(number_point).collect(),
        ),
        Some(metric::Data::Gauge(gauge)) => (
            MetricKind::Gauge,
            gauge.data_points.iter().map(number_point).collect(),
        ),
        Some(metric::Data::Histogram(histogram)) => (
            MetricKind::Histogram {
                temporality: temporality(histogram.aggregation_temporality),
            },
            histogram.data_points.iter().map(histogram_point).collect(),
        ),
        Some(metric::Data::ExponentialHistogram(histogram)) => (
            MetricKind::ExponentialHistogram {
                temporality: temporality(histogram.aggregation_temporality),
            },
            histogram
                .data_points
                .iter()
                .map(|point| DataPoint {
                    attributes: flatten(&point.attributes),
                    start_time_unix_nano: point.start_time_unix_nano,
                    time_unix_nano: point.time_unix_nano,
                    value: PointValue::ExponentialHistogram { count: point.count },
                })
                .collect(),
        ),
        Some(metric::Data::Summary(summary)) => (
            MetricKind::Summary,
            summary.data_points.iter().map(summary_point).collect(),
        ),
    }
}

fn number_point(point: &NumberDataPoint) -> DataPoint {
    DataPoint {
        attributes: flatten(&point.attributes),
        start_time_unix_nano: point.start_time_unix_nano,
        time_unix_nano: point.time_unix_nano,
        value: match point.value {
            Some(number_data_point::Value::AsInt(value)) => PointValue::Int(value),
            Some(number_data_point::Value::AsDouble(value)) => PointValue::Double(value),
            None => PointValue::Missing,
        },
    }
}

fn histogram_point(point: &HistogramDataPoint) -> DataPoint {
    DataPoint {
        attributes: flatten(&point.attributes),
        start_time_unix_nano: point.start_time_unix_nano,
        time_unix_nano: point.time_unix_nano,
        value: PointValue::Histogram(HistogramValue {
            count: point.count,
            sum: point.sum,
            bucket_counts: point.bucket_counts.clone(),
            explicit_bounds: point.explicit_bounds.clone(),
        }),
    }
}

fn summary_point(point: &SummaryDataPoint) -> DataPoint {
    DataPoint {
        attributes: flatten(&point.attributes),
        start_time_unix_nano: point.start_time_unix_nano,
        time_unix_nano: point.time_unix_nano,
        value: PointValue::Summary {
            count: point.count,
            sum: point.sum,
        },
    }
}
