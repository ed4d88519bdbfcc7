//! Backends over TLS, as Azure OpenAI and OpenAI are reached in production: the proxy trusts
//! the system's roots (here a test CA named by `SSL_CERT_FILE`), calls over HTTP/1.1 or HTTP/2
//! as the backend's ALPN offers, and refuses a backend whose certificate it cannot verify.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Request, Response, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use serde_json::{Value, json};
use sluice_testkit::azure::TestCa;
use sluice_testkit::mock_upstream::MockHandle;
use sluice_tls::{Alpn, CertificateFiles, PemFile, ServerTls, TlsSettings};
use support::process::{BACKEND_KEY_FROM_ENV, ProxyProcess};
use support::proxy::{backend_yaml_with_auth, mock};
use tokio::net::TcpListener;

const CLIENT_KEY: &str = "sk-tls-backends-client-0123456789";
const CHAT: &str = "/openai/deployments/p/chat/completions?api-version=2024-10-21";

/// A CA (PEM) and a `localhost` server certificate chain and key it signed.
fn certificates() -> (String, String, String) {
    let ca = TestCa::new().unwrap();
    let server = ca.server_pem(&["localhost"]).unwrap();
    (ca.ca_pem(), server.chain, server.key)
}

/// A TLS endpoint in front of a mock backend, as Azure's front door is: it terminates TLS
/// (offering `alpn`), serves HTTP/1.1 or HTTP/2 as negotiated, and forwards each request to the
/// mock over plain HTTP/1.1. Counts the TLS connections and records each request's version.
struct TlsFront {
    port: u16,
    connections: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<Version>>>,
}

async fn tls_front(
    dir: &Path,
    certificate: &str,
    key: &str,
    alpn: Alpn,
    to: &MockHandle,
) -> TlsFront {
    let (cert_path, key_path) = (dir.join("backend.crt"), dir.join("backend.key"));
    std::fs::write(&cert_path, certificate).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let files = CertificateFiles {
        certificate: PemFile {
            path: cert_path,
            flag: "--test-backend-cert",
        },
        private_key: PemFile {
            path: key_path,
            flag: "--test-backend-key",
        },
    };
    // One process-wide provider, as the binary installs at start.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = ServerTls::new(&TlsSettings::new(files), alpn).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = TlsFront {
        port: listener.local_addr().unwrap().port(),
        connections: Arc::default(),
        versions: Arc::default(),
    };
    let (connections, versions) = (front.connections.clone(), front.versions.clone());
    let mock_url = to.url();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            let (versions, mock_url) = (versions.clone(), mock_url.clone());
            let service = service_fn(move |request: Request<Incoming>| {
                versions.lock().unwrap().push(request.version());
                forward(mock_url.clone(), request)
            });
            let io = TokioIo::new(tls.accept(tcp));
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    front
}

/// The request, sent on to the mock; its whole response back.
async fn forward(
    mock_url: String,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut onward = reqwest::Client::new()
        .request(parts.method, format!("{mock_url}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != HOST {
            onward = onward.header(name, value);
        }
    }
    let answer = onward.send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if ![TRANSFER_ENCODING, CONNECTION, CONTENT_LENGTH].contains(name) {
            response = response.header(name, value);
        }
    }
    let body = answer.bytes().await.unwrap();
    Ok(response.body(Full::new(body)).unwrap())
}

/// A proxy process whose only backend is `https://localhost:PORT`, trusting `ca` as the
/// system's roots.
async fn proxy_in_front_of(dir: &Path, port: u16, ca: &str, backend: &MockHandle) -> ProxyProcess {
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let line = backend_yaml_with_auth(backend, BACKEND_KEY_FROM_ENV, "")
        .replace(&backend.url(), &format!("https://localhost:{port}"));
    ProxyProcess::start_one_pool(
        "tls-backend",
        dir,
        &line,
        &format!("key-{}", backend.name()),
        CLIENT_KEY,
        &[("SSL_CERT_FILE", &ca_path.display().to_string())],
    )
    .await
}

async fn chat(proxy: &ProxyProcess, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(proxy.url(CHAT))
        .header("api-key", CLIENT_KEY)
        .json(&json!({
            "messages": [{"role": "user", "content": "hello over TLS"}],
            "max_tokens": 8,
            "stream": stream,
        }))
        .send()
        .await
        .unwrap()
}

/// Three JSON calls and a stream through the TLS backend; each must come back whole.
async fn calls_succeed(proxy: &ProxyProcess) {
    for stream in [false, false, false, true] {
        let response = chat(proxy, stream).await;
        assert_eq!(response.status(), 200, "{}", proxy.log_text());
        let text = response.text().await.unwrap();
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["object"], "chat.completion", "{body}");
        }
    }
}

#[tokio::test]
async fn a_backend_over_tls_with_http1_is_called_on_kept_alive_connections() {
    let dir = tempfile::tempdir().unwrap();
    let backend = mock("tls-h1").await;
    let (ca, certificate, key) = certificates();
    let front = tls_front(dir.path(), &certificate, &key, Alpn::Http1, &backend).await;
    let proxy = proxy_in_front_of(dir.path(), front.port, &ca, &backend).await;

    calls_succeed(&proxy).await;
    assert_eq!(backend.stats().requests_total, 4);
    assert_eq!(*front.versions.lock().unwrap(), vec![Version::HTTP_11; 4]);
    // Sequential calls reuse a pooled connection: at most one per proxy worker.
    let connections = front.connections.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&connections),
        "{connections} TLS connections for 4 sequential calls"
    );
}

#[tokio::test]
async fn a_backend_over_tls_offering_h2_is_called_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let backend = mock("tls-h2").await;
    let (ca, certificate, key) = certificates();
    let front = tls_front(
        dir.path(),
        &certificate,
        &key,
        Alpn::Http2AndHttp1,
        &backend,
    )
    .await;
    let proxy = proxy_in_front_of(dir.path(), front.port, &ca, &backend).await;

    calls_succeed(&proxy).await;
    assert_eq!(backend.stats().requests_total, 4);
    assert_eq!(*front.versions.lock().unwrap(), vec![Version::HTTP_2; 4]);
}

#[tokio::test]
async fn a_backend_whose_certificate_is_not_trusted_is_not_called() {
    let dir = tempfile::tempdir().unwrap();
    let backend = mock("tls-untrusted").await;
    let (_, certificate, key) = certificates();
    // The proxy trusts another CA than the one that signed the backend's certificate.
    let (other_ca, _, _) = certificates();
    let front = tls_front(dir.path(), &certificate, &key, Alpn::Http1, &backend).await;
    let proxy = proxy_in_front_of(dir.path(), front.port, &other_ca, &backend).await;

    let response = chat(&proxy, false).await;
    assert_eq!(response.status(), 502, "{}", proxy.log_text());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable", "{body}");
    assert!(front.versions.lock().unwrap().is_empty());
    assert_eq!(backend.stats().requests_total, 0);
}
