//! Server-sent events for `"stream": true`, one body frame per event.
//!
//! Order: Azure's prompt-filter chunk (Azure paths only), one chunk per token (the first also
//! carrying `role`), a finish chunk with an empty delta, the usage chunk when
//! `stream_options.include_usage` is set, then `data: [DONE]`. No comment lines, ever: older
//! openai-python versions crash on them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use futures_core::Stream;
use serde::Serialize;
use thiserror::Error;
use tokio::time::{Instant, Sleep};

use super::bodies::{
    ContentFilterResults, PROMPT_FILTER_RESULTS, PromptFilterResult, SAFE, SYSTEM_FINGERPRINT,
    Usage,
};
use super::faults::STALL_LIMIT;
use super::routing::{Flavor, Operation};
use super::script::Script;

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Azure's first event: no id, no choices, only the prompt's filter verdict.
#[derive(Serialize)]
struct PromptFilterChunk {
    id: &'static str,
    object: &'static str,
    created: u64,
    model: &'static str,
    choices: [(); 0],
    prompt_filter_results: &'static [PromptFilterResult],
}

#[derive(Serialize)]
struct Chunk<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [C],
    /// Only present when usage was asked for: `null` until the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<&'static ContentFilterResults>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<&'static ContentFilterResults>,
}

/// Everything a stream needs, owned so the body can outlive the handler.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub operation: Operation,
    pub flavor: Flavor,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub script: Arc<Script>,
    pub tokens: u32,
    pub finish_reason: &'static str,
    pub usage: Usage,
    pub include_usage: bool,
    /// Pause before each token.
    pub interval: Option<Duration>,
    /// Where an injected fault ends the stream early.
    pub cutoff: Option<Cutoff>,
}

/// How an injected fault ends a stream early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cutoff {
    /// Break the body off after this many events.
    AbortAfter(u32),
    /// Send nothing more after this many events, keeping the connection open (see [`Stall`]).
    StallAfter(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    PromptFilter,
    Token(u32),
    Finish,
    Usage,
    Done,
}

impl StreamPlan {
    /// The event at `position`, or `None` past the end.
    fn event(&self, position: u32) -> Option<Event> {
        let mut position = position;
        if self.flavor == Flavor::Azure {
            if position == 0 {
                return Some(Event::PromptFilter);
            }
            position -= 1;
        }
        if position < self.tokens {
            return Some(Event::Token(position));
        }
        position -= self.tokens;
        let tail: &[Event] = if self.include_usage {
            &[Event::Finish, Event::Usage, Event::Done]
        } else {
            &[Event::Finish, Event::Done]
        };
        tail.get(position as usize).copied()
    }

    fn render(&self, event: Event) -> Bytes {
        match event {
            Event::PromptFilter => sse(&PromptFilterChunk {
                id: "",
                object: "",
                created: 0,
                model: "",
                choices: [],
                prompt_filter_results: &PROMPT_FILTER_RESULTS,
            }),
            Event::Done => Bytes::from_static(DONE),
            Event::Token(index) => {
                let text = self.script.token(index);
                let role = (index == 0).then_some("assistant");
                self.choice_chunk(role, Some(text), None)
            }
            Event::Finish => self.choice_chunk(None, None, Some(self.finish_reason)),
            Event::Usage => match self.operation {
                Operation::Completions => self.chunk::<TextChoice<'_>>(&[], Some(self.usage)),
                _ => self.chunk::<ChatChoice<'_>>(&[], Some(self.usage)),
            },
        }
    }

    fn choice_chunk(
        &self,
        role: Option<&'static str>,
        content: Option<&str>,
        finish_reason: Option<&'static str>,
    ) -> Bytes {
        // Azure annotates every chunk that carries text.
        let filters = content.and((self.flavor == Flavor::Azure).then_some(&SAFE));
        match self.operation {
            Operation::Completions => self.chunk(
                &[TextChoice {
                    text: content.unwrap_or_default(),
                    index: 0,
                    finish_reason,
                    logprobs: None,
                    content_filter_results: filters,
                }],
                None,
            ),
            _ => self.chunk(
                &[ChatChoice {
                    index: 0,
                    delta: Delta { role, content },
                    finish_reason,
                    logprobs: None,
                    content_filter_results: filters,
                }],
                None,
            ),
        }
    }

    fn chunk<C: Serialize>(&self, choices: &[C], usage: Option<Usage>) -> Bytes {
        let object = match self.operation {
            Operation::Completions => "text_completion",
            _ => "chat.completion.chunk",
        };
        sse(&Chunk {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }
}

/// `data: {json}\n\n`.
fn sse(value: &impl Serialize) -> Bytes {
    let mut event = Vec::with_capacity(256);
    event.extend_from_slice(b"data: ");
    // Only strings, numbers and options are serialized, which cannot fail; an empty object
    // still keeps the SSE framing intact.
    if serde_json::to_writer(&mut event, value).is_err() {
        event.extend_from_slice(b"{}");
    }
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// The error that breaks a body off. hyper then closes the connection mid-message, which is
/// what a client sees when an upstream dies.
#[derive(Debug, Error)]
#[error("mock upstream aborted the response body (injected fault)")]
pub struct InjectedAbort;

/// The events of a [`StreamPlan`], paced and possibly aborted or stalled.
pub(crate) struct SseStream {
    plan: StreamPlan,
    position: u32,
    /// Set on first poll so the response latency does not eat into token pacing.
    started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    yielded_before_abort: bool,
    stall: Stall,
}

impl SseStream {
    pub fn new(plan: StreamPlan) -> Self {
        Self {
            plan,
            position: 0,
            started: None,
            sleep: None,
            yielded_before_abort: false,
            stall: Stall::default(),
        }
    }

    /// Waits until token `index` is due; `Ready` at once when unpaced.
    fn poll_pace(&mut self, index: u32, cx: &mut Context<'_>) -> Poll<()> {
        let Some(interval) = self.plan.interval else {
            return Poll::Ready(());
        };
        let started = *self.started.get_or_insert_with(Instant::now);
        // Deadlines from the start, not from the previous token, so pacing does not drift.
        let due = started + interval * (index + 1);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        sleep.as_mut().poll(cx)
    }
}

impl Stream for SseStream {
    type Item = Result<Bytes, InjectedAbort>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.plan.cutoff {
            Some(Cutoff::AbortAfter(events)) if events == this.position => {
                // hyper writes a frame out only when the body has nothing ready; returning the
                // error straight after the last frame would discard what was sent so far.
                if !this.yielded_before_abort {
                    this.yielded_before_abort = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err(InjectedAbort)));
            }
            Some(Cutoff::StallAfter(events)) if events == this.position => {
                return this.stall.poll(cx).map(Some);
            }
            _ => {}
        }
        let Some(event) = this.plan.event(this.position) else {
            return Poll::Ready(None);
        };
        if let Event::Token(index) = event {
            ready!(this.poll_pace(index, cx));
        }
        this.position += 1;
        Poll::Ready(Some(Ok(this.plan.render(event))))
    }
}

/// The hang of a stalled response: `Pending` (hyper meanwhile writes out what was sent and
/// drops the body when the client goes away), until [`STALL_LIMIT`] has passed; then the body
/// is broken off.
#[derive(Default)]
pub(crate) struct Stall {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, InjectedAbort>> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_LIMIT)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(InjectedAbort))
    }
}

/// A plain (JSON) body that hangs half-way: the first half of the body, then a [`Stall`]. The
/// response carries the full `content-length`, so the client knows it is incomplete.
pub(crate) struct StalledBody {
    first_half: Option<Bytes>,
    stall: Stall,
    failed: bool,
}

impl StalledBody {
    pub fn new(mut body: Bytes) -> Self {
        body.truncate(body.len() / 2);
        Self {
            first_half: Some(body),
            stall: Stall::default(),
            failed: false,
        }
    }
}

impl Stream for StalledBody {
    type Item = Result<Bytes, InjectedAbort>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if let Some(first_half) = this.first_half.take() {
            return Poll::Ready(Some(Ok(first_half)));
        }
        let stalled = ready!(this.stall.poll(cx));
        this.failed = true;
        Poll::Ready(Some(stalled))
    }
}

/// A body that fails before its first byte: hyper then drops the connection without even
/// writing the response head, so the client sees the connection close mid-request.
pub(crate) struct ResetBody {
    failed: bool,
}

impl ResetBody {
    pub fn new() -> Self {
        Self { failed: false }
    }
}

impl Stream for ResetBody {
    type Item = Result<Bytes, InjectedAbort>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        this.failed = true;
        Poll::Ready(Some(Err(InjectedAbort)))
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use serde_json::{Value, json};

    use super::*;

    fn plan(flavor: Flavor, operation: Operation, include_usage: bool) -> StreamPlan {
        StreamPlan {
            operation,
            flavor,
            id: "chatcmpl-1".to_owned(),
            created: 9,
            model: "gpt-4o".to_owned(),
            script: Arc::new(Script::new(3)),
            tokens: 2,
            finish_reason: "length",
            usage: Usage::new(5, 2),
            include_usage,
            interval: None,
            cutoff: None,
        }
    }

    async fn collect(plan: StreamPlan) -> (Vec<Bytes>, bool) {
        let mut stream = SseStream::new(plan);
        let mut events = Vec::new();
        loop {
            match poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
                Some(Ok(event)) => events.push(event),
                Some(Err(InjectedAbort)) => return (events, true),
                None => return (events, false),
            }
        }
    }

    fn json(event: &Bytes) -> Value {
        let text = std::str::from_utf8(event).expect("utf-8");
        let payload = text
            .strip_prefix("data: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .expect("SSE framing");
        serde_json::from_str(payload).expect("JSON event")
    }

    #[tokio::test]
    async fn azure_chat_stream_has_every_event_in_order() {
        let (events, aborted) =
            collect(plan(Flavor::Azure, Operation::ChatCompletions, true)).await;
        assert!(!aborted);
        assert_eq!(events.len(), 6);
        assert_eq!(
            json(&events[0])["prompt_filter_results"][0]["prompt_index"],
            0
        );
        assert_eq!(json(&events[0])["id"], "");
        let first = json(&events[1]);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Sluice "})
        );
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(first["usage"], Value::Null);
        assert_eq!(
            json(&events[2])["choices"][0]["delta"],
            json!({"content": "mock "})
        );
        let finish = json(&events[3]);
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let usage = json(&events[4]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 7);
        assert_eq!(&events[5][..], DONE);
    }

    #[tokio::test]
    async fn openai_completion_stream_without_usage() {
        let (events, _) = collect(plan(Flavor::OpenAi, Operation::Completions, false)).await;
        assert_eq!(events.len(), 4);
        let first = json(&events[0]);
        assert_eq!(first["object"], "text_completion");
        assert_eq!(first["choices"][0]["text"], "Sluice ");
        assert!(first.get("usage").is_none());
        assert!(first["choices"][0].get("content_filter_results").is_none());
        assert_eq!(json(&events[2])["choices"][0]["finish_reason"], "length");
        assert_eq!(&events[3][..], DONE);
    }

    #[tokio::test]
    async fn aborts_after_the_requested_events() {
        let plan = StreamPlan {
            cutoff: Some(Cutoff::AbortAfter(2)),
            ..plan(Flavor::Azure, Operation::ChatCompletions, false)
        };
        let (events, aborted) = collect(plan).await;
        assert!(aborted);
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn stalls_after_the_requested_events() {
        let mut stream = SseStream::new(StreamPlan {
            cutoff: Some(Cutoff::StallAfter(2)),
            ..plan(Flavor::Azure, Operation::ChatCompletions, false)
        });
        for _ in 0..2 {
            let event = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
            assert!(matches!(event, Some(Ok(_))), "{event:?}");
        }
        let next = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx));
        let hung = tokio::time::timeout(Duration::from_millis(100), next).await;
        assert!(hung.is_err(), "nothing follows the second event: {hung:?}");
    }

    #[tokio::test]
    async fn a_stalled_plain_body_sends_its_first_half_then_hangs() {
        let mut body = StalledBody::new(Bytes::from_static(b"0123456789"));
        let first = poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
        assert_eq!(first.and_then(Result::ok).as_deref(), Some(&b"01234"[..]));
        let next = poll_fn(|cx| Pin::new(&mut body).poll_next(cx));
        let hung = tokio::time::timeout(Duration::from_millis(100), next).await;
        assert!(hung.is_err(), "the second half never comes: {hung:?}");
    }

    #[tokio::test]
    async fn paces_tokens_from_the_first_poll() {
        let plan = StreamPlan {
            interval: Some(Duration::from_millis(20)),
            ..plan(Flavor::OpenAi, Operation::ChatCompletions, false)
        };
        let start = Instant::now();
        let (events, _) = collect(plan).await;
        assert_eq!(events.len(), 4);
        // Two tokens, each due one interval after the previous one.
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}
