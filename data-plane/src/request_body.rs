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

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// How long a refused body is read at most before the connection is let go.
const DISCARD_FOR: Duration = Duration::from_secs(5);

pub struct RequestBody {
    /// `None` once read to its end, or dropped.
    inner: Option<Incoming>,
}

/// Why a body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// More than the limit came.
    TooLarge,
    /// The client's connection failed or broke the body's framing.
    Failed,
}

impl RequestBody {
    pub fn new(inner: Incoming) -> Self {
        Self { inner: Some(inner) }
    }

    /// The whole body, up to `limit` bytes (trailers are not kept). A body that comes in one
    /// frame, as a small upload does, is returned as it came, with no buffer of its own; only a
    /// body of several frames is copied into one.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, Unread> {
        read_to_end(self, limit).await
    }
}

async fn read_to_end<B>(body: &mut B, limit: usize) -> Result<Bytes, Unread>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Unread::Failed)?.into_data() else {
            continue;
        };
        let read = joined.as_ref().map_or(first.len(), BytesMut::len) + data.len();
        if read > limit {
            return Err(Unread::TooLarge);
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let expected = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
                let mut buffer = BytesMut::with_capacity(read.saturating_add(expected).min(limit));
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body of the given frames, one per poll; `None` is a failed read.
    struct Frames(VecDeque<Option<Frame<Bytes>>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|frame| frame.ok_or("connection reset")),
            )
        }
    }

    fn data(bytes: &'static str) -> Option<Frame<Bytes>> {
        Some(Frame::data(Bytes::from_static(bytes.as_bytes())))
    }

    async fn read(frames: Vec<Option<Frame<Bytes>>>, limit: usize) -> Result<Bytes, Unread> {
        read_to_end(&mut Frames(frames.into()), limit).await
    }

    #[tokio::test]
    async fn one_frame_is_returned_as_it_came() {
        let frame = Bytes::from_static(b"{\"model\":\"gpt-4o\"}");
        let whole = read(vec![Some(Frame::data(frame.clone()))], 64)
            .await
            .unwrap();
        assert_eq!(whole.as_ptr(), frame.as_ptr(), "not copied");
        assert_eq!(read(vec![], 64).await, Ok(Bytes::new()));
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_and_trailers_left_out() {
        let trailers = Some(Frame::trailers(http::HeaderMap::new()));
        let frames = vec![
            data("{\"a\":"),
            data(""),
            data("1,"),
            trailers,
            data("\"b\":2}"),
        ];
        assert_eq!(
            read(frames, 64).await,
            Ok(Bytes::from_static(b"{\"a\":1,\"b\":2}"))
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_or_broken_is_refused() {
        let exactly = vec![data("12345"), data("678")];
        assert_eq!(read(exactly, 8).await, Ok(Bytes::from_static(b"12345678")));
        assert_eq!(
            read(vec![data("123456789")], 8).await,
            Err(Unread::TooLarge)
        );
        let over_later = vec![data("1234"), data("5678"), data("9")];
        assert_eq!(read(over_later, 8).await, Err(Unread::TooLarge));
        assert_eq!(read(vec![data("12"), None], 8).await, Err(Unread::Failed));
    }
}
