//! Only canonical request paths cross the proxy: every spelling of a parent segment or a
//! separator that some hop could read as another deployment (or the resource's files) is
//! refused with a 400 before authentication and before any upstream call. What the proxy
//! sends upstream asks for an uncompressed body and carries no cookies or forwarding headers.
//!
//! HTTP clients normalise dot-segments and re-encode paths, so hostile paths are written
//! byte for byte over a plain TCP connection: the proxy receives exactly the table's bytes.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_testkit::mock_upstream::{MockConfig, MockHandle};
use support::proxy::{TestProxy, mock_with, pool_yaml};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The key of `team-b`, which may use `gpt-4o` only (not `other`).
const GPT_4O_ONLY_KEY: &str = "sk-team-b";

/// Why a path is refused: each class names the words of the proxy's message for it, so a row
/// proves it was refused for the reason it was written to test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    EncodedSlash,
    Backslash,
    PathParameter,
    DoubleEncoding,
    MalformedEscape,
    EncodedDelimiter,
    ForbiddenByte,
}

impl Why {
    fn in_message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "does not start with '/'",
            Self::EmptySegment => "empty segment",
            Self::DotSegment => "'.' or '..' segment",
            Self::EncodedSlash => "encoded slash",
            Self::Backslash => "backslash",
            Self::PathParameter => "';'",
            Self::DoubleEncoding => "encoded '%'",
            Self::MalformedEscape => "'%' not followed by two hex digits",
            Self::EncodedDelimiter => "encoded '?' or '#'",
            Self::ForbiddenByte => "a space, a control character or a byte outside ASCII",
        }
    }
}

/// Hostile request targets, as sent on the wire (Rust's `\\` is one raw backslash), over the
/// three URL styles. Most aim at the `other` deployment, or at the resource's files, from a
/// path that starts in `gpt-4o`.
const HOSTILE: &[(&str, Why)] = &[
    // Raw dot-segments: `..`, `.`, and `...` (`..` to servers that trim trailing dots).
    (
        "/openai/deployments/gpt-4o/../../../openai/deployments/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/../other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/./chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/chat/completions/..",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/.../other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/../deployments/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/v1/../openai/deployments/other/chat/completions",
        Why::DotSegment,
    ),
    ("/v1/./chat/completions", Why::DotSegment),
    (
        "/openai/v1/../../openai/deployments/other/chat/completions",
        Why::DotSegment,
    ),
    // Percent-encoded dot-segments, in either case and mixed with raw dots.
    (
        "/openai/deployments/gpt-4o/%2e%2e/%2e%2e/%2e%2e/openai/deployments/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/%2E%2E/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/%2E%2e/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/.%2e/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/%2e./other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/%2e%2e%2e/other/chat/completions",
        Why::DotSegment,
    ),
    (
        "/openai/deployments/gpt-4o/%2e/chat/completions",
        Why::DotSegment,
    ),
    ("/openai/v1/%2e%2e/files", Why::DotSegment),
    (
        "/v1/%2e%2e/openai/deployments/other/chat/completions",
        Why::DotSegment,
    ),
    // Encoded slashes: one segment to the proxy, two to a hop that decodes.
    (
        "/openai/deployments/gpt-4o/chat%2fcompletions",
        Why::EncodedSlash,
    ),
    (
        "/openai/deployments/gpt-4o/..%2f..%2fother%2fchat%2fcompletions",
        Why::EncodedSlash,
    ),
    (
        "/openai/deployments/gpt-4o%2F..%2Fother/chat/completions",
        Why::EncodedSlash,
    ),
    (
        "/v1/..%2Fopenai%2Fdeployments%2Fother%2Fchat%2Fcompletions",
        Why::EncodedSlash,
    ),
    // Backslashes, raw and encoded: a separator to some servers.
    ("/openai/deployments/gpt-4o/..\\files", Why::Backslash),
    ("/openai/deployments/gpt-4o/..\\..\\files", Why::Backslash),
    ("/openai/deployments/gpt-4o/..%5c..%5cfiles", Why::Backslash),
    (
        "/openai/deployments/gpt-4o/..%5C..%5Cother%5Cchat%5Ccompletions",
        Why::Backslash,
    ),
    (
        "/v1/..\\openai\\deployments\\other\\chat\\completions",
        Why::Backslash,
    ),
    ("/openai/v1/chat\\completions", Why::Backslash),
    // Path parameters: `..;/` is `../` to Tomcat and its kin.
    (
        "/openai/deployments/gpt-4o/..;/other/chat/completions",
        Why::PathParameter,
    ),
    (
        "/openai/deployments/gpt-4o/..;/..;/files",
        Why::PathParameter,
    ),
    (
        "/openai/deployments/gpt-4o/%2e%2e%3b/other/chat/completions",
        Why::PathParameter,
    ),
    ("/v1/chat/completions;jsessionid=x", Why::PathParameter),
    ("/openai/v1/..%3B/files", Why::PathParameter),
    // Double (and triple) encoding: dots and slashes to a hop that decodes twice.
    (
        "/openai/deployments/gpt-4o/%252e%252e/other/chat/completions",
        Why::DoubleEncoding,
    ),
    (
        "/openai/deployments/gpt-4o/..%252f..%252fother",
        Why::DoubleEncoding,
    ),
    ("/v1/%252E%252E/files", Why::DoubleEncoding),
    ("/openai/v1/chat%25252fcompletions", Why::DoubleEncoding),
    // Malformed escapes, which decoders repair in different ways.
    (
        "/openai/deployments/gpt-4o/%zz/chat/completions",
        Why::MalformedEscape,
    ),
    (
        "/openai/deployments/gpt-4o/%2g/chat/completions",
        Why::MalformedEscape,
    ),
    (
        "/openai/deployments/gpt-4o/chat/completions%2",
        Why::MalformedEscape,
    ),
    ("/v1/chat/completions%", Why::MalformedEscape),
    ("/v1/%u002e%u002e/files", Why::MalformedEscape),
    ("/openai/v1/%%32%65%%32%65/files", Why::MalformedEscape),
    // Encoded `?` and `#`: a hop that decodes once cuts the path there.
    (
        "/openai/deployments/gpt-4o/chat/completions%3fapi-version=x",
        Why::EncodedDelimiter,
    ),
    (
        "/openai/deployments/other%23/../gpt-4o/chat/completions",
        Why::EncodedDelimiter,
    ),
    ("/v1/files%3Fpurpose=batch", Why::EncodedDelimiter),
    ("/openai/v1/chat/completions%23", Why::EncodedDelimiter),
    // Encoded NUL, control characters, space; overlong UTF-8 and Unicode dots, encoded or raw.
    (
        "/openai/deployments/gpt-4o/chat/completions%00",
        Why::ForbiddenByte,
    ),
    (
        "/openai/deployments/gpt-4o/..%00/other/chat/completions",
        Why::ForbiddenByte,
    ),
    (
        "/v1/chat/completions%0d%0aX-Injected:%20yes",
        Why::ForbiddenByte,
    ),
    (
        "/openai/deployments/gpt-4o/%0a/chat/completions",
        Why::ForbiddenByte,
    ),
    (
        "/openai/deployments/gpt-4o/%09/chat/completions",
        Why::ForbiddenByte,
    ),
    (
        "/openai/deployments/gpt-4o/%7f/chat/completions",
        Why::ForbiddenByte,
    ),
    (
        "/openai/deployments/gpt-4o/..%20/other/chat/completions",
        Why::ForbiddenByte,
    ),
    (
        "/openai/deployments/gpt-4o/%c0%ae%c0%ae/other/chat/completions",
        Why::ForbiddenByte,
    ),
    ("/openai/v1/%e0%80%ae%e0%80%ae/files", Why::ForbiddenByte),
    (
        "/openai/deployments/gpt-4o/%ef%bc%8e%ef%bc%8e/other/chat/completions",
        Why::ForbiddenByte,
    ),
    // U+2025 (two dot leader) and U+FF0E (fullwidth full stop), raw UTF-8: `..` after NFKC.
    (
        "/openai/deployments/gpt-4o/\u{2025}/other/chat/completions",
        Why::ForbiddenByte,
    ),
    ("/v1/\u{ff0e}\u{ff0e}/files", Why::ForbiddenByte),
    // Empty segments: `//` and a trailing `/`.
    (
        "/openai/deployments/gpt-4o//chat/completions",
        Why::EmptySegment,
    ),
    (
        "/openai/deployments/gpt-4o/chat/completions/",
        Why::EmptySegment,
    ),
    (
        "/openai/deployments//gpt-4o/chat/completions",
        Why::EmptySegment,
    ),
    (
        "//openai/deployments/gpt-4o/chat/completions",
        Why::EmptySegment,
    ),
    ("/v1//chat/completions", Why::EmptySegment),
    ("/v1/chat/completions/", Why::EmptySegment),
    ("/openai/v1/", Why::EmptySegment),
    // Asterisk-form: no path at all.
    ("*", Why::NotAbsolute),
];

/// The first row of each class of [`HOSTILE`].
fn one_per_class() -> Vec<(&'static str, Why)> {
    let mut rows: Vec<(&'static str, Why)> = Vec::new();
    for &(target, why) in HOSTILE {
        if rows.iter().all(|&(_, seen)| seen != why) {
            rows.push((target, why));
        }
    }
    assert_eq!(rows.len(), 10, "every class has rows");
    rows
}

/// A chat body naming `gpt-4o`: a valid call in both styles.
fn chat_body() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]})
}

/// Two pools, each on its own recording mock (`east` serves `gpt-4o`, `west` serves
/// `other`), the all-pools key of the kit and [`GPT_4O_ONLY_KEY`].
async fn two_pool_proxy() -> (TestProxy, MockHandle, MockHandle) {
    let east = mock_with(MockConfig::named("east").record_requests(true)).await;
    let west = mock_with(MockConfig::named("west").record_requests(true)).await;
    let pools = [
        pool_yaml("gpt-4o", "", &[(&east, "")]),
        pool_yaml("other", "", &[(&west, "")]),
    ]
    .join("\n");
    let proxy =
        TestProxy::start_with(&pools, &[&east, &west], &[("team-b", &["gpt-4o"])], false).await;
    (proxy, east, west)
}

/// An HTTP/1.1 response as read off the wire.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}, body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request with `target` written exactly as given (no normalisation, no
/// re-encoding) on a fresh connection, and reads the response until the proxy closes it.
async fn raw_request(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> RawResponse {
    let body = serde_json::to_vec(body).unwrap();
    let mut request = Vec::with_capacity(512 + body.len());
    request.extend_from_slice(b"POST ");
    request.extend_from_slice(target.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\n");
    request.extend_from_slice(
        format!(
            "host: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&body);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("{target:?}: no complete response within 10 s"));
    // A server that answers without reading the body may reset the connection after its
    // response; what arrived before that is the answer.
    if let Err(error) = read {
        assert!(!received.is_empty(), "{target:?}: {error}");
    }
    parse_response(target, &received)
}

fn parse_response(target: &str, received: &[u8]) -> RawResponse {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{target:?}: no complete response head in {:?}",
                String::from_utf8_lossy(received)
            )
        });
    let head = std::str::from_utf8(&received[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target:?}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let raw_body = &received[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Decodes a complete `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_line = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Asserts the proxy's own 400 for a non-canonical path, in OpenAI's error shape, for `why`.
fn assert_refused(response: &RawResponse, target: &str, why: Why) {
    let body = response.json();
    assert_eq!(response.status, 400, "{target:?}: {body}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{target:?}"
    );
    assert!(
        response.header("x-mock-upstream").is_none()
            && response.header("x-sluice-backend").is_none(),
        "{target:?}: answered by a backend"
    );
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{target:?}: {body}");
    assert_eq!(error["code"], "invalid_path", "{target:?}: {body}");
    assert!(
        error.get("param").is_some_and(Value::is_null),
        "{target:?}: {body}"
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("The request path is not canonical: ")
            && message.contains(why.in_message()),
        "{target:?} should be refused as {why:?}: {body}"
    );
}

/// Every hostile path gets the proxy's 400 `invalid_path`, with a key or without one (the
/// check comes before authentication), and no backend sees any of them. A canonical call
/// afterwards, on the same raw client, is served: the silence was the proxy's doing.
#[tokio::test]
async fn hostile_paths_are_refused_before_auth_and_never_reach_a_backend() {
    let (proxy, east, west) = two_pool_proxy().await;
    let with_key = [("api-key", GPT_4O_ONLY_KEY)];
    let mut targets: Vec<(String, Why)> = HOSTILE
        .iter()
        .map(|(target, why)| ((*target).to_owned(), *why))
        .collect();
    // Absolute-form: the path of a full URL is checked the same way.
    targets.push((
        format!(
            "http://{}/openai/deployments/gpt-4o/../other/chat/completions",
            proxy.addr
        ),
        Why::DotSegment,
    ));
    targets.push((
        format!("http://{}/openai/v1/%2e%2e/files", proxy.addr),
        Why::DotSegment,
    ));
    assert!(targets.len() >= 40, "{} rows", targets.len());
    for (target, why) in &targets {
        let response = raw_request(proxy.addr, target, &with_key, &chat_body()).await;
        assert_refused(&response, target, *why);
    }

    // Without a key, with a wrong one, or with the all-pools key over Bearer: still 400,
    // never 401.
    let no_key: [(&str, &str); 0] = [];
    let wrong_key = [("api-key", "sk-wrong")];
    let bearer = format!("Bearer {}", support::proxy::CLIENT_KEY);
    let all_pools_key = [("authorization", bearer.as_str())];
    for (target, why) in one_per_class() {
        for headers in [&no_key[..], &wrong_key[..], &all_pools_key[..]] {
            let response = raw_request(proxy.addr, target, headers, &chat_body()).await;
            assert_refused(&response, target, why);
        }
    }

    assert_eq!(east.request_count(), 0, "{:?}", paths_seen(&east));
    assert_eq!(west.request_count(), 0, "{:?}", paths_seen(&west));
    assert!(east.requests().is_empty() && west.requests().is_empty());

    let canary = raw_request(
        proxy.addr,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        &with_key,
        &chat_body(),
    )
    .await;
    assert_eq!(
        canary.status,
        200,
        "{}",
        String::from_utf8_lossy(&canary.body)
    );
    assert_eq!(
        paths_seen(&east),
        ["/openai/deployments/gpt-4o/chat/completions"]
    );
    assert_eq!(west.request_count(), 0);
}

/// The check runs before the config is looked up: a proxy with no config yet answers 503 to
/// a canonical path and still 400 to a hostile one.
#[tokio::test]
async fn hostile_paths_are_refused_before_any_config_is_loaded() {
    // A control plane that never answers: a port held for the whole test, never accepted
    // from, so no other test can take it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let proxy = TestProxy::follow(silent.local_addr().unwrap(), "paths-node", cache.path()).await;
    let canonical = raw_request(
        proxy.addr,
        "/openai/deployments/gpt-4o/chat/completions",
        &[("api-key", GPT_4O_ONLY_KEY)],
        &chat_body(),
    )
    .await;
    assert_eq!(canonical.status, 503);
    assert_eq!(canonical.json()["error"]["code"], "not_ready");
    for (target, why) in one_per_class() {
        let response = raw_request(proxy.addr, target, &[], &chat_body()).await;
        assert_refused(&response, target, why);
    }
}

fn paths_seen(mock: &MockHandle) -> Vec<String> {
    mock.requests().into_iter().map(|r| r.path).collect()
}

/// Canonical paths, sent on the same raw client, are served: both styles, an unknown
/// operation passed through, names with dots inside and encoded characters that are not
/// separators. The backend sees exactly those calls under the deployment prefix.
#[tokio::test]
async fn canonical_paths_still_reach_the_deployment() {
    let (proxy, east, west) = two_pool_proxy().await;
    let with_key = [("api-key", GPT_4O_ONLY_KEY)];
    let embeddings = json!({"model": "gpt-4o", "input": "hello there"});
    let controls = [
        (
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            chat_body(),
            Some(200),
            "/openai/deployments/gpt-4o/chat/completions",
        ),
        (
            "/v1/chat/completions",
            chat_body(),
            Some(200),
            "/openai/deployments/gpt-4o/chat/completions",
        ),
        (
            "/openai/v1/embeddings",
            embeddings,
            Some(200),
            "/openai/deployments/gpt-4o/embeddings",
        ),
        // Operations the mock does not implement: passed through, answered by the backend.
        (
            "/openai/deployments/gpt-4o/some/new/operation",
            chat_body(),
            None,
            "/openai/deployments/gpt-4o/some/new/operation",
        ),
        (
            "/v1/files/file-a..b.jsonl/content",
            chat_body(),
            None,
            "/openai/deployments/gpt-4o/files/file-a..b.jsonl/content",
        ),
        (
            "/openai/v1/fine_tuning/jobs/ft%3Agpt-4o%3Aorg/events",
            chat_body(),
            None,
            "/openai/deployments/gpt-4o/fine_tuning/jobs/ft%3Agpt-4o%3Aorg/events",
        ),
    ];
    for (target, body, status, _) in &controls {
        let response = raw_request(proxy.addr, target, &with_key, body).await;
        if let Some(status) = status {
            assert_eq!(
                response.status,
                *status,
                "{target}: {}",
                String::from_utf8_lossy(&response.body)
            );
        }
        assert_eq!(
            response.header("x-mock-upstream"),
            Some("east"),
            "{target}: answered by the backend, not refused by the proxy (status {})",
            response.status
        );
    }
    // The key may not use `other`, the deployment the hostile paths aim at.
    let forbidden = raw_request(
        proxy.addr,
        "/openai/deployments/other/chat/completions",
        &with_key,
        &chat_body(),
    )
    .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.json()["error"]["code"], "permission_denied");

    let seen = east.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    let expected: Vec<&str> = controls.iter().map(|(_, _, _, path)| *path).collect();
    assert_eq!(paths, expected);
    for request in &seen {
        assert_eq!(request.api_key(), Some("key-east"), "{}", request.path);
        assert!(
            request
                .query
                .as_deref()
                .is_some_and(|q| q.contains("api-version=")),
            "{}: {:?}",
            request.path,
            request.query
        );
    }
    assert_eq!(west.request_count(), 0, "{:?}", paths_seen(&west));
}

/// Upstream, the proxy asks for an uncompressed body whatever the client accepts, and drops
/// cookies and every header claiming where the request came from; request ids and OpenAI's
/// headers pass, and the backend gets its own key, never the client's.
#[tokio::test]
async fn upstream_requests_ask_for_identity_and_carry_no_cookies_or_forwarding_headers() {
    let (proxy, east, west) = two_pool_proxy().await;
    let stripped = [
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "authorization",
    ];
    for (i, openai_style) in [false, true].into_iter().enumerate() {
        let request = if openai_style {
            proxy
                .client
                .post(proxy.url("/v1/chat/completions"))
                .bearer_auth(GPT_4O_ONLY_KEY)
        } else {
            proxy
                .client
                .post(
                    proxy.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"),
                )
                .header("api-key", GPT_4O_ONLY_KEY)
        };
        let response = request
            .header("accept-encoding", "gzip, br")
            .header("cookie", "a=b")
            .header("forwarded", "for=1.2.3.4")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "https")
            .header("x-real-ip", "1.2.3.4")
            .header("x-ms-client-request-id", "abc")
            .header("openai-organization", "org")
            .json(&chat_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);

        let seen = east.requests();
        assert_eq!(seen.len(), i + 1);
        let seen = &seen[i];
        assert_eq!(seen.path, "/openai/deployments/gpt-4o/chat/completions");
        let encodings: Vec<_> = seen.headers.get_all("accept-encoding").iter().collect();
        assert_eq!(encodings, ["identity"], "openai style: {openai_style}");
        for name in stripped {
            assert!(
                seen.headers.get(name).is_none(),
                "{name} reached the backend: {:?}",
                seen.headers
            );
        }
        assert_eq!(seen.header("x-ms-client-request-id"), Some("abc"));
        assert_eq!(seen.header("openai-organization"), Some("org"));
        if !openai_style {
            // The body went on as the client sent it, and so did its length.
            let sent = serde_json::to_vec(&chat_body()).unwrap().len().to_string();
            assert_eq!(seen.header("content-length"), Some(sent.as_str()));
        }
        assert_eq!(seen.api_key(), Some("key-east"));
        for (name, value) in &seen.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(GPT_4O_ONLY_KEY),
                "{name} carries the client key"
            );
        }
    }
    assert_eq!(west.request_count(), 0);
}
