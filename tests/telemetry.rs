//! OpenTelemetry end to end: the real `sluice proxy` binary, configured only through the
//! standard `OTEL_*` variables, exporting to an in-process OTLP receiver over gRPC and over
//! HTTP (`http/protobuf`).

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_testkit::mock_upstream::{Fault, MockHandle};
use sluice_testkit::otlp::{
    HistogramValue, OtlpReceiver, ReceivedMetric, ReceivedSpan, SpanKind, Transport,
};
use support::proxy::{CLIENT_KEY, mock};

const WAIT: Duration = Duration::from_secs(15);
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
/// Sent with every export over HTTP, as a hosted backend's credentials would be.
const OTLP_TOKEN: &str = "otlp-e2e-token";

/// A `sluice proxy` process and the JSON log lines it wrote so far.
struct ProxyProcess {
    child: Child,
    addr: String,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    /// Starts the proxy on `a` (priority 0) and `b` (priority 1): a failure of `a` is retried
    /// on `b`, so every retried call has exactly two attempts, in a known order.
    fn start(dir: &std::path::Path, a: &MockHandle, b: &MockHandle, otel: &[(&str, &str)]) -> Self {
        for mock in [a, b] {
            std::fs::write(dir.join(mock.name()), format!("key-{}", mock.name())).unwrap();
        }
        std::fs::write(dir.join("client"), CLIENT_KEY).unwrap();
        let backend = |mock: &MockHandle, priority: u32| {
            format!(
                "{{ name: {name}, url: \"{url}\", kind: azure_openai, priority: {priority}, auth: {{ type: api_key, secret: \"file://{dir}/{name}\" }} }}",
                name = mock.name(),
                url = mock.url(),
                dir = dir.display(),
            )
        };
        let config = dir.join("sluice.yaml");
        std::fs::write(
            &config,
            format!(
                "pools:\n  - name: gpt-4o\n    backends: [{}, {}]\nclient_keys:\n  - {{ id: team-a, secret: \"file://{}/client\" }}\n",
                backend(a, 0),
                backend(b, 1),
                dir.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        for (key, _) in
            std::env::vars().filter(|(k, _)| k.starts_with("SLUICE_") || k.starts_with("OTEL_"))
        {
            command.env_remove(key);
        }
        let mut child = command
            .args([
                "--log-format",
                "json",
                "--log",
                "info,sluice_data_plane=debug",
            ])
            .args(["proxy", "--config", config.to_str().unwrap()])
            .args(["--addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0"])
            .envs(otel.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(addr) = event["proxy.addr"].as_str() {
                    let _ = addr_tx.send(addr.to_owned());
                }
                kept.lock().unwrap().push(event);
            }
        });
        let addr = addr_rx
            .recv_timeout(WAIT)
            .expect("the proxy logs its address");
        Self { child, addr, logs }
    }

    /// SIGTERM, as Kubernetes sends it; waits for a clean exit.
    async fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the proxy did not stop on SIGTERM");
    }

    /// A call that continues the client's sampled trace.
    fn call(&self, stream: bool) -> reqwest::RequestBuilder {
        let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
        self.call_in_trace(stream, Some(&traceparent))
    }

    /// A call that continues `traceparent`, or starts no trace of its own.
    fn call_in_trace(&self, stream: bool, traceparent: Option<&str>) -> reqwest::RequestBuilder {
        let call = reqwest::Client::new()
            .post(format!(
                "http://{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                self.addr
            ))
            .header("api-key", CLIENT_KEY);
        let call = match traceparent {
            Some(traceparent) => call.header("traceparent", traceparent),
            None => call,
        };
        call.json(&serde_json::json!({
            "messages": [{"role": "user", "content": "hello there"}],
            "stream": stream,
            "stream_options": {"include_usage": true},
        }))
    }
}

/// A receiver, two mocks and a proxy exporting to the receiver quickly.
struct Traced {
    receiver: OtlpReceiver,
    a: MockHandle,
    b: MockHandle,
    proxy: ProxyProcess,
    _dir: tempfile::TempDir,
}

/// How the proxy under test exports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Otlp {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Otlp {
    fn transport(self) -> Transport {
        match self {
            Self::Grpc => Transport::Grpc,
            Self::HttpProtobuf | Self::HttpJson => Transport::Http,
        }
    }
}

impl Traced {
    /// Exports quickly to the receiver over `transport` (batches every 100 ms, metrics every
    /// 200 ms); over HTTP with an `authorization` header.
    async fn start(otlp: Otlp) -> Self {
        let fast = [
            ("OTEL_SERVICE_NAME", "sluice-e2e"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ];
        match otlp {
            Otlp::Grpc => Self::start_with(&fast).await,
            Otlp::HttpProtobuf | Otlp::HttpJson => {
                let authorization = format!("authorization=Bearer%20{OTLP_TOKEN}");
                let protocol = if otlp == Otlp::HttpJson {
                    "http/json"
                } else {
                    "http/protobuf"
                };
                let mut otel = vec![
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                    ("OTEL_EXPORTER_OTLP_HEADERS", authorization.as_str()),
                ];
                otel.extend_from_slice(&fast);
                Self::start_over(Transport::Http, &otel).await
            }
        }
    }

    /// The receiver's gRPC endpoint plus `otel`.
    async fn start_with(otel: &[(&str, &str)]) -> Self {
        Self::start_over(Transport::Grpc, otel).await
    }

    /// The receiver's endpoint for `transport` plus `otel`.
    async fn start_over(transport: Transport, otel: &[(&str, &str)]) -> Self {
        let receiver = OtlpReceiver::start().await;
        let (a, b) = (mock("a").await, mock("b").await);
        let dir = tempfile::tempdir().unwrap();
        let endpoint = match transport {
            Transport::Grpc => receiver.endpoint(),
            Transport::Http => receiver.http_endpoint(),
        };
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        env.extend_from_slice(otel);
        let proxy = ProxyProcess::start(dir.path(), &a, &b, &env);
        Self {
            receiver,
            a,
            b,
            proxy,
            _dir: dir,
        }
    }
}

/// The usage the mock reported, from a JSON answer or the last usage chunk of a stream.
fn reported_usage(body: &str) -> (i64, i64) {
    let usage = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: ").or(Some(line)))
        .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        .filter_map(|value| value.get("usage").filter(|u| u.is_object()).cloned())
        .next_back()
        .expect("the mock reports usage");
    (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    )
}

/// Everything arrived over `transport`; over HTTP with the configured header, which the
/// proxy never logs.
fn assert_exported_over(receiver: &OtlpReceiver, proxy: &ProxyProcess, transport: Transport) {
    let other = match transport {
        Transport::Grpc => Transport::Http,
        Transport::Http => Transport::Grpc,
    };
    assert!(receiver.export_count_over(transport) > 0);
    assert_eq!(receiver.export_count_over(other), 0);
    if transport == Transport::Http {
        assert_eq!(
            receiver
                .last_headers()
                .get("authorization")
                .map(String::as_str),
            Some(format!("Bearer {OTLP_TOKEN}").as_str())
        );
        let logs = proxy.logs.lock().unwrap();
        assert!(
            logs.iter()
                .all(|event| !event.to_string().contains(OTLP_TOKEN)),
            "the OTLP header's value is logged"
        );
    }
}

/// One retried call: the server span continues the client's trace, has two attempt spans
/// with the GenAI and Sluice attributes and the token counts the backend reported.
async fn a_retried_call_is_traced(stream: bool, otlp: Otlp) {
    let transport = otlp.transport();
    let Traced {
        receiver,
        a,
        b,
        proxy,
        _dir,
    } = Traced::start(otlp).await;

    a.inject(Fault::status(500).once()).unwrap();
    let response = proxy.call(stream).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let (input, output) = reported_usage(&response.text().await.unwrap());

    let spans = receiver
        .wait_for_spans(
            |spans| spans.iter().filter(|s| s.name.starts_with("chat")).count() >= 3,
            WAIT,
        )
        .await;
    let server = one(&spans, |s| s.kind == SpanKind::Server);
    assert_eq!(
        server.trace_id, CLIENT_TRACE,
        "the client's trace continues"
    );
    assert_eq!(server.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(server.name, "chat gpt-4o");
    assert_eq!(server.resource["service.name"], "sluice-e2e");
    assert_eq!(server.resource["deployment.environment"], "test");
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "gpt-4o"),
        ("sluice.pool", "gpt-4o"),
        ("sluice.client_key", "team-a"),
        ("http.request.method", "POST"),
        ("http.route", "/openai/deployments/{deployment}/{operation}"),
    ] {
        assert_eq!(server.str_attr(key), Some(value), "{key} on {server}");
    }
    assert!(
        server.str_attr("gen_ai.response.model").is_some(),
        "{server}"
    );
    assert_eq!(server.int_attr("http.response.status_code"), Some(200));
    assert_eq!(server.int_attr("sluice.attempts"), Some(2));
    assert_eq!(server.int_attr("gen_ai.usage.input_tokens"), Some(input));
    assert_eq!(server.int_attr("gen_ai.usage.output_tokens"), Some(output));

    let attempt = |number| {
        one(&spans, |s| {
            s.kind == SpanKind::Client && s.int_attr("sluice.attempt") == Some(number)
        })
    };
    let (first, second) = (attempt(1), attempt(2));
    for span in [&first, &second] {
        assert!(span.is_child_of(&server), "{span} under {server}");
        assert_eq!(span.str_attr("server.address"), Some("127.0.0.1"));
        assert_eq!(span.str_attr("gen_ai.request.model"), Some("gpt-4o"));
        assert_eq!(span.str_attr("gen_ai.operation.name"), Some("chat"));
    }
    assert_eq!(first.str_attr("sluice.backend"), Some("a"));
    assert_eq!(first.int_attr("http.response.status_code"), Some(500));
    assert_eq!(first.str_attr("error.type"), Some("500"));
    assert_eq!(
        first.int_attr("server.port"),
        Some(i64::from(a.addr().port()))
    );
    assert_eq!(second.str_attr("sluice.backend"), Some("b"));
    assert_eq!(second.int_attr("http.response.status_code"), Some(200));
    assert_eq!(second.int_attr("gen_ai.usage.input_tokens"), Some(input));
    assert_eq!(second.int_attr("gen_ai.usage.output_tokens"), Some(output));
    assert_eq!(
        first.int_attr("gen_ai.usage.output_tokens"),
        None,
        "the failed attempt used nothing"
    );

    // The backend got the attempt's context, not the client's.
    let sent = b.last_request().unwrap();
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{CLIENT_TRACE}-{}-01", second.span_id).as_str())
    );

    // Log lines written inside the request carry its trace id.
    let logs = proxy.logs.lock().unwrap().clone();
    let retry_log = logs
        .iter()
        .find(|event| event["message"] == "retrying on another backend")
        .expect("the retry is logged at debug");
    assert_eq!(retry_log["span"]["trace_id"], CLIENT_TRACE, "{retry_log}");
    assert_exported_over(&receiver, &proxy, transport);
}

/// The sampler is applied before a request's spans are built, with the SDK's meaning: at
/// `parentbased_traceidratio` 0, a new trace and an unsampled parent leave no span (and the
/// backend gets the client's `traceparent` as it came), a sampled parent is followed, and
/// every call is served.
#[tokio::test]
async fn sampling_is_decided_before_any_span_is_built() {
    let Traced {
        receiver,
        a,
        b,
        proxy,
        _dir,
    } = Traced::start_with(&[
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ])
    .await;
    let unsampled = format!("00-{UNSAMPLED_TRACE}-{CLIENT_SPAN}-00");
    // What the backend that took the latest call was sent as `traceparent`.
    let latest_traceparent = || {
        [a.last_request(), b.last_request()]
            .into_iter()
            .flatten()
            .max_by_key(|sent| sent.received_at)
            .and_then(|sent| sent.header("traceparent").map(str::to_owned))
    };
    for traceparent in [None, Some(unsampled.as_str())] {
        for stream in [false, true] {
            let response = proxy
                .call_in_trace(stream, traceparent)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap();
        }
        let passed_on = latest_traceparent().expect("a traceparent reaches the backend");
        match traceparent {
            // The last call continued the unsampled trace: the backend got it as sent.
            Some(sent) => assert_eq!(passed_on, sent, "untouched"),
            // A new trace, left out: the backend is told so (flags 00).
            None => {
                let fields: Vec<_> = passed_on.split('-').collect();
                assert_eq!(fields.len(), 4, "{passed_on}");
                assert_eq!((fields[0], fields[3]), ("00", "00"), "{passed_on}");
                assert_eq!((fields[1].len(), fields[2].len()), (32, 16), "{passed_on}");
                assert_ne!(fields[1], "0".repeat(32));
            }
        }
    }

    assert_eq!(proxy.call(false).send().await.unwrap().status(), 200);
    receiver
        .wait_for_spans(
            |spans| spans.iter().any(|s| s.kind == SpanKind::Server),
            WAIT,
        )
        .await;
    // Anything else would have been in the same batch or the one after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.spans();
    assert!(
        spans.iter().all(|span| span.trace_id == CLIENT_TRACE),
        "{spans:#?}"
    );
    assert_eq!(
        spans.iter().filter(|s| s.kind == SpanKind::Server).count(),
        1
    );
}

fn one(spans: &[ReceivedSpan], matches: impl Fn(&ReceivedSpan) -> bool) -> ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(found.len(), 1, "expected one matching span in {spans:#?}");
    found[0].clone()
}

#[tokio::test]
async fn a_retried_call_yields_a_server_span_with_two_attempt_spans() {
    a_retried_call_is_traced(false, Otlp::Grpc).await;
}

#[tokio::test]
async fn a_retried_stream_yields_a_server_span_with_two_attempt_spans() {
    a_retried_call_is_traced(true, Otlp::Grpc).await;
}

/// A line logged inside an attempt (here the backend's cooldown after a 429) carries the
/// request's trace id, as lines logged in the request itself do; the attempt's span carries
/// the cooldown.
#[tokio::test]
async fn a_line_logged_inside_an_attempt_carries_the_requests_trace_id() {
    let traced = Traced::start(Otlp::Grpc).await;
    traced
        .a
        .inject(Fault::rate_limited(Duration::from_secs(30)).once())
        .unwrap();
    let response = traced.proxy.call(false).send().await.unwrap();
    assert_eq!(response.status(), 200, "retried on b");

    let spans = traced
        .receiver
        .wait_for_spans(
            |spans| spans.iter().filter(|s| s.kind == SpanKind::Client).count() >= 2,
            WAIT,
        )
        .await;
    let throttled = one(&spans, |s| {
        s.kind == SpanKind::Client && s.int_attr("sluice.attempt") == Some(1)
    });
    assert_eq!(throttled.int_attr("http.response.status_code"), Some(429));
    assert_eq!(throttled.int_attr("sluice.cooldown_ms"), Some(30_000));

    let logs = traced.proxy.logs.lock().unwrap().clone();
    let cooling = logs
        .iter()
        .find(|event| event["message"] == "backend cooling down")
        .expect("the cooldown is logged at debug");
    assert_eq!(cooling["span"]["trace_id"], CLIENT_TRACE, "{cooling}");
}

/// The same spans over OTLP/HTTP (`http/protobuf`), from the SDK's batch thread through the
/// exporter's blocking client.
#[tokio::test]
async fn a_retried_stream_is_traced_over_http_protobuf() {
    a_retried_call_is_traced(true, Otlp::HttpProtobuf).await;
}

/// The same over `http/json`: OTLP's JSON mapping (hex ids, camelCase), for traces from the
/// SDK's exporter and metrics from ours.
#[tokio::test]
async fn traces_and_metrics_arrive_over_http_json() {
    a_retried_call_is_traced(true, Otlp::HttpJson).await;
    metrics_arrive(Otlp::HttpJson).await;
}

#[tokio::test]
async fn metrics_arrive_with_the_prometheus_names() {
    metrics_arrive(Otlp::Grpc).await;
}

#[tokio::test]
async fn metrics_arrive_over_http_protobuf() {
    metrics_arrive(Otlp::HttpProtobuf).await;
}

/// Metrics reach the receiver with the names `/metrics` shows and the values of the traffic.
async fn metrics_arrive(otlp: Otlp) {
    let transport = otlp.transport();
    let Traced {
        receiver,
        a,
        proxy,
        // Held, not used: dropping them would stop the backend and remove the config.
        b: _b,
        _dir,
    } = Traced::start(otlp).await;

    a.inject(Fault::status(500).once()).unwrap();
    let mut output_tokens = 0;
    for stream in [false, true] {
        let response = proxy.call(stream).send().await.unwrap();
        assert_eq!(response.status(), 200);
        output_tokens += reported_usage(&response.text().await.unwrap()).1;
    }

    let retries = receiver
        .wait_for_metric("sluice_retries_total", |m| m.total() >= 1.0, WAIT)
        .await;
    let point = retries
        .point(&[("pool", "gpt-4o"), ("reason", "status_5xx")])
        .unwrap();
    assert_eq!(point.number(), Some(1.0));
    let tokens = receiver
        .wait_for_metric(
            "sluice_tokens_total",
            |m| {
                m.point(&[("client_key", "team-a"), ("direction", "output")])
                    .and_then(|p| p.number())
                    .is_some_and(|n| n >= output_tokens as f64)
            },
            WAIT,
        )
        .await;
    let output: f64 = tokens
        .points
        .iter()
        .filter(|p| p.str_attr("direction") == Some("output"))
        .filter_map(|p| p.number())
        .sum();
    assert_eq!(
        output, output_tokens as f64,
        "all output tokens, streamed ones included"
    );
    let durations = receiver
        .wait_for_metric("sluice_upstream_duration_seconds", |_| true, WAIT)
        .await;
    let failed = durations
        .point(&[("backend", "a"), ("class", "5xx")])
        .and_then(|p| p.histogram())
        .expect("a's 500 is in its own status class");
    assert_eq!(failed.count, 1);
    for name in [
        "sluice_config_revision",
        "sluice_backend_state",
        "sluice_time_to_first_byte_seconds",
        "sluice_upstream_responses_total",
    ] {
        receiver.wait_for_metric(name, |_| true, WAIT).await;
    }
    assert_exported_over(&receiver, &proxy, transport);
}

/// The histogram point of `metric` whose attributes include `attributes`.
fn histogram_at<'m>(metric: &'m ReceivedMetric, attributes: &[(&str, &str)]) -> &'m HistogramValue {
    metric
        .point(attributes)
        .and_then(|point| point.histogram())
        .unwrap_or_else(|| panic!("no histogram point {attributes:?} in {metric}"))
}

/// What the OpenTelemetry GenAI semantic conventions define goes out under their names, units
/// and attribute names: tokens per call by `gen_ai.token.type`, summing to what the backend
/// reported (the stream's included), and the server's durations in seconds.
#[tokio::test]
async fn genai_metrics_arrive_under_their_semconv_names() {
    let Traced {
        receiver,
        proxy,
        // Held, not used: dropping them would stop the backends and remove the config.
        a: _a,
        b: _b,
        _dir,
    } = Traced::start(Otlp::Grpc).await;
    let (mut input, mut output) = (0, 0);
    for stream in [false, true] {
        let response = proxy.call(stream).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let (call_input, call_output) = reported_usage(&response.text().await.unwrap());
        input += call_input;
        output += call_output;
    }

    let both_calls = |metric: &ReceivedMetric| metric.total() >= 4.0;
    let usage = receiver
        .wait_for_metric("gen_ai.client.token.usage", both_calls, WAIT)
        .await;
    assert_eq!(usage.unit, "{token}");
    for (token_type, tokens) in [("input", input), ("output", output)] {
        let per_call = histogram_at(
            &usage,
            &[("pool", "gpt-4o"), ("gen_ai.token.type", token_type)],
        );
        assert_eq!(per_call.count, 2, "{token_type}");
        assert_eq!(per_call.sum, Some(tokens as f64), "{token_type}");
    }
    assert!(
        usage
            .points
            .iter()
            .all(|p| p.str_attr("token_type").is_none()),
        "{usage}"
    );

    let duration = receiver
        .wait_for_metric("gen_ai.server.request.duration", |m| m.total() >= 2.0, WAIT)
        .await;
    assert_eq!(duration.unit, "s");
    let calls = histogram_at(
        &duration,
        &[
            ("pool", "gpt-4o"),
            ("client_key", "team-a"),
            ("class", "2xx"),
        ],
    );
    assert_eq!(calls.count, 2);
    // One stream: its first token, and the time per token after it.
    for name in [
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    ] {
        let stream = receiver
            .wait_for_metric(name, |m| m.total() >= 1.0, WAIT)
            .await;
        assert_eq!(stream.unit, "s", "{name}");
        assert_eq!(
            histogram_at(&stream, &[("pool", "gpt-4o")]).count,
            1,
            "{name}"
        );
    }
    for prometheus_name in [
        "sluice_token_usage_tokens",
        "sluice_client_request_duration_seconds",
        "sluice_time_to_first_token_seconds",
        "sluice_time_per_output_token_seconds",
    ] {
        assert!(
            receiver.metric(prometheus_name).is_none(),
            "{prometheus_name} is pushed under its semconv name only"
        );
    }
}

/// Over HTTP too, what is still buffered at SIGTERM goes out before the process exits: the
/// batch thread's last export and the metrics' final push.
#[tokio::test]
async fn shutdown_flushes_spans_and_metrics_over_http_protobuf() {
    let authorization = format!("authorization=Bearer%20{OTLP_TOKEN}");
    let Traced {
        receiver,
        mut proxy,
        // Held, not used: dropping them would stop the backends and remove the config.
        a: _a,
        b: _b,
        _dir,
    } = Traced::start_over(
        Transport::Http,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", authorization.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ],
    )
    .await;
    assert_eq!(proxy.call(false).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.export_count(), 0, "nothing is due before a minute");

    proxy.terminate().await;
    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| s.kind == SpanKind::Server),
        "{spans:#?}"
    );
    assert!(receiver.metric("sluice_upstream_responses_total").is_some());
    assert_exported_over(&receiver, &proxy, Transport::Http);
}

/// With the exporters switched off nothing is sent, even with an endpoint configured.
#[tokio::test]
async fn nothing_is_exported_when_the_exporters_are_off() {
    let Traced {
        receiver,
        proxy,
        // Held, not used: dropping them would stop the backends and remove the config.
        a: _a,
        b: _b,
        _dir,
    } = Traced::start_with(&[
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ])
    .await;
    for stream in [false, true] {
        assert_eq!(proxy.call(stream).send().await.unwrap().status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.export_count(), 0);
    // And the logs carry no span data when no trace is exported.
    let logs = proxy.logs.lock().unwrap().clone();
    assert!(
        logs.iter().all(|event| event.get("span").is_none()),
        "{logs:#?}"
    );
}
