//! A timer for the silence between two body chunks that costs nothing per chunk.
//!
//! Resetting a timer on every chunk would touch the runtime's timer wheel once per SSE frame.
//! Instead the deadline is a plain field, set when the body is first found waiting; the
//! registered timer is moved only when it fires early, so a steady stream re-arms it about
//! once per idle period. Time spent waiting on the client (back-pressure: the body is not
//! polled) never counts, as the clock starts when the body is polled and has nothing.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    pub struct IdleTimer {
        #[pin]
        sleep: Sleep,
        limit: Duration,
        // When the current wait for a chunk runs out; `None` while chunks flow.
        deadline: Option<Instant>,
    }
}

impl IdleTimer {
    /// `since` is any moment before the body is first polled (the call's start). The timer
    /// armed from it can only run early, which [`Self::poll_expired`] corrects, and taking the
    /// caller's moment spares a read of the clock on every call.
    pub fn new(limit: Duration, since: std::time::Instant) -> Self {
        let since = Instant::from_std(since);
        Self {
            sleep: tokio::time::sleep_until(since.checked_add(limit).unwrap_or(since)),
            limit,
            deadline: None,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// A chunk arrived: the next wait starts from scratch.
    pub fn activity(self: Pin<&mut Self>) {
        *self.project().deadline = None;
    }

    /// Called when the body has nothing: ready once it has had nothing for the whole limit.
    pub fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let limit = *this.limit;
        let deadline = *this.deadline.get_or_insert_with(|| Instant::now() + limit);
        loop {
            ready!(this.sleep.as_mut().poll(cx));
            // The timer only ever runs early (it was armed for an earlier wait): move it on.
            if this.sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            this.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::poll_fn;
    use std::task::Waker;

    const LIMIT: Duration = Duration::from_millis(200);

    fn poll_once(timer: Pin<&mut IdleTimer>) -> Poll<()> {
        timer.poll_expired(&mut Context::from_waker(Waker::noop()))
    }

    /// Only "not yet" and "no sooner than" are asserted: both hold however slow the machine.
    #[tokio::test]
    async fn a_chunk_restarts_the_wait_and_silence_ends_it() {
        let timer = IdleTimer::new(LIMIT, std::time::Instant::now());
        tokio::pin!(timer);
        assert!(poll_once(timer.as_mut()).is_pending());
        timer.as_mut().activity();
        // The timer first armed has run out; the wait that starts now has not.
        tokio::time::sleep(LIMIT + Duration::from_millis(50)).await;
        let waiting_since = Instant::now();
        assert!(poll_once(timer.as_mut()).is_pending());
        poll_fn(|cx| timer.as_mut().poll_expired(cx)).await;
        assert!(waiting_since.elapsed() >= LIMIT);
    }

    /// Armed from long before the body is polled (a slow backend's head), the timer runs out
    /// at once, and the wait still lasts the whole limit from when the body has nothing.
    #[tokio::test]
    async fn armed_from_long_ago_it_still_waits_the_whole_limit() {
        let long_ago = std::time::Instant::now()
            .checked_sub(LIMIT * 10)
            .expect("the machine has been up for more than two seconds");
        let timer = IdleTimer::new(LIMIT, long_ago);
        tokio::pin!(timer);
        let waiting_since = Instant::now();
        assert!(poll_once(timer.as_mut()).is_pending());
        poll_fn(|cx| timer.as_mut().poll_expired(cx)).await;
        assert!(waiting_since.elapsed() >= LIMIT);
    }

    #[tokio::test]
    async fn time_not_spent_waiting_does_not_count() {
        let timer = IdleTimer::new(LIMIT, std::time::Instant::now());
        tokio::pin!(timer);
        // The client holds the response back (the body is not polled) for longer than the limit.
        tokio::time::sleep(LIMIT * 2).await;
        assert!(poll_once(timer.as_mut()).is_pending());
    }
}
