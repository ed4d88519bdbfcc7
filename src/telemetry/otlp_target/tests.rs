use super::*;

fn target(signal: &Signal, vars: &[(&str, &str)]) -> Result<OtlpTarget, TargetError> {
    OtlpTarget::from_env(&OtelEnv::from_vars(vars.iter().copied()), signal)
}

fn resolved(signal: &Signal, vars: &[(&str, &str)]) -> (Protocol, String) {
    let target = target(signal, vars).expect("valid variables");
    (target.protocol, target.endpoint)
}

fn http(url: &str) -> (Protocol, String) {
    (Protocol::HttpProtobuf, url.to_owned())
}

#[test]
fn grpc_is_the_default_and_uses_the_endpoint_as_it_is() {
    assert_eq!(
        resolved(&TRACES, &[]),
        (Protocol::Grpc, "http://localhost:4317".to_owned())
    );
    assert_eq!(
        resolved(&METRICS, &[(ENDPOINT, "https://collector:4317/")]),
        (Protocol::Grpc, "https://collector:4317/".to_owned())
    );
    assert_eq!(resolved(&METRICS, &[(PROTOCOL, "grpc")]).0, Protocol::Grpc);
}

#[test]
fn http_appends_the_signal_path_to_the_general_endpoint() {
    let http_env = |endpoint| [(PROTOCOL, "http/protobuf"), (ENDPOINT, endpoint)];
    assert_eq!(
        resolved(&TRACES, &[(PROTOCOL, "http/protobuf")]),
        http("http://localhost:4318/v1/traces")
    );
    assert_eq!(
        resolved(&METRICS, &[(PROTOCOL, "http/protobuf")]),
        http("http://localhost:4318/v1/metrics")
    );
    assert_eq!(
        resolved(&TRACES, &http_env("https://otlp.example.com")),
        http("https://otlp.example.com/v1/traces")
    );
    for with_prefix in [
        "https://otlp.example.com/otlp",
        "https://otlp.example.com/otlp/",
    ] {
        assert_eq!(
            resolved(&METRICS, &http_env(with_prefix)),
            http("https://otlp.example.com/otlp/v1/metrics"),
            "{with_prefix}"
        );
    }
    assert_eq!(
        resolved(&METRICS, &http_env("http://collector:4318/")),
        http("http://collector:4318/v1/metrics")
    );
}

#[test]
fn the_signal_endpoint_wins_and_is_used_as_it_is() {
    let vars = [
        (PROTOCOL, "http/protobuf"),
        (ENDPOINT, "http://general:4318"),
        (TRACES.endpoint, "https://traces.example.com/ingest/"),
    ];
    assert_eq!(
        resolved(&TRACES, &vars),
        http("https://traces.example.com/ingest/")
    );
    // The other signal still derives its URL from the general endpoint.
    assert_eq!(
        resolved(&METRICS, &vars),
        http("http://general:4318/v1/metrics")
    );
}

#[test]
fn the_signal_protocol_wins() {
    let vars = [
        (ENDPOINT, "http://collector:4318"),
        (PROTOCOL, "http/protobuf"),
        (METRICS.protocol, "grpc"),
    ];
    assert_eq!(
        resolved(&METRICS, &vars),
        (Protocol::Grpc, "http://collector:4318".to_owned())
    );
    assert_eq!(
        resolved(&TRACES, &vars),
        http("http://collector:4318/v1/traces")
    );

    let vars = [(PROTOCOL, "http/xml"), (TRACES.protocol, "http/protobuf")];
    assert_eq!(resolved(&TRACES, &vars).0, Protocol::HttpProtobuf);
}

#[test]
fn unsupported_protocols_are_refused_with_the_variable_named() {
    let error = |signal, vars: &[(&str, &str)]| target(signal, vars).unwrap_err().to_string();
    assert_eq!(
        error(&TRACES, &[(PROTOCOL, "http/xml")]),
        "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/xml\": the supported protocols are \"grpc\", \"http/protobuf\" and \"http/json\""
    );
    assert_eq!(
        error(
            &METRICS,
            &[(PROTOCOL, "grpc"), (METRICS.protocol, "http/xml")]
        ),
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=\"http/xml\": the supported protocols are \"grpc\", \"http/protobuf\" and \"http/json\""
    );
    assert!(
        error(&TRACES, &[(TRACES.protocol, "HTTP")])
            .starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=")
    );
}

#[test]
fn headers_and_timeout_follow_the_signal_then_the_general_variable() {
    let metrics = target(
        &METRICS,
        &[
            (PROTOCOL, "http/protobuf"),
            (HEADERS, "x-general=1"),
            (METRICS.headers, "Api-Key=s3cr%3Dt,x-tenant=gw"),
            (TIMEOUT, "5000"),
            (METRICS.timeout, "2500"),
        ],
    )
    .unwrap();
    assert_eq!(metrics.headers["api-key"], "s3cr=t");
    assert_eq!(metrics.headers["x-tenant"], "gw");
    assert!(!metrics.headers.contains_key("x-general"));
    assert_eq!(metrics.timeout, Duration::from_millis(2500));

    let traces = target(&TRACES, &[(HEADERS, "x-general=1")]).unwrap();
    assert_eq!(traces.headers["x-general"], "1");
    assert_eq!(traces.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn binary_grpc_metadata_keys_are_refused_but_not_over_http() {
    let vars = |protocol| [(PROTOCOL, protocol), (HEADERS, "trace-bin=abc")];
    assert_eq!(
        target(&TRACES, &vars("grpc")).unwrap_err().to_string(),
        "OTEL_EXPORTER_OTLP_HEADERS: \"trace-bin\" cannot be sent as a header"
    );
    assert!(target(&TRACES, &vars("http/protobuf")).is_ok());
}

#[test]
fn debug_names_headers_but_hides_their_values() {
    let traces = target(&TRACES, &[(HEADERS, "authorization=Bearer%20s3cret")]).unwrap();
    let shown = format!("{traces:?}");
    assert!(shown.contains("authorization"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}
