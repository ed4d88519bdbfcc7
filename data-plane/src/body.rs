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

use crate::backend::BackendEndpoint;
use crate::client_error::ClientError;
use crate::clock::Nanos;
use crate::idle_timer::IdleTimer;
use crate::metrics::{BodyTimes, BodyTiming, EjectionReason, TokenCounters};
use crate::quota::Admitted;
use crate::report::CallUsage;
use crate::trace::{self, Traced};
use crate::upstream::UpstreamBody;
use crate::usage::UsageScanner;
use crate::usage_event::UsageEventFilter;

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
        // Present when the proxy asked for usage the client did not: its event is removed.
        usage_events: Option<Box<UsageEventFilter>>,
        accounting: Accounting,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            // Also reached when the client goes away mid-stream: count what was seen.
            this.project().accounting.report();
        }
    }
}

/// How a body passes: its idle limit and what its stream needs.
pub struct Passing {
    pub idle_timeout: std::time::Duration,
    pub sse: bool,
    /// The usage-only event was asked for by the proxy, not the client.
    pub strip_usage_event: bool,
}

/// What is learnt from a response body while it passes.
pub struct Accounting {
    backend: Arc<BackendEndpoint>,
    started: Instant,
    /// Seconds from the request to the first body data, once seen.
    first_byte: Option<f64>,
    /// Server-sent events, whose first data is the first token.
    sse: bool,
    /// The client metrics' timing of this call, until the body ends.
    client: Option<BodyTiming>,
    usage: UsageScanner,
    tokens: Arc<TokenCounters>,
    /// The request's and the answering attempt's spans, while traces are exported: they end
    /// with the body, carrying its token counts. Boxed so the untraced body stays small.
    spans: Option<Box<[Traced; 2]>>,
    response_model: Option<String>,
    /// The client key's limits hold an estimate for this call until its usage is known.
    quota: Option<Admitted>,
    /// The report's count of the key's tokens and cost on this pool.
    report: Option<CallUsage>,
    /// The backend answered with a success (a refusal consumed nothing).
    succeeded: bool,
    reported: bool,
}

/// What the proxy answers with: a passed-through upstream body, or one it made itself. The
/// passed-through one is boxed: inline it made the response 712 bytes, copied whole at each
/// of the dozen moves between the backend's answer and hyper's writing of it (profiled: the
/// largest share of the proxy's `memcpy`), where one allocation per call now moves a pointer.
pub type ProxyBody = Either<Pin<Box<ObservedBody>>, Full<Bytes>>;

impl ObservedBody {
    pub fn new(inner: UpstreamBody, passing: Passing, accounting: Accounting) -> Self {
        Self {
            inner,
            idle: IdleTimer::new(passing.idle_timeout, accounting.started),
            sse: passing.sse,
            cut: false,
            usage_events: (passing.sse && passing.strip_usage_event).then(Box::default),
            accounting: Accounting {
                sse: passing.sse,
                ..accounting
            },
        }
    }

    /// Times the call for the client metrics when the body ends.
    pub fn time_for_client(self: Pin<&mut Self>, timing: BodyTiming) {
        self.project().accounting.client = Some(timing);
    }
}

impl Accounting {
    pub fn new(
        backend: Arc<BackendEndpoint>,
        started: Instant,
        tokens: Arc<TokenCounters>,
        spans: Option<Box<[Traced; 2]>>,
        quota: Option<Admitted>,
        report: Option<CallUsage>,
        succeeded: bool,
    ) -> Self {
        Self {
            backend,
            started,
            first_byte: None,
            sse: false,
            client: None,
            usage: UsageScanner::default(),
            tokens,
            spans,
            response_model: None,
            quota,
            report,
            succeeded,
            reported: false,
        }
    }

    /// Counts a frame; whether it may hold a usage object ([`UsageScanner::feed`]).
    fn data(&mut self, data: &[u8]) -> bool {
        if self.first_byte.is_none() {
            let seconds = self.started.elapsed().as_secs_f64();
            self.first_byte = Some(seconds);
            self.backend.metrics.first_byte.observe(seconds);
        }
        // Azure's first stream chunk (prompt filter results) names no model: look further.
        if self.spans.is_some() && self.response_model.is_none() {
            self.response_model = trace::response_model(data).filter(|m| !m.is_empty());
        }
        self.usage.feed(data)
    }

    /// The backend went silent mid-response: count it, log it, eject the backend briefly.
    fn idle_timeout(&mut self, idle: std::time::Duration) {
        let backend = &self.backend;
        tracing::warn!(backend.name = %backend.spec.name, idle_secs = idle.as_secs(), "backend went silent in the middle of a response; cutting it");
        backend.eject(Nanos::now(), EjectionReason::idle_timeout);
        if let Some(spans) = &self.spans {
            spans[0].failed("idle_timeout");
        }
        self.report();
    }

    fn report(&mut self) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        if let Some(client) = self.client.take() {
            client.ended(BodyTimes {
                ended: self.started.elapsed().as_secs_f64(),
                first_event: self.first_byte.filter(|_| self.sse),
                output_tokens: self.usage.found.map(|usage| usage.completion_tokens),
            });
        }
        if let Some(usage) = self.usage.found {
            self.tokens
                .record(usage.prompt_tokens, usage.completion_tokens);
            if let Some(report) = &self.report {
                report.consumed(&usage);
            }
        }
        if let Some(quota) = self.quota.take() {
            match self.usage.found {
                Some(usage) => quota.settle(
                    usage.prompt_tokens,
                    usage.cached_tokens(),
                    usage.completion_tokens,
                ),
                // Refused or failed: nothing was consumed.
                None if !self.succeeded => quota.refund(),
                // A success without usage (an interrupted stream, an operation that reports
                // none): the estimate stands.
                None => {}
            }
        }
        if let Some(spans) = self.spans.take() {
            for span in spans.iter() {
                span.usage(self.usage.found, self.response_model.as_deref());
            }
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
        loop {
            return match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle.as_mut().activity();
                    let Some(data) = frame.data_ref() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    let may_hold_usage = this.accounting.data(data);
                    let Some(filter) = this.usage_events.as_mut() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    let kept = filter.pass(data, may_hold_usage);
                    if kept.is_empty() {
                        continue;
                    }
                    Poll::Ready(Some(Ok(Frame::data(kept))))
                }
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => {
                    this.accounting.report();
                    match this.usage_events.as_mut().map(|f| f.finish()) {
                        Some(rest) if !rest.is_empty() => Poll::Ready(Some(Ok(Frame::data(rest)))),
                        _ => Poll::Ready(None),
                    }
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
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || (self.usage_events.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // A filtered stream is shorter than the backend's by an unknown amount.
        match self.usage_events {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
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
