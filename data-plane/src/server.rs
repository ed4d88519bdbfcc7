//! Listeners: the proxy port (HTTP/1.1 and h2c, or HTTP/2 and HTTP/1.1 over TLS by ALPN), the
//! ops endpoints on their own port, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_core::future::BoxFuture;
use futures_util::FutureExt as _;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice_tls::ServerTls;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::client_error::ClientError;
use crate::clock::Nanos;
use crate::concurrency::{CountedBody, InFlight, Load, WorkerLoad};
use crate::drain::{Drain, Watcher};
use crate::metrics::Exposition;
use crate::proxy::Proxy;

/// One listening socket per worker on the same address (`SO_REUSEPORT`, so the kernel spreads
/// connections over them); with port 0 all share the port the first one got.
pub fn bind_workers(
    addr: SocketAddr,
    workers: NonZeroUsize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(workers.get());
    let mut addr = addr;
    for _ in 0..workers.get() {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// What a worker's requests share: the proxy, and the worker's count of them.
struct Worker {
    proxy: Arc<Proxy>,
    load: Arc<WorkerLoad>,
}

impl AsRef<WorkerLoad> for Worker {
    fn as_ref(&self) -> &WorkerLoad {
        &self.load
    }
}

/// How the proxy port serves: TLS or not, and its workers' loads (one per listener).
pub struct ProxyListeners {
    pub sockets: Vec<std::net::TcpListener>,
    pub load: Arc<Load>,
    pub tls: Option<ServerTls>,
}

/// Serves client traffic with one single-threaded runtime per listener (per worker) until
/// `shutdown`, then lets each drain its in-flight requests for up to `drain`.
pub async fn serve_proxy(
    listeners: ProxyListeners,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut finished = Vec::with_capacity(listeners.sockets.len());
    for (index, (listener, load)) in listeners
        .sockets
        .into_iter()
        .zip(listeners.load.workers())
        .enumerate()
    {
        let worker = Arc::new(Worker {
            proxy: proxy.clone(),
            load: load.clone(),
        });
        let (tls, stopped) = (listeners.tls.clone(), stopped.clone());
        let (done, finished_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("sluice-proxy-{index}"))
            .spawn(move || {
                crate::per_worker::enter(index);
                serve_on_own_runtime(listener, worker, tls, stopped, drain);
                let _ = done.send(());
            })?;
        finished.push(finished_rx);
    }
    shutdown.await;
    let _ = stop.send(true);
    for thread in finished {
        let _ = thread.await;
    }
    Ok(())
}

fn serve_on_own_runtime(
    listener: std::net::TcpListener,
    worker: Arc<Worker>,
    tls: Option<ServerTls>,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start a proxy runtime; this worker serves nothing");
            return;
        }
    };
    runtime.block_on(async move {
        tokio::spawn(keep_timer_wheel_near());
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot take over the listening socket");
                return;
            }
        };
        // The request is counted from here until its response body is dropped; the worker's
        // handle, cloned per request anyway, doubles as the count's guard.
        //
        // The future is boxed here because hyper's HTTP/1 server would otherwise box it itself,
        // once per connection and sized for it (about 1 KB), and keep that box for the
        // connection's life: every open stream and idle keep-alive connection would hold it.
        // Ours is freed as soon as the response head is out.
        let service = service_fn(move |request: Request<Incoming>| -> BoxFuture<'static, _> {
            let admitted = InFlight::admit(worker.clone());
            Box::pin(async move {
                Ok::<_, Infallible>(match admitted {
                    Some(in_flight) => {
                        let response = in_flight.worker().proxy.handle(request).await;
                        response.map(|body| CountedBody::new(body, Some(in_flight)))
                    }
                    None => ClientError::at_capacity()
                        .into_response()
                        .map(|body| CountedBody::new(body, None)),
                })
            })
        });
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        serve(listener, tls, service, shutdown, drain).await;
    });
}

/// Keeps a timer due within the next second on this worker's runtime, for ever, and on it
/// sweeps the worker's idle upstream connections.
///
/// Tokio wakes its driver (an eventfd write, a syscall) whenever a timer is registered that
/// is due before the driver's next planned wake-up. On a worker whose only timers are the
/// per-try timeouts of the calls in flight, that is nearly every call's timeout (profiled:
/// half a `write` per proxied call). With this tick always due sooner, a timeout of a second
/// or more never is; the tick itself costs one wake-up a second.
async fn keep_timer_wheel_near() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::upstream::sweep_this_thread(Nanos::coarse_now());
    }
}

pub async fn serve_ops(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(ops(&proxy, &request)) }
    });
    serve(listener, None, service, shutdown, Duration::from_secs(1)).await;
}

/// A service the listeners can run on any connection: it never fails, and it and its futures
/// move between tasks.
trait ConnectionService<B>:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
}

/// A response body the listeners can send: bytes, from any task.
trait ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<B> ResponseBody for B
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<ServerTls>,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = Drain::new();
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
                match &tls {
                    None => spawn_plain_connection(connections.watcher(), service.clone(), stream),
                    // The handshake runs on the connection's task, not in this loop.
                    Some(tls) => spawn_connection(&builder, connections.watcher(), service.clone(), tls.accept(stream)),
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = connections.run() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(drain_secs = drain.as_secs(), "drain timed out; closing remaining connections"),
    }
}

fn spawn_connection<IO, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    service: S,
    io: IO,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let connection = watcher.watch(connection.into_owned());
    // A combinator, not an `async` block: a block keeps the connection it captured beside the
    // one it awaits, and the task would be twice the connection's size (5.6 KB instead of 2.8
    // per TLS client connection, `-Zprint-type-sizes`).
    tokio::spawn(connection.map(|ended| {
        if let Err(error) = ended {
            tracing::debug!(%error, "client connection ended with an error");
        }
    }));
}

/// The connection preface a client speaking HTTP/2 with prior knowledge (h2c) opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain-TCP client speaks, told from the first bytes it sent.
#[derive(Debug, PartialEq, Eq)]
enum Speaks {
    Http1,
    Http2,
    /// Too few bytes to tell (or none readable): hyper-util's auto-detection reads on.
    Unsure,
}

impl Speaks {
    fn from_first_bytes(first: &[u8]) -> Self {
        if first.is_empty() {
            Speaks::Unsure
        } else if !H2_PREFACE.starts_with(first) {
            Speaks::Http1
        } else if first.len() == H2_PREFACE.len() {
            Speaks::Http2
        } else {
            Speaks::Unsure
        }
    }
}

/// Serves a plain-TCP client with the protocol its first bytes show, peeked rather than read.
///
/// hyper-util's auto-detection reads the first 24 bytes itself and hands them back through a
/// wrapper; hyper's read buffer, finding them there with less than its 8 KiB free, then grew to
/// 16 KiB on every connection (measured: 8 KiB allocated, ~4 KiB resident, per open client
/// connection). A peek leaves the bytes in the socket, so hyper reads them into its own buffer
/// as usual. An HTTP/1 request differs from the h2c preface by its second byte at the latest;
/// only a client whose first segment is a part of the preface goes to the auto-detection.
fn spawn_plain_connection<S, B>(watcher: Watcher, service: S, stream: TcpStream)
where
    S: ConnectionService<B>,
    B: ResponseBody,
{
    tokio::spawn(async move {
        let mut first = [0_u8; H2_PREFACE.len()];
        let peeked = tokio::select! {
            biased;
            peeked = stream.peek(&mut first) => peeked.unwrap_or(0),
            // Shutting down before the client said anything: close, as a drain would.
            () = watcher.begun() => return,
        };
        let io = TokioIo::new(stream);
        let served: Result<(), BoxError> = match Speaks::from_first_bytes(&first[..peeked]) {
            Speaks::Http1 => {
                let connection = http1::Builder::new().serve_connection(io, service);
                watcher.watch(connection).await.map_err(Into::into)
            }
            // Boxed: the task's future is as large as its largest branch, and nearly every
            // connection is HTTP/1, whose state is less than half the size of the others.
            Speaks::Http2 => {
                let connection =
                    http2::Builder::new(TokioExecutor::new()).serve_connection(io, service);
                Box::pin(watcher.watch(connection))
                    .await
                    .map_err(Into::into)
            }
            Speaks::Unsure => {
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection_with_upgrades(io, service);
                Box::pin(watcher.watch(connection.into_owned())).await
            }
        };
        if let Err(error) = served {
            tracing::debug!(%error, "client connection ended with an error");
        }
    });
}

fn ops<B>(proxy: &Proxy, request: &Request<B>) -> Response<Full<Bytes>> {
    match request.uri().path() {
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
            refresh_scrape_time_metrics(proxy);
            let accept = request
                .headers()
                .get(ACCEPT)
                .and_then(|accept| accept.to_str().ok());
            let format = Exposition::negotiate(accept);
            plain(
                StatusCode::OK,
                format.content_type(),
                proxy.metrics.encode(format),
            )
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not found"}"#.into(),
        ),
    }
}

/// Sets the gauges that are read rather than counted (backend states, config age), before
/// the registry is encoded for a scrape or an export.
pub(crate) fn refresh_scrape_time_metrics(proxy: &Proxy) {
    if let Some(age) = proxy.config_age() {
        proxy.metrics.seconds_since_update.set(age.as_secs_f64());
    }
    if let Some(config) = proxy.current() {
        let now = Nanos::now();
        for pool in config.pools.values() {
            for backend in &pool.backends {
                let state = backend.state(now);
                let remaining = match state {
                    crate::backend::State::Cooling(wait) | crate::backend::State::Ejected(wait) => {
                        wait.as_secs_f64()
                    }
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
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_h2c_from_http1_by_the_first_bytes() {
        assert_eq!(Speaks::from_first_bytes(H2_PREFACE), Speaks::Http2);
        assert_eq!(
            Speaks::from_first_bytes(b"POST /openai/deployments/x/chat/completions HTTP/1.1\r\n"),
            Speaks::Http1
        );
        assert_eq!(Speaks::from_first_bytes(b"PUT"), Speaks::Http1);
        assert_eq!(Speaks::from_first_bytes(b"G"), Speaks::Http1);
        // A part of the preface could still become either: hyper-util reads on.
        assert_eq!(Speaks::from_first_bytes(b"P"), Speaks::Unsure);
        assert_eq!(Speaks::from_first_bytes(&H2_PREFACE[..10]), Speaks::Unsure);
        assert_eq!(Speaks::from_first_bytes(b""), Speaks::Unsure);
    }
}
