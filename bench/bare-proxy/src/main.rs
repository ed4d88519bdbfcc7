//! The floor under Sluice's benchmarks: a reverse proxy made of hyper's own parts and nothing
//! else, the way hyper's documentation puts them together. One single-threaded runtime per
//! core, each with its own `SO_REUSEPORT` listener and its own pool of HTTP/1 connections to
//! the backends, each connection driven by a task of its own; round-robin; the client's
//! `api-key` replaced by the backends' key. No routing, no client keys, no retries, no limits,
//! no usage counting, no metrics.
//!
//! `bench/run` and `bench/instructions` run it beside nginx and Sluice: the distance from it
//! to nginx is hyper's, and from Sluice to it is Sluice's own.
//!
//!     BARE_PROXY_UPSTREAM_KEY=… sluice-bare-proxy 127.0.0.1:8080 127.0.0.1:9001,127.0.0.1:9002

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self as client, SendRequest};
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

static API_KEY: HeaderName = HeaderName::from_static("api-key");

struct Upstream {
    addr: SocketAddr,
    host: HeaderValue,
}

struct Config {
    upstreams: Vec<Upstream>,
    key: HeaderValue,
}

impl Config {
    /// A copy in buffers of its own, for one worker, kept for the process's life: requests
    /// then clone no `Arc` and no header value whose reference count other workers write (as
    /// Sluice keeps its per-call values per worker), so the floor pays for no sharing either.
    fn for_one_worker(&self) -> &'static Self {
        let copy = |value: &HeaderValue| {
            HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
        };
        Box::leak(Box::new(Self {
            upstreams: self
                .upstreams
                .iter()
                .map(|upstream| Upstream {
                    addr: upstream.addr,
                    host: copy(&upstream.host),
                })
                .collect(),
            key: copy(&self.key),
        }))
    }
}

thread_local! {
    /// This worker's idle connections, by upstream.
    static IDLE: RefCell<Vec<Vec<SendRequest<Incoming>>>> = const { RefCell::new(Vec::new()) };
    static NEXT: Cell<usize> = const { Cell::new(0) };
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args, std::env::var("BARE_PROXY_UPSTREAM_KEY").ok()) {
        Ok((listen, config)) => run(listen, &config),
        Err(message) => {
            eprintln!("sluice-bare-proxy: {message}");
            eprintln!(
                "usage: BARE_PROXY_UPSTREAM_KEY=<key> sluice-bare-proxy <listen addr> <upstream addr>[,<upstream addr>…]"
            );
            ExitCode::from(2)
        }
    }
}

fn parse_args(args: &[String], key: Option<String>) -> Result<(SocketAddr, Config), String> {
    let [listen, upstreams] = args else {
        return Err("expected two arguments".into());
    };
    let listen = listen
        .parse()
        .map_err(|_| format!("not a socket address: {listen}"))?;
    let upstreams = upstreams
        .split(',')
        .map(|upstream| {
            let addr: SocketAddr = upstream
                .parse()
                .map_err(|_| format!("not a socket address: {upstream}"))?;
            let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
            Ok(Upstream { addr, host })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let key = key.ok_or("BARE_PROXY_UPSTREAM_KEY is not set")?;
    let key = HeaderValue::from_str(&key).map_err(|_| "the upstream key is no header value")?;
    Ok((listen, Config { upstreams, key }))
}

fn run(listen: SocketAddr, config: &Config) -> ExitCode {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // tokio's sockets register with a reactor as they listen, even when handed on as std's.
    let binding = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice-bare-proxy: no runtime to bind with: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _entered = binding.enter();
    let mut addr = listen;
    let mut threads = Vec::with_capacity(workers);
    for _ in 0..workers {
        let listener = match bind(addr) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("sluice-bare-proxy: cannot listen on {addr}: {error}");
                return ExitCode::FAILURE;
            }
        };
        // With port 0, the other workers share the port the first one got.
        addr = listener.local_addr().unwrap_or(addr);
        let config = config.for_one_worker();
        threads.push(std::thread::spawn(move || serve(listener, config)));
    }
    println!("listening on {addr}");
    for thread in threads {
        let _ = thread.join();
    }
    ExitCode::SUCCESS
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

fn serve(listener: std::net::TcpListener, config: &'static Config) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice-bare-proxy: no runtime for a worker: {error}");
            return;
        }
    };
    IDLE.with_borrow_mut(|idle| idle.resize_with(config.upstreams.len(), Vec::new));
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("sluice-bare-proxy: cannot take over a listener: {error}");
                return;
            }
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|request| forward(request, config));
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

type ProxyBody = Either<PooledBody, Empty<Bytes>>;

async fn forward(
    mut request: Request<Incoming>,
    config: &'static Config,
) -> Result<Response<ProxyBody>, Infallible> {
    let index = NEXT.with(|next| {
        let index = next.get();
        next.set(index.wrapping_add(1));
        index % config.upstreams.len()
    });
    let upstream = &config.upstreams[index];
    let headers = request.headers_mut();
    headers.insert(HOST, upstream.host.clone());
    headers.insert(&API_KEY, config.key.clone());
    let Some(mut sender) = checkout(index, upstream.addr).await else {
        return Ok(bad_gateway());
    };
    Ok(match sender.send_request(request).await {
        Ok(response) => response.map(|body| {
            Either::Left(PooledBody {
                body,
                sender: Some((index, sender)),
            })
        }),
        Err(_) => bad_gateway(),
    })
}

/// An idle connection of this worker's to `addr` that is ready for a request, or a new one.
async fn checkout(index: usize, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
    while let Some(mut idle) = IDLE.with_borrow_mut(|idle| idle[index].pop()) {
        // Ready once its previous response was read to the end; an error if it closed.
        if idle.ready().await.is_ok() {
            return Some(idle);
        }
    }
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The backend's response body; its connection goes back to the worker's pool once the body
/// has been read to its end (a body dropped half-read takes the connection with it).
struct PooledBody {
    body: Incoming,
    sender: Option<(usize, SendRequest<Incoming>)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so the end is seen here.
        if self.is_end_stream()
            && let Some((index, sender)) = self.sender.take()
        {
            IDLE.with_borrow_mut(|idle| idle[index].push(sender));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], key: Option<&str>) -> Result<(SocketAddr, Config), String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        parse_args(&args, key.map(str::to_owned))
    }

    #[test]
    fn reads_the_listen_address_the_upstreams_and_the_key() {
        let (listen, config) = parse(
            &["127.0.0.1:0", "127.0.0.1:9001,[::1]:9002"],
            Some("secret"),
        )
        .unwrap();
        assert_eq!(listen, "127.0.0.1:0".parse().unwrap());
        let hosts: Vec<_> = config.upstreams.iter().map(|u| u.host.clone()).collect();
        assert_eq!(hosts, ["127.0.0.1:9001", "[::1]:9002"]);
        assert_eq!(config.key, "secret");
    }

    #[test]
    fn says_what_is_wrong_with_its_arguments() {
        let error = |args: &[&str], key| parse(args, key).err().unwrap();
        assert_eq!(error(&["127.0.0.1:0"], Some("k")), "expected two arguments");
        assert_eq!(
            error(&["localhost", "127.0.0.1:1"], Some("k")),
            "not a socket address: localhost"
        );
        assert_eq!(
            error(&["127.0.0.1:0", "127.0.0.1:1,nowhere"], Some("k")),
            "not a socket address: nowhere"
        );
        assert_eq!(
            error(&["127.0.0.1:0", "127.0.0.1:1"], None),
            "BARE_PROXY_UPSTREAM_KEY is not set"
        );
        assert_eq!(
            error(&["127.0.0.1:0", "127.0.0.1:1"], Some("line\nbreak")),
            "the upstream key is no header value"
        );
    }
}
