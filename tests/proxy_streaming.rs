//! Streaming and connection handling: chunks pass through as they arrive, usage is counted,
//! a client that leaves cancels the upstream call, h2c works, SIGTERM drains.

mod support;

use std::time::{Duration, Instant};

use sluice_testkit::mock_upstream::{MockConfig, MockHandle};
use support::eventually;
use support::process::{BACKEND_KEY_FROM_ENV, ProxyProcess};
use support::proxy::{CLIENT_KEY, TestProxy, backend_yaml_with_auth, mock, mock_with, pool_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend named `slow` that streams `tokens` completion tokens at 20 a second.
async fn paced_mock(tokens: u32) -> MockHandle {
    mock_with(
        MockConfig::named("slow")
            .tokens_per_second(20.0)
            .completion_tokens(tokens),
    )
    .await
}

/// Each streamed chunk reaches the client when the backend produces it, not at the end.
#[tokio::test]
async fn streamed_chunks_reach_the_client_before_the_upstream_finishes() {
    let slow = paced_mock(10).await;
    let pool = pool_yaml("p", "", &[(&slow, "")]);
    let proxy = TestProxy::start(&pool, &[&slow]).await;
    let started = Instant::now();
    let mut response = proxy.stream("p").send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut first_content = None;
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first_content.is_none() && text.contains("\"content\"") {
            first_content = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_content.expect("content chunks arrived");
    assert!(
        total >= Duration::from_millis(400),
        "ten tokens at 20/s take about half a second: {total:?}"
    );
    assert!(
        first < total / 2,
        "first token after {first:?} of {total:?}: the stream was buffered"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_tokens_total{pool="p",backend="slow",client_key="team-a",direction="output"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_time_to_first_byte_seconds_count{pool=\"p\",backend=\"slow\"} 1"),
        "{metrics}"
    );
}

/// Token usage is read from non-streaming bodies as they pass.
#[tokio::test]
async fn usage_of_plain_responses_is_counted() {
    let a = mock("a").await;
    let pool = pool_yaml("p", "", &[(&a, "")]);
    let proxy = TestProxy::start(&pool, &[&a]).await;
    let body: serde_json::Value = proxy.chat("p").send().await.unwrap().json().await.unwrap();
    let (input, output) = (
        &body["usage"]["prompt_tokens"],
        &body["usage"]["completion_tokens"],
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"sluice_tokens_total{{pool="p",backend="a",client_key="team-a",direction="input"}} {input}"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"sluice_tokens_total{{pool="p",backend="a",client_key="team-a",direction="output"}} {output}"#
        )),
        "{metrics}"
    );
}

/// Accepts one connection on `listener` and reads a request head from it (the body, if any,
/// is left unread).
async fn accept_one_request(listener: &TcpListener) -> tokio::net::TcpStream {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buffer).await.unwrap();
        head.extend_from_slice(&buffer[..n]);
    }
    socket
}

/// A hand-driven upstream: reads one request, optionally starts a chunked response, then
/// reports whether the proxy closed the connection.
async fn hanging_upstream(start_streaming: bool) -> (String, tokio::task::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut socket = accept_one_request(&listener).await;
        let mut buffer = [0u8; 4096];
        if start_streaming {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let event = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
            socket
                .write_all(format!("{:x}\r\n", event.len()).as_bytes())
                .await
                .unwrap();
            socket.write_all(event).await.unwrap();
            socket.write_all(b"\r\n").await.unwrap();
        }
        // Wait for the proxy to give up on us: EOF or reset means the call was cancelled.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        closed.is_ok()
    });
    (url, task)
}

/// A hand-driven upstream that answers one request with `body`, chunked, and also states a
/// `Content-Length` of `stated` bytes: conflicting framing, where `Transfer-Encoding` wins
/// (RFC 9112, section 6.3).
async fn conflicting_framing_upstream(body: &'static str, stated: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut socket = accept_one_request(&listener).await;
        let (first, rest) = body.split_at(body.len() / 2);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {stated}\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             {:x}\r\n{first}\r\n{:x}\r\n{rest}\r\n0\r\n\r\n",
            first.len(),
            rest.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
    });
    url
}

fn raw_pool(url: &str) -> String {
    format!(
        "  - name: p\n    backends: [{{ name: raw, url: \"{url}\", kind: azure_openai, auth: {{ type: none }} }}]"
    )
}

/// A client that leaves before the answer starts cancels the upstream request.
#[tokio::test]
async fn client_disconnect_before_the_response_cancels_upstream() {
    let (url, upstream) = hanging_upstream(false).await;
    let proxy = TestProxy::start(&raw_pool(&url), &[]).await;
    let call = tokio::spawn(proxy.chat("p").send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    assert!(
        upstream.await.unwrap(),
        "the upstream connection was closed"
    );
}

/// A client that leaves mid-stream cancels the upstream stream.
#[tokio::test]
async fn client_disconnect_mid_stream_cancels_upstream() {
    let (url, upstream) = hanging_upstream(true).await;
    let proxy = TestProxy::start(&raw_pool(&url), &[]).await;
    let mut response = proxy.stream("p").send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("hi"));
    drop(response);
    assert!(
        upstream.await.unwrap(),
        "the upstream connection was closed"
    );
}

/// A backend answer framed both ways reaches the client whole, by its chunks, and without the
/// `Content-Length` that contradicts them: forwarded, that length would frame the client's
/// response differently from the body that follows it.
#[tokio::test]
async fn a_backend_length_beside_chunked_framing_is_not_passed_on() {
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    for stated in [5, body.len() + 40] {
        let url = conflicting_framing_upstream(body, stated).await;
        let proxy = TestProxy::start(&raw_pool(&url), &[]).await;
        let response = proxy.chat("p").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let length = response.headers().get("content-length").cloned();
        let received = response.text().await.unwrap();
        assert_eq!(received, body, "stated length {stated}");
        if let Some(length) = length {
            assert_eq!(
                length.to_str().unwrap(),
                body.len().to_string(),
                "the length the client got is the body's, not the backend's {stated}"
            );
        }
    }
}

/// HTTP/2 without TLS (h2c, prior knowledge) is served on the same port.
#[tokio::test]
async fn serves_h2c_clients() {
    let a = mock("a").await;
    let pool = pool_yaml("p", "", &[(&a, "")]);
    let proxy = TestProxy::start(&pool, &[&a]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&serde_json::json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

/// A client whose first segment is too short to tell HTTP/1 from the h2c preface is still
/// served: the proxy leaves it to hyper-util's auto-detection, which reads on.
#[tokio::test]
async fn a_request_whose_first_segment_is_one_byte_is_still_served() {
    let a = mock("a").await;
    let pool = pool_yaml("p", "", &[(&a, "")]);
    let proxy = TestProxy::start(&pool, &[&a]).await;
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "OST /openai/deployments/p/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n\
         host: sluice\r\napi-key: {CLIENT_KEY}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    // "P" could begin the h2c preface ("PRI * HTTP/2.0…") as well as "POST".
    client.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"choices\""), "{response}");
}

#[tokio::test]
async fn a_connection_that_never_spoke_does_not_hold_up_shutdown() {
    let mock = mock("m").await;
    let pool = pool_yaml("p", "", &[(&mock, "")]);
    let mut proxy = TestProxy::start(&pool, &[&mock]).await;
    // Connected, but no byte sent: the proxy cannot yet tell HTTP/1 from h2c.
    let silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.begin_shutdown();
    // The drain allows 5 s; a connection waiting for its first bytes is closed at once.
    tokio::time::timeout(Duration::from_secs(4), proxy.stopped())
        .await
        .expect("stopped without waiting out the drain");
    drop(silent);
}

/// The binary itself on SIGTERM, as Kubernetes stops a pod: the stream in flight runs to its
/// end, and the process exits once it has drained, refusing new connections.
#[tokio::test]
async fn on_sigterm_the_process_finishes_the_stream_in_flight_then_exits() {
    let slow = paced_mock(8).await;
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_yaml_with_auth(&slow, BACKEND_KEY_FROM_ENV, "");
    let proxy =
        ProxyProcess::start_one_pool("sigterm", dir.path(), &backend, "key-slow", CLIENT_KEY, &[])
            .await;

    let mut response = reqwest::Client::new()
        .post(proxy.url("/openai/deployments/p/chat/completions?api-version=2024-10-21"))
        .header("api-key", CLIENT_KEY)
        .json(&serde_json::json!({
            "messages": [{"role": "user", "content": "hello there"}],
            "stream": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", proxy.log_text());
    let first = response.chunk().await.unwrap().unwrap();
    proxy.terminate();
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    eventually(Duration::from_secs(10), "the process to exit", || async {
        !proxy.running()
    })
    .await;
    assert!(proxy.log_text().contains("drained"), "{}", proxy.log_text());
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "no longer accepting"
    );
}

/// A keep-alive connection that sits idle between calls is closed as soon as the drain
/// begins: its task is parked, and the drain has to wake it.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_when_the_drain_begins() {
    let mock = mock("m").await;
    let pool = pool_yaml("p", "", &[(&mock, "")]);
    let mut proxy = TestProxy::start(&pool, &[&mock]).await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /openai/deployments/p/chat/completions?api-version=2024-10-21 HTTP/1.1\r\n\
         host: sluice\r\napi-key: {CLIENT_KEY}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // The whole answer (its head, then as many bytes as its content-length says); the
    // connection then waits for the next request.
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))?
            .parse()
            .ok()?;
        Some(body.len() >= length)
    };
    while complete(&answer) != Some(true) {
        let read = client.read(&mut chunk).await.unwrap();
        assert!(
            read > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&chunk[..read]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    proxy.begin_shutdown();
    // The drain allows 5 s; an idle connection is closed at once, not when that runs out.
    let mut after = Vec::new();
    tokio::time::timeout(Duration::from_secs(4), client.read_to_end(&mut after))
        .await
        .expect("the idle connection was left open during the drain")
        .unwrap();
    assert!(after.is_empty(), "{}", String::from_utf8_lossy(&after));
    tokio::time::timeout(Duration::from_secs(4), proxy.stopped())
        .await
        .expect("stopped without waiting out the drain");
}

/// On shutdown the proxy stops accepting but lets a running stream finish.
#[tokio::test]
async fn shutdown_drains_in_flight_streams() {
    let slow = paced_mock(8).await;
    let pool = pool_yaml("p", "", &[(&slow, "")]);
    let mut proxy = TestProxy::start(&pool, &[&slow]).await;
    let mut response = proxy.stream("p").send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    proxy.begin_shutdown();
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the stream completed during the drain"
    );
    let addr = proxy.addr;
    proxy.stopped().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
