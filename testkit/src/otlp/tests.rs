use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use prost::Message as _;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![string("service.name", "test-service")],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        ..Default::default()
    })
}

fn spans_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope("tracer"),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics_request(scope_name: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(scope_name),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn counter(name: &str, value: i64) -> Metric {
    Metric {
        name: name.into(),
        description: "a counter".into(),
        unit: "1".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![string("pool", "gpt-4o")],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                value: Some(number_data_point::Value::AsInt(value)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn server_span() -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x01; 8],
        name: "POST /chat/completions".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 10,
        end_time_unix_nano: 20,
        attributes: vec![string("gen_ai.request.model", "gpt-4o")],
        ..Default::default()
    }
}

fn client_span() -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0x02; 8],
        parent_span_id: vec![0x01; 8],
        name: "upstream attempt".into(),
        kind: SpanKind::Client as i32,
        status: Some(Status {
            message: "429".into(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

/// Spans pushed by a plain OTLP client come back with hex ids, enums and flat attributes.
#[tokio::test]
async fn receives_spans_from_an_otlp_client() {
    let receiver = OtlpReceiver::start().await;
    let mut client = TraceServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    client
        .export(spans_request(vec![server_span(), client_span()]))
        .await
        .unwrap();

    let spans = receiver
        .wait_for_spans(|spans| spans.len() == 2, WAIT)
        .await;
    let (server, client) = (&spans[0], &spans[1]);
    assert_eq!(server.name, "POST /chat/completions");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.trace_id, "ab".repeat(16));
    assert_eq!(server.span_id, "0101010101010101");
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.status.code, StatusCode::Unset);
    assert_eq!(server.str_attr("gen_ai.request.model"), Some("gpt-4o"));
    assert_eq!(server.resource["service.name"], "test-service");
    assert_eq!(server.scope, "tracer");
    assert_eq!(
        (server.start_time_unix_nano, server.end_time_unix_nano),
        (10, 20)
    );
    assert_eq!(client.kind, SpanKind::Client);
    assert!(client.is_child_of(server));
    assert_eq!(
        client.status,
        SpanStatus {
            code: StatusCode::Error,
            message: "429".into()
        }
    );
    assert_eq!(receiver.trace_export_count(), 1);
    assert_eq!(receiver.export_count(), 1);
}

/// Sums, gauges and histograms come back with their kind, attributes and values; a later
/// export of the same metric replaces the earlier one.
#[tokio::test]
async fn keeps_the_latest_export_of_each_metric() {
    let receiver = OtlpReceiver::start().await;
    let mut client = MetricsServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    let gauge = Metric {
        name: "queue_depth".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                value: Some(number_data_point::Value::AsDouble(2.5)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "latency_seconds".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![string("backend", "east")],
                count: 3,
                sum: Some(0.6),
                bucket_counts: vec![1, 2, 0],
                explicit_bounds: vec![0.1, 0.5],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    client
        .export(metrics_request(
            "meter",
            vec![counter("requests_total", 1), gauge, histogram],
        ))
        .await
        .unwrap();
    client
        .export(metrics_request("meter", vec![counter("requests_total", 5)]))
        .await
        .unwrap();

    let requests = receiver
        .wait_for_metric("requests_total", |m| m.total() == 5.0, WAIT)
        .await;
    assert_eq!(
        requests.kind,
        MetricKind::Sum {
            monotonic: true,
            temporality: AggregationTemporality::Cumulative
        }
    );
    assert_eq!(requests.description, "a counter");
    assert_eq!(
        requests.point(&[("pool", "gpt-4o")]).unwrap().value,
        PointValue::Int(5)
    );
    assert_eq!(requests.resource["service.name"], "test-service");
    assert_eq!(requests.scope, "meter");

    let depth = receiver.metric("queue_depth").unwrap();
    assert_eq!(depth.kind, MetricKind::Gauge);
    assert_eq!(depth.points[0].value, PointValue::Double(2.5));

    let latency = receiver.metric("latency_seconds").unwrap();
    assert_eq!(latency.unit, "s");
    let point = latency.point(&[("backend", "east")]).unwrap();
    assert_eq!(
        point.histogram(),
        Some(&HistogramValue {
            count: 3,
            sum: Some(0.6),
            bucket_counts: vec![1, 2, 0],
            explicit_bounds: vec![0.1, 0.5],
        })
    );
    let names: Vec<_> = receiver.metrics().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["latency_seconds", "queue_depth", "requests_total"]);
    assert_eq!(receiver.metric_export_count(), 2);
}

/// The same name under two scopes (the proxy's and the control plane's) is kept twice.
#[tokio::test]
async fn keeps_one_metric_per_scope() {
    let receiver = OtlpReceiver::start().await;
    let mut client = MetricsServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    for (scope, value) in [("proxy", 1), ("control_plane", 2)] {
        client
            .export(metrics_request(scope, vec![counter("revision", value)]))
            .await
            .unwrap();
    }
    let scopes: Vec<_> = receiver
        .metrics()
        .into_iter()
        .map(|m| (m.total(), m.scope))
        .collect();
    assert_eq!(
        scopes,
        [(2.0, "control_plane".to_owned()), (1.0, "proxy".to_owned())]
    );
    receiver
        .wait_for_metric("revision", |m| m.scope == "proxy", WAIT)
        .await;
}

/// A receiver told to reject answers UNAVAILABLE and keeps nothing until told otherwise.
#[tokio::test]
async fn rejects_exports_on_request() {
    let receiver = OtlpReceiver::start().await;
    let mut client = MetricsServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    receiver.reject_exports(true);
    let status = client
        .export(metrics_request("meter", vec![counter("requests_total", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(receiver.metrics().is_empty());
    assert_eq!(receiver.export_count(), 0);

    receiver.reject_exports(false);
    client
        .export(metrics_request("meter", vec![counter("requests_total", 1)]))
        .await
        .unwrap();
    assert_eq!(receiver.export_count(), 1);
}

/// Posts `body` to the receiver's HTTP side as an OTLP/HTTP exporter would.
async fn post(receiver: &OtlpReceiver, path: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", receiver.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .header("api-key", "s3cret")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn rpc_status(response: reqwest::Response) -> tonic_types::Status {
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    tonic_types::Status::decode(response.bytes().await.unwrap()).unwrap()
}

/// The HTTP side keeps what the gRPC side keeps, with the headers it came with.
#[tokio::test]
async fn receives_protobuf_over_http() {
    let receiver = OtlpReceiver::start().await;
    let response = post(
        &receiver,
        "/v1/traces",
        spans_request(vec![server_span()]).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None);
    let response = post(
        &receiver,
        "/v1/metrics",
        metrics_request("meter", vec![counter("requests_total", 3)]).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);

    assert_eq!(receiver.spans()[0].name, "POST /chat/completions");
    assert_eq!(receiver.metric("requests_total").unwrap().total(), 3.0);
    assert_eq!(receiver.export_count_over(Transport::Http), 2);
    assert_eq!(receiver.export_count_over(Transport::Grpc), 0);
    assert_eq!(receiver.last_headers()["api-key"], "s3cret");
}

/// Refusals follow the OTLP/HTTP rules: a status code and a `google.rpc.Status` body.
#[tokio::test]
async fn http_refusals_carry_an_rpc_status() {
    let receiver = OtlpReceiver::start().await;
    let request = || metrics_request("meter", vec![counter("requests_total", 1)]).encode_to_vec();

    receiver.reject_exports(true);
    let response = post(&receiver, "/v1/metrics", request()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        rpc_status(response).await.code,
        tonic::Code::Unavailable as i32
    );

    receiver.reply_with(Reply::Unauthenticated("bad api-key".into()));
    let response = post(&receiver, "/v1/metrics", request()).await;
    assert_eq!(response.status(), 401);
    assert_eq!(rpc_status(response).await.message, "bad api-key");
    assert_eq!(receiver.export_count(), 0);

    receiver.reply_with(Reply::PartialSuccess {
        rejected: 2,
        message: "too old".into(),
    });
    let response = post(&receiver, "/v1/metrics", request()).await;
    assert_eq!(response.status(), 200);
    let answer = ExportMetricsServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(
        (partial.rejected_data_points, partial.error_message.as_str()),
        (2, "too old")
    );
    assert_eq!(
        receiver.export_count(),
        1,
        "a partial success keeps the rest"
    );

    let response = post(&receiver, "/v1/metrics", b"not protobuf".to_vec()).await;
    assert_eq!(response.status(), 400);
    let send = |content_type: &'static str, body: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/v1/traces", receiver.http_endpoint()))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(send("text/plain", "{}").await.unwrap().status(), 415);
    let bad_json = send("application/json", "{not json").await.unwrap();
    assert_eq!(bad_json.status(), 400);
    assert_eq!(bad_json.headers()["content-type"], "application/json");
    let status: serde_json::Value = bad_json.json().await.unwrap();
    assert_eq!(status["code"], tonic::Code::InvalidArgument as i32);
    let empty_json = send("application/json", "{}").await.unwrap();
    assert_eq!(empty_json.status(), 200, "an empty export is an export");
    assert_eq!(empty_json.headers()["content-type"], "application/json");
}

/// A wait that times out says what did arrive.
#[tokio::test]
#[should_panic(expected = "span(s) did:\n  - \"POST /chat/completions\" Server")]
async fn a_failed_wait_lists_what_arrived() {
    let receiver = OtlpReceiver::start().await;
    let mut client = TraceServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    client
        .export(spans_request(vec![server_span()]))
        .await
        .unwrap();
    receiver
        .wait_for_spans(
            |spans| spans.iter().any(|s| s.kind == SpanKind::Client),
            Duration::from_millis(200),
        )
        .await;
}

/// A metric wait that times out lists the metrics and the points of the one waited for.
#[tokio::test]
#[should_panic(expected = "requests_total [Sum")]
async fn a_failed_metric_wait_lists_what_arrived() {
    let receiver = OtlpReceiver::start().await;
    let mut client = MetricsServiceClient::connect(receiver.endpoint())
        .await
        .unwrap();
    client
        .export(metrics_request("meter", vec![counter("requests_total", 1)]))
        .await
        .unwrap();
    receiver
        .wait_for_metric(
            "requests_total",
            |m| m.total() >= 2.0,
            Duration::from_millis(200),
        )
        .await;
}
