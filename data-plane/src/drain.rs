//! Draining a listener's client connections on shutdown: each finishes the exchange it is in
//! and closes, and the listener waits until all have (or until its drain time is up).
//!
//! hyper-util's `GracefulShutdown` does the same, but polls a watch channel's `changed()` beside
//! the connection on every wake-up of the connection's task, and a registered `Notified` takes
//! its `Notify`'s mutex on each of those polls: 0.7k instructions per proxied call in callgrind.
//! Here a connection reads a flag on each poll and registers for the wake-up only when its task's
//! waker changes (for a spawned task: once).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, watch};

/// One listener's connections, told to finish together.
#[derive(Debug)]
pub struct Drain {
    /// Set before `wake_up` is notified, so a connection woken by it finds it set.
    stopping: Arc<AtomicBool>,
    wake_up: Arc<Notify>,
    /// Every watched connection holds a receiver: the drain is over when none is left.
    live: watch::Sender<()>,
}

impl Drain {
    pub fn new() -> Self {
        Self {
            stopping: Arc::default(),
            wake_up: Arc::default(),
            live: watch::Sender::new(()),
        }
    }

    /// A handle for one connection: the drain waits until it is dropped.
    pub fn watcher(&self) -> Watcher {
        Watcher {
            stopping: Arc::clone(&self.stopping),
            wake_up: Arc::clone(&self.wake_up),
            live: self.live.subscribe(),
        }
    }

    /// Tells every watched connection to finish, and waits until all have closed.
    pub async fn run(self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_up.notify_waiters();
        self.live.closed().await;
    }
}

/// One connection's part in a [`Drain`].
#[derive(Debug)]
pub struct Watcher {
    stopping: Arc<AtomicBool>,
    wake_up: Arc<Notify>,
    live: watch::Receiver<()>,
}

impl Watcher {
    /// Resolves once the drain has begun: for a connection that cannot be told to finish yet
    /// (it has not said which protocol it speaks) and must not hold the drain up.
    pub fn begun(&self) -> impl Future<Output = ()> + Send + 'static {
        // Registered before the flag is read: a drain begun in between still wakes it.
        let wake_up = Arc::clone(&self.wake_up).notified_owned();
        let stopping = Arc::clone(&self.stopping);
        async move {
            if !stopping.load(Ordering::Acquire) {
                wake_up.await;
            }
        }
    }

    /// `connection`, shut down gracefully once the drain begins.
    pub fn watch<C: GracefulConnection>(self, connection: C) -> Draining<C> {
        Draining {
            connection,
            // Registered now, so a drain begun before the first poll is not missed.
            wake_up: Arc::clone(&self.wake_up).notified_owned(),
            stopping: self.stopping,
            registered: None,
            closing: false,
            _live: self.live,
        }
    }
}

pin_project! {
    /// A connection that closes gracefully when its [`Drain`] begins.
    pub struct Draining<C> {
        #[pin]
        connection: C,
        #[pin]
        wake_up: OwnedNotified,
        stopping: Arc<AtomicBool>,
        // The waker `wake_up` was last polled with: polled again only for another one.
        registered: Option<Waker>,
        closing: bool,
        _live: watch::Receiver<()>,
    }
}

impl<C: GracefulConnection> Future for Draining<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.closing
            && (this.stopping.load(Ordering::Acquire) || woken(this.wake_up, this.registered, cx))
        {
            *this.closing = true;
            this.connection.as_mut().graceful_shutdown();
        }
        this.connection.poll(cx)
    }
}

/// Polls `wake_up` only for a waker it does not hold yet; true once the drain has woken it.
fn woken(
    wake_up: Pin<&mut OwnedNotified>,
    registered: &mut Option<Waker>,
    cx: &mut Context<'_>,
) -> bool {
    if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        return false;
    }
    *registered = Some(cx.waker().clone());
    wake_up.poll(cx).is_ready()
}
