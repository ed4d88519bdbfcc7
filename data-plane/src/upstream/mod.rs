//! Calling backends: pooled keep-alive connections per proxy thread, rustls with the
//! system's roots, HTTP/2 where the backend offers it by ALPN.
//!
//! The proxy runs one single-threaded runtime per core, and each thread has its own pool, so
//! a request, its upstream connection and the client connection are all driven by the same
//! thread: no cross-thread wake-ups. HTTP/1 connections go further and have no task of their
//! own ([`http1`] says why).

mod http1;
mod pool;
mod stream;

pub use self::pool::sweep_this_thread;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower::Service as _;

use self::http1::{Http1, Http1Body};
pub use self::pool::Origin;
use self::pool::{Checkout, PoolHome, with_pool};
use self::stream::BackendStream;

/// The request body sent upstream: the client's, read once and replayed on retries.
pub type Payload = Full<Bytes>;
type Connector = HttpsConnector<HttpConnector>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("cannot load the system's TLS root certificates")]
pub struct NoRootCertificates(#[source] std::io::Error);

/// Why a backend gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the backend: {0}")]
    Connect(#[source] BoxError),
    #[error("the exchange with the backend failed: {0}")]
    Http(#[from] hyper::Error),
}

/// How to reach backends; each thread keeps its own connections ([`pool`]).
pub struct Upstream {
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
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

    fn connector(&self) -> Connector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http)
    }

    /// Sends `request` (origin form: path and query) to `origin` on a connection of this
    /// thread's pool.
    ///
    /// An `async` block rather than an `async fn`: the future of an `async fn` keeps each
    /// argument twice, as it was passed and as the local it is moved into on the first poll
    /// (`-Zprint-type-sizes`: 256 bytes each for the request), and copies it from one to the
    /// other. A block's captures are used where they are.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future keeps the request twice"
    )]
    pub fn request(
        self: &Arc<Self>,
        origin: &Origin,
        mut request: Request<Payload>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, UpstreamError>> {
        async move {
            loop {
                let (checkout, host) = with_pool(self, |pool| pool.checkout(origin));
                match checkout {
                    Checkout::Idle(mut connection) => {
                        if !connection.reusable().await {
                            continue;
                        }
                        request.headers_mut().insert(HOST, host);
                        match self.send_http1(connection, request, origin).await {
                            Ok(response) => return Ok(response),
                            // Closed before the request went out (the backend's keep-alive
                            // ended just then): nothing was sent, so try another connection.
                            Err(mut failed) => match failed.take_message() {
                                Some(unsent) => request = unsent,
                                None => return Err(failed.into_error().into()),
                            },
                        }
                    }
                    Checkout::Shared(sender) => return send_http2(sender, request, origin).await,
                    Checkout::Connect(connector) => {
                        // Boxed: connecting (TCP, TLS, HTTP/2 handshakes) is a large future, and
                        // inline it would make every request's future as large, and every move
                        // of it a long copy.
                        return Box::pin(self.connect_and_send(connector, request, host, origin))
                            .await;
                    }
                }
            }
        }
    }

    async fn connect_and_send(
        self: &Arc<Self>,
        mut connector: Connector,
        mut request: Request<Payload>,
        host: http::HeaderValue,
        origin: &Origin,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let io = connector
            .call(origin.absolute(request.uri()))
            .await
            .map_err(UpstreamError::Connect)?;
        let negotiated_h2 = io.connected().is_negotiated_h2();
        let io = BackendStream::from(io);
        if negotiated_h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream HTTP/2 connection closed with an error");
                }
            });
            with_pool(self, |pool| pool.share(origin, &sender));
            return send_http2(sender, request, origin).await;
        }
        let connection = Http1::handshake(io).await?;
        request.headers_mut().insert(HOST, host);
        self.send_http1(connection, request, origin)
            .await
            .map_err(|failed| failed.into_error().into())
    }

    /// HTTP/1 sends the path only (origin form); the host went into `Host`.
    async fn send_http1(
        self: &Arc<Self>,
        connection: Http1,
        request: Request<Payload>,
        origin: &Origin,
    ) -> Result<Response<ResponseBody>, hyper::client::conn::TrySendError<Request<Payload>>> {
        let (response, connection) = connection.send(request).await?;
        let home = PoolHome::here(self);
        Ok(response.map(|body| {
            ResponseBody::Http1(Http1Body::new(body, connection, home, origin.clone()))
        }))
    }
}

/// HTTP/2 sends the scheme and authority as pseudo-headers, taken from an absolute URI.
async fn send_http2(
    mut sender: http2::SendRequest<Payload>,
    mut request: Request<Payload>,
    origin: &Origin,
) -> Result<Response<ResponseBody>, UpstreamError> {
    *request.uri_mut() = origin.absolute(request.uri());
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    Ok(response.map(ResponseBody::Http2))
}

/// [`Upstream::request`] as a tower service of (origin, request), for tower's
/// latency-measuring wrappers.
#[derive(Clone)]
pub struct UpstreamService(pub Arc<Upstream>);

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, UpstreamError>> + Send>>;

impl tower::Service<(Origin, Request<Payload>)> for UpstreamService {
    type Response = Response<ResponseBody>;
    type Error = UpstreamError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (origin, request): (Origin, Request<Payload>)) -> Self::Future {
        let upstream = self.0.clone();
        Box::pin(async move { upstream.request(&origin, request).await })
    }
}

/// A backend's response body as its connection delivers it.
pub enum ResponseBody {
    Http1(Http1Body),
    Http2(Incoming),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Http1(body) => Pin::new(body).poll_frame(cx),
            Self::Http2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(body) => body.is_end_stream(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(body) => body.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A backend's response body: what the proxy already read of it (only ever a 404 it had
    /// to look into), then the rest as it arrives.
    pub struct UpstreamBody {
        read: Option<Bytes>,
        #[pin]
        rest: Option<ResponseBody>,
    }
}

impl UpstreamBody {
    pub fn streaming(body: ResponseBody) -> Self {
        Self {
            read: None,
            rest: Some(body),
        }
    }

    /// `read` first, then whatever `rest` still has.
    pub fn partly_read(read: Bytes, rest: Option<ResponseBody>) -> Self {
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
        self.read.is_none() && self.rest.as_ref().is_none_or(ResponseBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.read.as_ref().map_or(0, |r| r.len() as u64);
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), ResponseBody::size_hint);
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint.set_lower(rest.lower() + read);
        hint
    }
}
