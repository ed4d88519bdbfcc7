//! Listeners: HTTP/1.1 and h2c on the proxy port, the ops endpoints on their own port, and a
//! graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::clock::Nanos;
use crate::proxy::Proxy;

/// Accepts connections until `shutdown`, then waits up to `drain` for in-flight requests.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
    });
    serve(listener, service, shutdown, drain).await;
}

pub async fn serve_ops(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(ops(&proxy, request.uri().path())) }
    });
    serve(listener, service, shutdown, Duration::from_secs(1)).await;
}

async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service.clone());
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "client connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(drain_secs = drain.as_secs(), "drain timed out; closing remaining connections"),
    }
}

fn ops(proxy: &Proxy, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => plain(
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.into(),
        ),
        "/readyz" => match proxy.current() {
            Some(config) => plain(
                StatusCode::OK,
                "application/json",
                format!(r#"{{"status":"ready","revision":{}}}"#, config.revision),
            ),
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                r#"{"status":"no config loaded"}"#.into(),
            ),
        },
        "/metrics" => {
            if let Some(age) = proxy.config_age() {
                proxy.metrics.seconds_since_update.set(age.as_secs_f64());
            }
            if let Some(config) = proxy.current() {
                let now = Nanos::now();
                for pool in config.pools.values() {
                    for backend in &pool.backends {
                        let state = backend.state(now);
                        let remaining = match state {
                            crate::backend::State::Cooling(wait)
                            | crate::backend::State::Ejected(wait) => wait.as_secs_f64(),
                            _ => 0.0,
                        };
                        proxy.metrics.backend_state(
                            pool.name.as_str(),
                            backend.spec.name.as_str(),
                            state.label(),
                            remaining,
                        );
                    }
                }
            }
            plain(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                proxy.metrics.encode(),
            )
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not found"}"#.into(),
        ),
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
