//! HTTP/1 connections driven by their user rather than by a task of their own: the request
//! drives its connection until the response head is in, then the response body drives it
//! while it streams.
//!
//! Profiling showed why: with a connection task per connection (hyper-util's pool), every
//! body chunk cost a wake-up of that task and a hop through a channel, and the client's side
//! saw one chunk per poll, so it wrote every SSE event with a syscall of its own. Driven
//! inline, the chunks the connection already read are handed on in the same poll and leave
//! together.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};

use super::Payload;
use super::pool::{Origin, PoolHome};
use super::stream::BackendStream;

/// Boxed once per connection: hyper's connection state and a TLS session are large, and a
/// connection moves from the pool to the request to its body and back (profiled: inline, the
/// moves cost more than the exchange).
pub struct Http1(Box<Driven>);

struct Driven {
    sender: http1::SendRequest<Payload>,
    connection: http1::Connection<BackendStream, Payload>,
    /// The connection future finished (closed, or the backend said `Connection: close`); it
    /// must not be polled again.
    closed: bool,
}

impl Http1 {
    pub async fn handshake(io: BackendStream) -> hyper::Result<Self> {
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        Ok(Self(Box::new(Driven {
            sender,
            connection,
            closed: false,
        })))
    }

    /// Moves the connection's I/O along (reads, writes, frames to the body); false once it
    /// has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.0.drive(cx)
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed
    }

    /// Whether an idle connection can take a request now: the backend may have closed it
    /// while it sat in the pool.
    pub async fn reusable(&mut self) -> bool {
        let driven = &mut *self.0;
        poll_fn(|cx| {
            Poll::Ready(
                driven.drive(cx) && matches!(driven.sender.poll_ready(cx), Poll::Ready(Ok(()))),
            )
        })
        .await
    }

    /// Sends `request` and drives the connection until the response head has arrived. A
    /// request the connection could not take comes back in the error, untouched.
    pub async fn send(
        mut self,
        request: Request<Payload>,
    ) -> Result<(Response<Incoming>, Self), TrySendError<Request<Payload>>> {
        let mut response = pin!(self.0.sender.try_send_request(request));
        let head = poll_fn(|cx| {
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await?;
        Ok((head, self))
    }
}

impl Driven {
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed
            && let Poll::Ready(outcome) = Pin::new(&mut self.connection).poll(cx)
        {
            self.closed = true;
            if let Err(error) = outcome {
                tracing::debug!(%error, "upstream connection closed with an error");
            }
        }
        !self.closed
    }
}

/// A response body read from an [`Http1`] connection, which it drives; once the body has
/// been read to its end, the connection goes back to the pool it came from.
pub struct Http1Body {
    body: Incoming,
    connection: Option<Http1>,
    home: PoolHome,
    origin: Origin,
    ended: bool,
    /// A frame was handed on since the body last had to wait.
    passed_data: bool,
    /// The backend failed right behind data handed on in the same poll: held back one poll.
    failure: Option<hyper::Error>,
}

impl Http1Body {
    pub fn new(body: Incoming, connection: Http1, home: PoolHome, origin: Origin) -> Self {
        Self {
            body,
            connection: Some(connection),
            home,
            origin,
            ended: false,
            passed_data: false,
            failure: None,
        }
    }
}

impl Body for Http1Body {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(failure) = this.failure.take() {
            return Poll::Ready(Some(Err(failure)));
        }
        if let Some(connection) = &mut this.connection {
            connection.drive(cx);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            // Driven inline, a backend that breaks off mid-stream can deliver its last frames
            // and the failure in one poll; the client's side would then abort before writing
            // those frames out. Waiting one poll lets them leave first, as they would have
            // had the failure come a moment later.
            Poll::Ready(Some(Err(failure))) if this.passed_data => {
                this.passed_data = false;
                this.failure = Some(failure);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(frame)) => {
                this.passed_data = frame.is_ok();
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                this.passed_data = false;
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Http1Body {
    fn drop(&mut self) {
        // A body left unread mid-way leaves the connection in the middle of a message: it
        // cannot carry another one and is closed with the body.
        if !self.is_end_stream() {
            return;
        }
        if let Some(connection) = self.connection.take()
            && !connection.is_closed()
        {
            self.home.give_back(&self.origin, connection);
        }
    }
}
