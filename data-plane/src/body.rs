//! The response body handed to the client: upstream frames passed through as they arrive,
//! observed on the way for time-to-first-byte and token usage, and cut when the backend goes
//! silent for longer than the pool's idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use http_body_util::Full;

use tracing::Span;

use crate::backend::BackendEndpoint;
use crate::client_error::ClientError;
use crate::clock::Nanos;
use crate::idle_timer::IdleTimer;
use crate::metrics::{EjectionReason, TokenCounters};
use crate::trace;
use crate::upstream::UpstreamBody;
use crate::usage::UsageScanner;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error that aborts a non-SSE body whose backend went silent: the client's HTTP library
/// sees a broken response, never a truncated one that looks complete.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} in the middle of the response")]
pub struct UpstreamIdle(std::time::Duration);

pin_project_lite::pin_project! {
    pub struct ObservedBody {
        #[pin]
        inner: UpstreamBody,
        #[pin]
        idle: IdleTimer,
        // Server-sent events: an idle backend ends the stream with an error event.
        sse: bool,
        // The idle timeout fired; nothing more is passed on.
        cut: bool,
        accounting: Accounting,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            // Also reached when the client goes away mid-stream: count what was seen.
            this.project().accounting.report();
        }
    }
}

/// What is learnt from a response body while it passes.
struct Accounting {
    backend: Arc<BackendEndpoint>,
    started: Instant,
    first_byte_seen: bool,
    usage: UsageScanner,
    tokens: TokenCounters,
    /// The request's and the answering attempt's spans, while traces are exported: they end
    /// with the body, carrying its token counts. Boxed so the untraced body stays small.
    spans: Option<Box<[Span; 2]>>,
    response_model: Option<String>,
    reported: bool,
}

/// What the proxy answers with: a passed-through upstream body, or one it made itself.
pub type ProxyBody = Either<ObservedBody, Full<Bytes>>;

impl ObservedBody {
    pub fn new(
        inner: UpstreamBody,
        idle_timeout: std::time::Duration,
        sse: bool,
        backend: Arc<BackendEndpoint>,
        started: Instant,
        tokens: TokenCounters,
        spans: Option<Box<[Span; 2]>>,
    ) -> Self {
        Self {
            inner,
            idle: IdleTimer::new(idle_timeout),
            sse,
            cut: false,
            accounting: Accounting {
                backend,
                started,
                first_byte_seen: false,
                usage: UsageScanner::default(),
                tokens,
                spans,
                response_model: None,
                reported: false,
            },
        }
    }
}

impl Accounting {
    fn data(&mut self, data: &[u8]) {
        if !self.first_byte_seen {
            self.first_byte_seen = true;
            self.backend
                .metrics
                .first_byte
                .observe(self.started.elapsed().as_secs_f64());
        }
        // Azure's first stream chunk (prompt filter results) names no model: look further.
        if self.spans.is_some() && self.response_model.is_none() {
            self.response_model = trace::response_model(data).filter(|m| !m.is_empty());
        }
        self.usage.feed(data);
    }

    /// The backend went silent mid-response: count it, log it, eject the backend briefly.
    fn idle_timeout(&mut self, idle: std::time::Duration) {
        let backend = &self.backend;
        tracing::warn!(backend.name = %backend.spec.name, idle_secs = idle.as_secs(), "backend went silent in the middle of a response; cutting it");
        backend.eject(Nanos::now(), EjectionReason::idle_timeout);
        if let Some(spans) = &self.spans {
            trace::failed(&spans[0], "idle_timeout");
        }
        self.report();
    }

    fn report(&mut self) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        if let Some(usage) = self.usage.found {
            self.tokens.input.inc_by(usage.prompt_tokens);
            self.tokens.output.inc_by(usage.completion_tokens);
        }
        if let Some(spans) = self.spans.take() {
            let [request, attempt] = &*spans;
            trace::usage(
                [request, attempt],
                self.usage.found,
                self.response_model.as_deref(),
            );
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.cut {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.accounting.data(data);
                }
                this.idle.activity();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                this.accounting.report();
                Poll::Ready(None)
            }
            Poll::Pending => {
                std::task::ready!(this.idle.as_mut().poll_expired(cx));
                let limit = this.idle.limit();
                *this.cut = true;
                this.accounting.idle_timeout(limit);
                Poll::Ready(Some(if *this.sse {
                    Ok(Frame::data(idle_error_event(limit)))
                } else {
                    Err(UpstreamIdle(limit).into())
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The last event of a stream whose backend went silent: an error object in OpenAI's shape,
/// on which the official SDKs raise `APIError`. The blank lines first end any event the
/// backend left half-sent (a client ignores blank lines between events).
fn idle_error_event(limit: std::time::Duration) -> Bytes {
    Bytes::from(format!(
        "\n\ndata: {}\n\n",
        ClientError::upstream_idle(limit).body()
    ))
}
