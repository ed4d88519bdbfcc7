//! Starting, serving and stopping a mock, and the handle tests hold.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::{ConfigError, MockConfig};
use super::control;
use super::fault_queue::FaultQueue;
use super::faults::{Fault, FaultError};
use super::handlers;
use super::ids::Ids;
use super::recording::{RecordedRequest, Recorder};
use super::script::Script;

/// State shared by every request of one mock.
pub(crate) struct Shared {
    pub config: MockConfig,
    /// The key callers must present now: starts as `config.api_key`, changed by
    /// [`MockHandle::set_api_key`] so tests can rotate it together with Key Vault. An
    /// uncontended read lock is a couple of atomics, cheap enough for the request path.
    api_key: RwLock<Option<Arc<str>>>,
    pub token_interval: Option<Duration>,
    pub script: Arc<Script>,
    pub name_header: HeaderValue,
    pub region_header: HeaderValue,
    pub ids: Ids,
    pub faults: FaultQueue,
    pub recorder: Recorder,
}

impl Shared {
    fn new(config: MockConfig) -> Result<Self, ConfigError> {
        let header = |value: &str, field| {
            HeaderValue::try_from(value).map_err(|_| ConfigError::HeaderValue { field })
        };
        Ok(Self {
            token_interval: config.token_interval()?,
            script: Arc::new(Script::new(config.completion_tokens)),
            name_header: header(&config.name, "name")?,
            region_header: header(&config.region, "region")?,
            ids: Ids::new(),
            faults: FaultQueue::default(),
            recorder: Recorder::new(config.record_requests),
            api_key: RwLock::new(config.api_key.as_deref().map(Arc::from)),
            config,
        })
    }

    /// The key callers must present, or `None` when any key (or none) is accepted.
    pub fn api_key(&self) -> Option<Arc<str>> {
        self.api_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_api_key(&self, key: Option<String>) {
        *self.api_key.write().unwrap_or_else(PoisonError::into_inner) = key.map(Arc::from);
    }

    pub fn stats(&self) -> MockStats {
        MockStats {
            name: self.config.name.clone(),
            requests_total: self.recorder.count(),
            requests_recorded: self.recorder.recorded(),
            faults_applied: self.faults.applied(),
            faults_pending: self.faults.pending(),
        }
    }
}

/// Counters of one mock, as served by `GET /_mock/stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MockStats {
    pub name: String,
    /// Requests to anything but `/_mock/…` since start or the last recording reset.
    pub requests_total: u64,
    /// Requests currently remembered (at most [`super::RECORDED_REQUESTS`]).
    pub requests_recorded: usize,
    /// Requests a fault was applied to.
    pub faults_applied: u64,
    /// Faults still pending, `times` showing what is left of each.
    pub faults_pending: Vec<Fault>,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_mock/faults",
            get(control::list_faults)
                .post(control::add_faults)
                .delete(control::clear_faults),
        )
        .route("/_mock/stats", get(control::stats))
        .route(
            "/_mock/requests",
            get(control::list_requests).delete(control::reset_requests),
        )
        .fallback(handlers::inference)
        .with_state(shared)
}

fn invalid_config(error: ConfigError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Without TCP_NODELAY, small SSE writes on a reused connection wait ~40 ms for a
    // delayed ACK, which would make the mock (not the code under test) the bottleneck.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves a mock on `listener` until `shutdown` resolves, then lets open requests finish.
/// For the CLI; tests want [`MockUpstream::start`] and its handle.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shared = Shared::new(config).map_err(invalid_config)?;
    serve_shared(listener, Arc::new(shared), shutdown).await
}

/// Starts mock upstreams on the current tokio runtime.
#[derive(Debug)]
pub struct MockUpstream;

impl MockUpstream {
    /// Binds `addr` (port 0 picks a free port) and serves on a background task until the
    /// returned handle is dropped or shut down.
    pub async fn start(addr: SocketAddr, config: MockConfig) -> io::Result<MockHandle> {
        let shared = Arc::new(Shared::new(config).map_err(invalid_config)?);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            // A dropped sender means the handle is gone: stop as well.
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_shared(listener, Arc::clone(&shared), shutdown));
        Ok(MockHandle {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// [`MockUpstream::start`] on `127.0.0.1:0`.
    pub async fn start_local(config: MockConfig) -> io::Result<MockHandle> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }
}

/// A running mock: its address, its faults and what it has seen. Dropping it stops the
/// server (requests in flight still finish).
pub struct MockHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The config the mock started with; the key it accepts now is [`MockHandle::api_key`].
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// The key callers must present now (`None`: any key or none).
    pub fn api_key(&self) -> Option<String> {
        self.shared.api_key().map(|key| key.to_string())
    }

    /// Changes the key callers must present, from the next request on (`None` accepts any
    /// key and no key). Requests already past authentication are not affected.
    pub fn set_api_key(&self, key: Option<String>) {
        self.shared.set_api_key(key);
    }

    /// Queues a fault after those already pending.
    pub fn inject(&self, fault: Fault) -> Result<(), FaultError> {
        self.shared.faults.push([fault]).map(drop)
    }

    /// Queues several faults in order; none is queued if one is invalid.
    pub fn inject_all(&self, faults: impl IntoIterator<Item = Fault>) -> Result<(), FaultError> {
        self.shared.faults.push(faults).map(drop)
    }

    /// Drops all pending faults and says how many there were.
    pub fn clear_faults(&self) -> usize {
        self.shared.faults.clear()
    }

    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.faults.pending()
    }

    /// Requests a fault has been applied to.
    pub fn faults_applied(&self) -> u64 {
        self.shared.faults.applied()
    }

    /// The most recent requests (up to [`super::RECORDED_REQUESTS`]), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.requests()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.requests().pop()
    }

    /// Requests received (except to `/_mock/…`) since start or [`MockHandle::reset_recording`].
    pub fn request_count(&self) -> u64 {
        self.shared.recorder.count()
    }

    /// Forgets recorded requests and zeroes the counter.
    pub fn reset_recording(&self) {
        self.shared.recorder.reset();
    }

    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    /// Stops accepting connections and waits until open requests have finished.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.signal_stop();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; then there is nothing to stop.
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHandle")
            .field("name", &self.shared.config.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}
