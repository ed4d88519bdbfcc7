//! The response body handed to the client: upstream frames passed through as they arrive,
//! observed on the way for time-to-first-byte and token usage.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use http_body_util::Full;
use hyper::body::Incoming;

use tracing::Span;

use crate::backend::BackendEndpoint;
use crate::metrics::TokenCounters;
use crate::trace;
use crate::usage::UsageScanner;

pin_project_lite::pin_project! {
    pub struct ObservedBody {
        #[pin]
        inner: Incoming,
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
        inner: Incoming,
        backend: Arc<BackendEndpoint>,
        started: Instant,
        tokens: TokenCounters,
        spans: Option<Box<[Span; 2]>>,
    ) -> Self {
        Self {
            inner,
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.accounting.data(data);
                }
            }
            Poll::Ready(None) => this.accounting.report(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
