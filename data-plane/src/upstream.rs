//! Clients for calling backends: pooled keep-alive connections, rustls with the system's
//! roots, HTTP/2 where the backend offers it.
//!
//! Each thread gets its own client and connection pool. The proxy runs one single-threaded
//! runtime per core, so a request, its upstream connection and the client connection are all
//! driven by the same thread: no cross-thread wake-ups, which profiling showed to be the
//! largest cost of a shared pool on a multi-threaded runtime.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot load the system's TLS root certificates")]
pub struct NoRootCertificates(#[source] std::io::Error);

/// How to build upstream clients; hands out the calling thread's client.
pub struct Upstream {
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
}

thread_local! {
    /// This thread's client for each live [`Upstream`].
    static CLIENTS: RefCell<Vec<(Weak<Upstream>, UpstreamClient)>> = const { RefCell::new(Vec::new()) };
}

impl Upstream {
    pub fn new(connect_timeout: Duration) -> Result<Arc<Self>, NoRootCertificates> {
        let tls = rustls::ClientConfig::builder()
            .with_native_roots()
            .map_err(NoRootCertificates)?
            .with_no_client_auth();
        Ok(Arc::new(Self {
            connect_timeout,
            tls,
        }))
    }

    fn client(&self) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https)
    }

    /// Sends `request` on this thread's connection pool.
    pub fn request(self: &Arc<Self>, request: Request<Full<Bytes>>) -> ResponseFuture {
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some((_, client)) = clients
                .iter()
                .find(|(owner, _)| owner.as_ptr() == Arc::as_ptr(self))
            {
                return client.request(request);
            }
            // First use on this thread (or a new config's Upstream): forget dead ones.
            clients.retain(|(owner, _)| owner.strong_count() > 0);
            let client = self.client();
            let future = client.request(request);
            clients.push((Arc::downgrade(self), client));
            future
        })
    }
}

/// [`Upstream::request`] as a tower service, for tower's latency-measuring wrappers.
#[derive(Clone)]
pub struct UpstreamService(pub Arc<Upstream>);

impl tower::Service<Request<Full<Bytes>>> for UpstreamService {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.0.request(request)
    }
}

pin_project_lite::pin_project! {
    /// A backend's response body: what the proxy already read of it (only ever a 404 it had
    /// to look into), then the rest as it arrives.
    pub struct UpstreamBody {
        read: Option<Bytes>,
        #[pin]
        rest: Option<Incoming>,
    }
}

impl UpstreamBody {
    pub fn streaming(body: Incoming) -> Self {
        Self {
            read: None,
            rest: Some(body),
        }
    }

    /// `read` first, then whatever `rest` still has.
    pub fn partly_read(read: Bytes, rest: Option<Incoming>) -> Self {
        Self {
            read: (!read.is_empty()).then_some(read),
            rest,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(read) = this.read.take() {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_none() && self.rest.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.read.as_ref().map_or(0, |r| r.len() as u64);
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint);
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint.set_lower(rest.lower() + read);
        hint
    }
}
