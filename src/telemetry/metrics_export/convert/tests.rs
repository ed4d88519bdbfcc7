use std::collections::BTreeSet;

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{Metric, Sum};
use prometheus_client::encoding::prometheus_protobuf;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use sluice_control_plane::admin::AdminMetrics;
use sluice_data_plane::metrics::{ProxyMetrics, RetryReason};

use super::*;

const TIMES: Timestamps = Timestamps {
    start_unix_nano: 100,
    now_unix_nano: 200,
};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A counter family, an integer and a float gauge, and a histogram.
fn registry() -> Registry {
    let mut registry = Registry::default();
    let requests = Family::<Labels, Counter>::default();
    requests
        .get_or_create(&labels(&[("pool", "gpt-4o"), ("class", "2xx")]))
        .inc_by(3);
    requests
        .get_or_create(&labels(&[("pool", "gpt-4o"), ("class", "5xx")]))
        .inc();
    registry.register("requests", "Requests by pool and class", requests);
    let proxies = Gauge::<i64>::default();
    proxies.set(2);
    registry.register("connected_proxies", "Connected proxies", proxies);
    let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    age.set(1.5);
    registry.register("config_age_seconds", "Seconds since the last config", age);
    let durations =
        Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new([0.1, 0.5, 1.0]));
    for seconds in [0.05, 0.3, 0.3, 2.0] {
        durations
            .get_or_create(&labels(&[("backend", "east")]))
            .observe(seconds);
    }
    registry.register("duration_seconds", "Attempt duration", durations);
    registry
}

fn convert(registry: &Registry) -> Vec<Metric> {
    let families = prometheus_protobuf::encode(registry).expect("encodable registry");
    convert_families(families)
}

fn convert_families(families: Vec<MetricFamily>) -> Vec<Metric> {
    let request = to_otlp(
        &Resource::default(),
        "",
        &[("sluice.test", families)],
        TIMES,
    );
    request.resource_metrics[0].scope_metrics[0].metrics.clone()
}

fn named<'a>(metrics: &'a [Metric], name: &str) -> &'a Metric {
    metrics
        .iter()
        .find(|metric| metric.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(metrics)))
}

fn names(metrics: &[Metric]) -> BTreeSet<String> {
    metrics.iter().map(|metric| metric.name.clone()).collect()
}

fn string_attributes(attributes: &[KeyValue]) -> Labels {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => panic!("{} is not a string: {other:?}", kv.key),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn sum_of(metric: &Metric) -> &Sum {
    match &metric.data {
        Some(Data::Sum(sum)) => sum,
        other => panic!("{} is not a sum: {other:?}", metric.name),
    }
}

fn double(value: f64) -> Option<number_data_point::Value> {
    Some(number_data_point::Value::AsDouble(value))
}

/// What `/metrics` in the classic text format names its families (`# TYPE name …`).
fn prometheus_text_names(registry: &Registry) -> BTreeSet<String> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Counters become monotonic cumulative sums named as Prometheus shows them, with their
/// labels as attributes, their help as description and the process start as start time.
#[test]
fn counters_become_monotonic_sums_under_their_total_name() {
    let metrics = convert(&registry());
    let requests = named(&metrics, "requests_total");
    assert_eq!(requests.description, "Requests by pool and class.");
    let sum = sum_of(requests);
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let mut points: Vec<_> = sum
        .data_points
        .iter()
        .map(|point| (string_attributes(&point.attributes), point.value))
        .collect();
    points.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        points,
        [
            (labels(&[("pool", "gpt-4o"), ("class", "2xx")]), double(3.0)),
            (labels(&[("pool", "gpt-4o"), ("class", "5xx")]), double(1.0)),
        ]
    );
    assert!(
        sum.data_points
            .iter()
            .all(|p| (p.start_time_unix_nano, p.time_unix_nano) == (100, 200))
    );
}

#[test]
fn gauges_keep_their_values() {
    let metrics = convert(&registry());
    let value = |name| match &named(&metrics, name).data {
        Some(Data::Gauge(gauge)) => {
            assert_eq!(gauge.data_points[0].time_unix_nano, 200);
            gauge.data_points[0].value
        }
        other => panic!("{name} is not a gauge: {other:?}"),
    };
    assert_eq!(value("connected_proxies"), double(2.0));
    assert_eq!(value("config_age_seconds"), double(1.5));
}

/// OTLP wants the finite bounds and per-bucket counts, the last one above the last bound.
#[test]
fn histograms_get_explicit_bounds_and_per_bucket_counts() {
    let metrics = convert(&registry());
    let histogram = match &named(&metrics, "duration_seconds").data {
        Some(Data::Histogram(histogram)) => histogram,
        other => panic!("not a histogram: {other:?}"),
    };
    assert_eq!(
        histogram.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let point = &histogram.data_points[0];
    assert_eq!(
        string_attributes(&point.attributes),
        labels(&[("backend", "east")])
    );
    assert_eq!(point.explicit_bounds, [0.1, 0.5, 1.0]);
    assert_eq!(point.bucket_counts, [1, 2, 0, 1]);
    assert_eq!(point.count, 4);
    assert_eq!(point.sum, Some(2.65));
    assert_eq!(
        (point.start_time_unix_nano, point.time_unix_nano),
        (100, 200)
    );
}

/// A dashboard query works on both exports: the OTLP names are the text's family names,
/// units included, and an info metric keeps its `_info`.
#[test]
fn names_match_the_prometheus_text() {
    let mut registry = registry();
    let latency = Histogram::new([0.01]);
    latency.observe(0.001);
    registry.register_with_unit("latency", "Latency", Unit::Seconds, latency);
    registry.register("build", "Build", Info::new(labels(&[("version", "1.0")])));
    let metrics = convert(&registry);
    assert_eq!(names(&metrics), prometheus_text_names(&registry));
    assert_eq!(named(&metrics, "latency_seconds").unit, "s");
    let build = match &named(&metrics, "build_info").data {
        Some(Data::Gauge(gauge)) => &gauge.data_points[0],
        other => panic!("not a gauge: {other:?}"),
    };
    assert_eq!(
        string_attributes(&build.attributes),
        labels(&[("version", "1.0")])
    );
    assert_eq!(build.value, double(1.0));
}

/// The names a registry's families are pushed under: the text's, but for the GenAI ones.
fn pushed_names(registry: &Registry) -> BTreeSet<String> {
    prometheus_text_names(registry)
        .into_iter()
        .map(|name| {
            SEMCONV_NAMES
                .iter()
                .find(|semconv| semconv.prometheus == name)
                .map_or(name, |semconv| semconv.name.to_owned())
        })
        .collect()
}

/// The same holds for the registries the proxy and the control plane really serve (their
/// process metrics included), but for the GenAI semantic conventions' metrics.
#[test]
fn sluice_registries_export_under_their_scrape_names() {
    let proxy = ProxyMetrics::new();
    let backend = proxy.backend("gpt-4o", "east");
    backend.response(Some(200), 0.003);
    backend.first_byte.observe(0.004);
    backend.tokens.for_key(Some("team-a")).record(12, 3);
    proxy.retry("gpt-4o", RetryReason::status_429);
    proxy.rejected("gpt-4o");
    proxy.backend_state("gpt-4o", "east", "available", 0.0);
    let metrics = convert(proxy.registry());
    assert_eq!(names(&metrics), pushed_names(proxy.registry()));
    for process in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(names(&metrics).contains(process), "{process}");
    }
    let duration = match &named(&metrics, "sluice_upstream_duration_seconds").data {
        Some(Data::Histogram(histogram)) => histogram
            .data_points
            .iter()
            .find(|point| {
                string_attributes(&point.attributes)
                    .iter()
                    .any(|(key, value)| key == "class" && value == "2xx")
            })
            .expect("a 2xx series"),
        other => panic!("not a histogram: {other:?}"),
    };
    // 1 ms doubling: the 3 ms attempt is in (2 ms, 4 ms], the third bucket.
    assert_eq!(
        duration.bucket_counts.len(),
        duration.explicit_bounds.len() + 1
    );
    assert_eq!(duration.bucket_counts[2], 1);
    assert_eq!(duration.bucket_counts.iter().sum::<u64>(), 1);
    let retries = sum_of(named(&metrics, "sluice_retries_total"));
    assert_eq!(retries.data_points[0].value, double(1.0));

    let admin = AdminMetrics::new();
    admin.refresh(3, 1);
    let metrics = convert(admin.registry());
    assert_eq!(names(&metrics), prometheus_text_names(admin.registry()));
    assert!(names(&metrics).contains("sluice_config_revision"));
    assert!(names(&metrics).contains("process_start_time_seconds"));
}

fn buckets(cumulative: &[(f64, u64)]) -> Vec<prom::Bucket> {
    cumulative
        .iter()
        .map(|(upper_bound, cumulative_count)| prom::Bucket {
            cumulative_count: *cumulative_count,
            upper_bound: *upper_bound,
            ..Default::default()
        })
        .collect()
}

/// Prometheus' +Inf bucket is optional and its buckets should be sorted; neither is assumed.
#[test]
fn cumulative_buckets_become_per_bucket_counts() {
    let inf = f64::INFINITY;
    let with_inf = buckets(&[(0.1, 1), (0.5, 3), (1.0, 3), (inf, 4)]);
    assert_eq!(
        otlp_buckets(&with_inf, 4),
        (vec![0.1, 0.5, 1.0], vec![1, 2, 0, 1])
    );
    let without_inf = buckets(&[(0.1, 1), (0.5, 3)]);
    assert_eq!(
        otlp_buckets(&without_inf, 4),
        (vec![0.1, 0.5], vec![1, 2, 1])
    );
    let unsorted = buckets(&[(inf, 4), (0.5, 3), (0.1, 1)]);
    assert_eq!(otlp_buckets(&unsorted, 4), (vec![0.1, 0.5], vec![1, 2, 1]));
    // A torn read (count read before a bucket moved) never wraps around.
    let torn = buckets(&[(0.1, 2), (0.5, 1)]);
    assert_eq!(otlp_buckets(&torn, 1), (vec![0.1, 0.5], vec![2, 0, 0]));
    assert_eq!(otlp_buckets(&[], 3), (vec![], vec![3]));
}

fn family(name: &str, kind: prom::MetricType, series: Vec<prom::Metric>) -> MetricFamily {
    MetricFamily {
        name: name.into(),
        help: "help.".into(),
        r#type: kind as i32,
        metric: series,
        ..Default::default()
    }
}

/// Untyped series are gauges; summaries keep their quantiles; empty families and gauge
/// histograms (which OTLP cannot carry) are left out.
#[test]
fn untyped_summaries_and_what_is_left_out() {
    let untyped = prom::Metric {
        untyped: Some(prom::Untyped { value: 0.25 }),
        ..Default::default()
    };
    let summary = prom::Metric {
        summary: Some(prom::Summary {
            sample_count: 3,
            sample_sum: 1.5,
            quantile: vec![prom::Quantile {
                quantile: 0.5,
                value: 0.4,
            }],
            start_timestamp: None,
        }),
        ..Default::default()
    };
    let metrics = convert_families(vec![
        family("mystery", prom::MetricType::Untyped, vec![untyped]),
        family("latency", prom::MetricType::Summary, vec![summary]),
        family("empty_total", prom::MetricType::Counter, vec![]),
        family(
            "queue",
            prom::MetricType::GaugeHistogram,
            vec![prom::Metric::default()],
        ),
    ]);
    assert_eq!(
        names(&metrics),
        BTreeSet::from(["mystery".into(), "latency".into()])
    );
    assert!(matches!(
        &named(&metrics, "mystery").data,
        Some(Data::Gauge(g)) if g.data_points[0].value == double(0.25)
    ));
    let Some(Data::Summary(summary)) = &named(&metrics, "latency").data else {
        panic!("not a summary");
    };
    let point = &summary.data_points[0];
    assert_eq!((point.count, point.sum), (3, 1.5));
    assert_eq!(point.quantile_values[0].quantile, 0.5);
    assert_eq!(point.quantile_values[0].value, 0.4);
}

/// A series' own start and read times win over the exporter's.
#[test]
fn known_timestamps_win() {
    let counter = prom::Metric {
        counter: Some(prom::Counter {
            value: 9.0,
            exemplar: None,
            start_timestamp: Some(prost_types::Timestamp {
                seconds: 3,
                nanos: 5,
            }),
        }),
        timestamp_ms: 7_000,
        ..Default::default()
    };
    let metrics = convert_families(vec![family(
        "big_total",
        prom::MetricType::Counter,
        vec![counter],
    )]);
    let point = &sum_of(named(&metrics, "big_total")).data_points[0];
    assert_eq!(point.start_time_unix_nano, 3_000_000_005);
    assert_eq!(point.time_unix_nano, 7_000_000_000);
}

/// The resource and the scopes (with Sluice's version) are carried as given.
#[test]
fn carries_resource_and_scopes() {
    let resource = Resource {
        attributes: vec![string_attribute("service.name", "sluice")],
        ..Default::default()
    };
    let request = to_otlp(
        &resource,
        "https://opentelemetry.io/schemas/1.0.0",
        &[
            ("sluice.proxy", Vec::new()),
            ("sluice.control_plane", Vec::new()),
        ],
        TIMES,
    );
    let resource_metrics = &request.resource_metrics[0];
    assert_eq!(resource_metrics.resource.as_ref(), Some(&resource));
    assert_eq!(
        resource_metrics.schema_url,
        "https://opentelemetry.io/schemas/1.0.0"
    );
    let scopes: Vec<_> = resource_metrics
        .scope_metrics
        .iter()
        .filter_map(|s| s.scope.clone())
        .map(|s| (s.name, s.version))
        .collect();
    let version = env!("CARGO_PKG_VERSION").to_owned();
    assert_eq!(
        scopes,
        [
            ("sluice.proxy".to_owned(), version.clone()),
            ("sluice.control_plane".to_owned(), version)
        ]
    );
}

/// Client durations and stream token times go out under the GenAI semantic conventions' names,
/// in seconds; the rest keep their scrape names.
#[test]
fn genai_metrics_are_pushed_under_their_semconv_names() {
    let proxy = ProxyMetrics::new();
    let keys = sluice_data_plane::metrics::key_labels(["team-a"].into_iter());
    let pool = proxy.clients.pool("gpt-4o", keys);
    // A cell's series appear once it counts; the pool's stream histograms at once.
    let _ = pool.cell(0);
    let metrics = convert(proxy.registry());
    let names = names(&metrics);
    for (name, unit) in [
        ("gen_ai.server.time_to_first_token", "s"),
        ("gen_ai.server.time_per_output_token", "s"),
    ] {
        assert!(names.contains(name), "{names:?}");
        assert_eq!(named(&metrics, name).unit, unit);
    }
    assert!(!names.contains("sluice_time_to_first_token_seconds"));

    let mut registry = Registry::default();
    let durations = Histogram::new([0.1]);
    durations.observe(0.05);
    registry.register(
        "sluice_client_request_duration_seconds",
        "Client calls",
        durations,
    );
    let metrics = convert(&registry);
    assert_eq!(
        named(&metrics, "gen_ai.server.request.duration").unit,
        "s",
        "{:?}",
        names_of(&metrics)
    );
}

fn names_of(metrics: &[Metric]) -> Vec<&str> {
    metrics.iter().map(|m| m.name.as_str()).collect()
}

fn histogram_points(metric: &Metric) -> Vec<(Labels, u64, Option<f64>)> {
    let Some(Data::Histogram(histogram)) = &metric.data else {
        panic!("{} is not a histogram: {:?}", metric.name, metric.data);
    };
    let mut points: Vec<_> = histogram
        .data_points
        .iter()
        .map(|point| (string_attributes(&point.attributes), point.count, point.sum))
        .collect();
    points.sort_by(|a, b| a.0.cmp(&b.0));
    points
}

/// Tokens per call go out as `gen_ai.client.token.usage` in `{token}`, their `token_type` as
/// the `gen_ai.token.type` attribute; `pool` keeps its name.
#[test]
fn token_usage_is_pushed_with_the_semconv_attribute() {
    let proxy = ProxyMetrics::new();
    let tokens = proxy.backend("gpt-4o", "east").tokens.for_key(None);
    tokens.record(120, 30);
    tokens.record(80, 10);
    let metrics = convert(proxy.registry());
    assert!(!names(&metrics).contains("sluice_token_usage_tokens"));
    let usage = named(&metrics, "gen_ai.client.token.usage");
    assert_eq!(usage.unit, "{token}");
    assert_eq!(
        histogram_points(usage),
        [
            (
                labels(&[("pool", "gpt-4o"), ("gen_ai.token.type", "input")]),
                2,
                Some(200.0)
            ),
            (
                labels(&[("pool", "gpt-4o"), ("gen_ai.token.type", "output")]),
                2,
                Some(40.0)
            ),
        ]
    );
}

/// A rename belongs to its metric: the same label on another family keeps its name.
#[test]
fn attribute_renames_apply_to_their_metric_only() {
    let mut registry = Registry::default();
    let other = Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new([1.0]));
    other
        .get_or_create(&labels(&[("token_type", "input")]))
        .observe(0.5);
    registry.register("other_tokens", "Not a GenAI metric", other);
    let metrics = convert(&registry);
    assert_eq!(
        histogram_points(named(&metrics, "other_tokens")),
        [(labels(&[("token_type", "input")]), 1, Some(0.5))]
    );
}
