//! A client's request body that is read to its end even when the proxy answers without it.
//!
//! A connection closed with the client's bytes still unread is reset, not closed, and the
//! reset can reach the client before the answer does: a client uploading a body the proxy
//! refuses (413 once it is over the limit, 401 for a wrong key on a large upload) then sees a
//! broken connection instead of the error (`IncompleteMessage` in hyper; seen in the tests on
//! a loaded host). So what the proxy leaves unread is read and dropped in the background, as
//! nginx's lingering close does, for a bounded time: the bytes are not kept, and a client can
//! send them at the proxy whether it reads them or not.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// How long a refused body is read at most before the connection is let go.
const DISCARD_FOR: Duration = Duration::from_secs(5);

pub struct RequestBody {
    /// `None` once read to its end, or dropped.
    inner: Option<Incoming>,
}

impl RequestBody {
    pub fn new(inner: Incoming) -> Self {
        Self { inner: Some(inner) }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if frame.is_none() {
            // Read to its end: nothing is left to discard. (hyper's body does not say so
            // itself when it was chunked: its `is_end_stream` stays false.)
            self.inner = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(rest) = self.inner.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        // Outside a runtime (never in the proxy) the connection is simply let go.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(rest));
        }
    }
}

async fn discard(mut body: Incoming) {
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}
