//! The pool against a raw HTTP/1 server on loopback that counts its connections and can
//! misbehave the ways backends do: close idle keep-alive connections, say `Connection: close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::pool::idle_connections;
use super::{Origin, Upstream, UpstreamError};

#[derive(Clone, Copy)]
enum After {
    /// Keep the connection for the next request.
    KeepAlive,
    /// Answer with `Connection: close` and close.
    SayClose,
    /// Close silently once the response is out (a backend whose keep-alive timer ran out).
    CloseQuietly,
}

struct Backend {
    url: String,
    connections: Arc<AtomicUsize>,
}

/// A backend answering every request with `body`, then doing `after`.
async fn backend(body: &'static str, after: After) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(read) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    // Requests here carry no body, or a short one sent with the head.
                    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    request.drain(..end + 4);
                    let close = matches!(after, After::SayClose);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
                        body.len(),
                        if close { "connection: close\r\n" } else { "" }
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if !matches!(after, After::KeepAlive) {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    Backend { url, connections }
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn origin(url: &str) -> Origin {
    Origin::of_url(&url.parse().unwrap()).unwrap()
}

async fn call(upstream: &Arc<Upstream>, url: &str) -> Result<Bytes, UpstreamError> {
    let response = upstream.request(&origin(url), get()).await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(response.into_body().collect().await?.to_bytes())
}

fn upstream() -> Arc<Upstream> {
    Upstream::new(Duration::from_secs(2)).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn sequential_calls_share_one_connection() {
    let backend = backend("hello", After::KeepAlive).await;
    let upstream = upstream();
    for _ in 0..5 {
        assert_eq!(call(&upstream, &backend.url).await.unwrap(), "hello");
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    assert_eq!(idle_connections(&upstream, &origin(&backend.url)), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_the_backend_closed_while_idle_is_not_used() {
    let backend = backend("fresh", After::CloseQuietly).await;
    let upstream = upstream();
    for _ in 0..3 {
        assert_eq!(call(&upstream, &backend.url).await.unwrap(), "fresh");
        // Let the close reach this side before the next call looks at the pool.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn connection_close_is_honoured() {
    let backend = backend("bye", After::SayClose).await;
    let upstream = upstream();
    for _ in 0..3 {
        assert_eq!(call(&upstream, &backend.url).await.unwrap(), "bye");
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);
    assert_eq!(idle_connections(&upstream, &origin(&backend.url)), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_dropped_half_read_takes_its_connection_with_it() {
    let backend = backend("a body that is never read", After::KeepAlive).await;
    let upstream = upstream();
    let response = upstream
        .request(&origin(&backend.url), get())
        .await
        .unwrap();
    drop(response);
    assert_eq!(
        call(&upstream, &backend.url).await.unwrap(),
        "a body that is never read"
    );
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn refusals_are_clear_errors() {
    let upstream = upstream();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let error = call(&upstream, &url).await.unwrap_err();
    assert!(matches!(error, UpstreamError::Connect(_)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("cannot connect to the backend")
    );
}

/// `headers::for_upstream` sizes the request's map for the response as well: over HTTP/1,
/// hyper parses the answer into the map the request went out in. If a hyper upgrade stops
/// doing so, the room is wasted and every limited key's response grows its map again.
#[tokio::test(flavor = "current_thread")]
async fn the_response_is_parsed_into_the_request_s_map() {
    let backend = backend("roomy", After::KeepAlive).await;
    let upstream = upstream();
    let mut request = get();
    request.headers_mut().reserve(40);
    let room = request.headers().capacity();
    let response = upstream
        .request(&origin(&backend.url), request)
        .await
        .unwrap();
    assert_eq!(response.headers().len(), 1, "content-length only");
    assert_eq!(response.headers().capacity(), room);
}
