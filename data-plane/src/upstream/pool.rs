//! Each proxy thread's connections to backends, by origin: idle HTTP/1 connections to reuse,
//! the most recently used first, and one shared HTTP/2 connection where the backend offers it.
//!
//! A connection stays on the thread that opened it: the proxy runs one single-threaded
//! runtime per core, and a socket is driven by the runtime it was registered with.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Uri;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use hyper::client::conn::http2;

use super::http1::Http1;
use super::{Connector, Payload, Upstream};
use crate::clock::Nanos;

/// Idle connections older than this are closed rather than reused: load balancers in front
/// of backends (Azure's among them) drop idle flows silently after a few minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a thread's pool looks for idle connections past [`IDLE_TIMEOUT`].
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Idle connections kept per origin; more than this in flight at once are closed after use.
const MAX_IDLE_PER_ORIGIN: usize = 1024;

/// Where a backend lives: scheme and authority.
///
/// Compared and hashed as written, not case-insensitively as [`Authority`] is: the authority
/// comes from the backend's configured URL, spelled the same on every call, and hashing it
/// byte by byte in lower case cost more than the rest of a pool checkout.
#[derive(Clone, Debug)]
pub struct Origin {
    https: bool,
    authority: Authority,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Origin {}

impl Hash for Origin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.authority.as_str().hash(state);
    }
}

impl Origin {
    #[cfg(test)]
    pub fn of(uri: &Uri) -> Option<Self> {
        Some(Self {
            https: uri.scheme() == Some(&Scheme::HTTPS),
            authority: uri.authority()?.clone(),
        })
    }

    /// The origin of a backend's URL; `None` when its host and port are no HTTP authority.
    /// Each call makes a buffer of its own, unlike a clone, which shares one whose reference
    /// count every clone and drop writes.
    pub fn of_url(url: &url::Url) -> Option<Self> {
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        Some(Self {
            https: url.scheme() == "https",
            authority: Authority::try_from(authority).ok()?,
        })
    }

    /// `uri` (origin form) on this origin: the absolute form HTTP/2 and the connector need.
    pub fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.https {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// The `Host` header for this origin: the port only when it is not the scheme's default.
    fn host(&self) -> HeaderValue {
        let default_port = if self.https { 443 } else { 80 };
        let host = match self.authority.port_u16() {
            Some(port) if port != default_port => self.authority.as_str(),
            _ => self.authority.host(),
        };
        // An authority is always a valid header value.
        HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// What a request gets from its thread's pool.
pub enum Checkout {
    /// An idle HTTP/1 connection (still to be checked: the backend may have closed it).
    Idle(Http1),
    /// The origin's HTTP/2 connection, shared by every request.
    Shared(http2::SendRequest<Payload>),
    /// Nothing to reuse: open a connection with this connector.
    Connect(Connector),
}

struct Slot {
    host: HeaderValue,
    idle: Vec<Idle>,
    shared: Option<http2::SendRequest<Payload>>,
}

struct Idle {
    connection: Http1,
    /// A coarse reading ([`Nanos::coarse_now`]), as are the pool's other times: idling is
    /// counted in seconds, and each call takes a connection and gives one back.
    since: Nanos,
}

pub struct ThreadPool {
    connector: Connector,
    origins: HashMap<Origin, Slot, foldhash::fast::RandomState>,
    swept: Nanos,
}

thread_local! {
    /// This thread's pool for each live [`Upstream`].
    static POOLS: RefCell<Vec<(Weak<Upstream>, ThreadPool)>> = const { RefCell::new(Vec::new()) };
    static THREAD: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// Runs `f` on the calling thread's pool for `upstream`, creating it on first use.
pub fn with_pool<R>(upstream: &Arc<Upstream>, f: impl FnOnce(&mut ThreadPool) -> R) -> R {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let index = match pools
            .iter()
            .position(|(owner, _)| owner.as_ptr() == Arc::as_ptr(upstream))
        {
            Some(index) => index,
            None => {
                // First use on this thread (or a new Upstream): forget dead ones.
                pools.retain(|(owner, _)| owner.strong_count() > 0);
                pools.push((
                    Arc::downgrade(upstream),
                    ThreadPool::new(upstream.connector()),
                ));
                pools.len() - 1
            }
        };
        f(&mut pools[index].1)
    })
}

impl ThreadPool {
    fn new(connector: Connector) -> Self {
        Self {
            connector,
            origins: HashMap::default(),
            swept: Nanos::coarse_now(),
        }
    }

    /// A connection for `origin`, and the `Host` header to send on it.
    pub fn checkout(&mut self, origin: &Origin) -> (Checkout, HeaderValue) {
        let slot = match self.origins.get_mut(origin) {
            Some(slot) => slot,
            None => self.origins.entry(origin.clone()).or_insert_with(|| Slot {
                host: origin.host(),
                idle: Vec::new(),
                shared: None,
            }),
        };
        let host = slot.host.clone();
        if let Some(shared) = &slot.shared {
            if !shared.is_closed() {
                return (Checkout::Shared(shared.clone()), host);
            }
            slot.shared = None;
        }
        if let Some(idle) = slot.idle.pop() {
            if fresh(idle.since, Nanos::coarse_now()) && !idle.connection.is_closed() {
                return (Checkout::Idle(idle.connection), host);
            }
            // The most recently used one is stale: so are all the others.
            slot.idle.clear();
        }
        (Checkout::Connect(self.connector.clone()), host)
    }

    /// Makes `sender` the origin's shared HTTP/2 connection, unless one is already open.
    pub fn share(&mut self, origin: &Origin, sender: &http2::SendRequest<Payload>) {
        if let Some(slot) = self.origins.get_mut(origin)
            && slot.shared.as_ref().is_none_or(|s| s.is_closed())
        {
            slot.shared = Some(sender.clone());
        }
    }

    fn give_back(&mut self, origin: &Origin, connection: Http1) {
        let now = Nanos::coarse_now();
        if let Some(slot) = self.origins.get_mut(origin)
            && slot.idle.len() < MAX_IDLE_PER_ORIGIN
        {
            slot.idle.push(Idle {
                connection,
                since: now,
            });
        }
        self.sweep_when_due(now);
    }

    fn sweep_when_due(&mut self, now: Nanos) {
        if now.0.saturating_sub(self.swept.0) > SWEEP_EVERY.as_nanos() as u64 {
            self.swept = now;
            self.sweep(now);
        }
    }

    /// Closes idle connections past their time and forgets origins with nothing open (a
    /// backend removed from the config).
    fn sweep(&mut self, now: Nanos) {
        self.origins.retain(|_, slot| {
            slot.idle.retain(|idle| fresh(idle.since, now));
            if slot.shared.as_ref().is_some_and(|s| s.is_closed()) {
                slot.shared = None;
            }
            !slot.idle.is_empty() || slot.shared.is_some()
        });
    }

    #[cfg(test)]
    fn idle_count(&self, origin: &Origin) -> usize {
        self.origins.get(origin).map_or(0, |slot| slot.idle.len())
    }
}

/// Closes this thread's idle connections past their time, when a sweep is due. Returning a
/// connection sweeps too, but after a burst that ends in silence nothing is returned: without
/// this, the burst's connections (and their buffers) would stay open for good.
pub fn sweep_this_thread(now: Nanos) {
    let _ = POOLS.try_with(|pools| {
        let mut pools = pools.borrow_mut();
        pools.retain(|(owner, _)| owner.strong_count() > 0);
        for (_, pool) in pools.iter_mut() {
            pool.sweep_when_due(now);
        }
    });
}

fn fresh(since: Nanos, now: Nanos) -> bool {
    now.0.saturating_sub(since.0) < IDLE_TIMEOUT.as_nanos() as u64
}

/// Where a connection in use came from, so its body can give it back: the same thread's
/// pool of the same [`Upstream`], if both still exist.
pub struct PoolHome {
    upstream: Weak<Upstream>,
    thread: u64,
}

impl PoolHome {
    pub fn here(upstream: &Arc<Upstream>) -> Self {
        Self {
            upstream: Arc::downgrade(upstream),
            thread: THREAD.with(|t| *t),
        }
    }

    pub fn give_back(&self, origin: &Origin, connection: Http1) {
        // Thread-locals are gone while a thread exits; the connection is then just closed.
        let same_thread = THREAD.try_with(|t| *t == self.thread).unwrap_or(false);
        let Some(upstream) = self.upstream.upgrade() else {
            return;
        };
        if same_thread {
            let _ =
                POOLS.try_with(|_| with_pool(&upstream, |pool| pool.give_back(origin, connection)));
        }
    }
}

#[cfg(test)]
pub(super) fn idle_connections(upstream: &Arc<Upstream>, origin: &Origin) -> usize {
    with_pool(upstream, |pool| pool.idle_count(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_url_s_origin_is_its_scheme_and_authority() {
        let url = |text: &str| text.parse::<url::Url>().unwrap();
        let origin =
            Origin::of_url(&url("https://Example.openai.azure.com:8443/gateway/")).unwrap();
        assert_eq!(
            origin,
            Origin::of(&"https://example.openai.azure.com:8443/x".parse().unwrap()).unwrap()
        );
        assert_eq!(origin.host(), "example.openai.azure.com:8443");
        let plain = Origin::of_url(&url("http://127.0.0.1:80")).unwrap();
        assert_eq!(plain.host(), "127.0.0.1");
        assert_eq!(
            plain.absolute(&"/v1/models".parse().unwrap()),
            "http://127.0.0.1/v1/models"
        );
        // The url crate takes a host http's `Authority` does not.
        assert!(Origin::of_url(&url("http://a{b}.example/")).is_none());
    }

    #[test]
    fn each_origin_read_from_a_url_has_a_buffer_of_its_own() {
        let url = "https://x.example".parse().unwrap();
        let origin = Origin::of_url(&url).unwrap();
        let copy = Origin::of_url(&url).unwrap();
        assert_eq!(copy, origin);
        assert_ne!(
            copy.authority.as_str().as_ptr(),
            origin.authority.as_str().as_ptr()
        );
    }

    #[test]
    fn host_header_omits_the_default_port_only() {
        let host = |uri: &str| Origin::of(&uri.parse().unwrap()).unwrap().host();
        assert_eq!(
            host("https://example.openai.azure.com/x"),
            "example.openai.azure.com"
        );
        assert_eq!(
            host("https://example.openai.azure.com:443/x"),
            "example.openai.azure.com"
        );
        assert_eq!(host("http://127.0.0.1:80/"), "127.0.0.1");
        assert_eq!(host("http://127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(host("https://[::1]:8443/"), "[::1]:8443");
        assert!(Origin::of(&"/relative".parse().unwrap()).is_none());
    }

    #[test]
    fn a_silent_thread_still_closes_idle_connections_past_their_time() {
        let mut pool = ThreadPool::new(Upstream::new(Duration::from_secs(1)).unwrap().connector());
        pool.swept = Nanos(0);
        pool.origins.insert(
            Origin::of(&"http://a:1/".parse().unwrap()).unwrap(),
            Slot {
                host: HeaderValue::from_static("a:1"),
                idle: Vec::new(),
                shared: None,
            },
        );
        let early = Nanos(SWEEP_EVERY.as_nanos() as u64 / 2);
        pool.sweep_when_due(early);
        assert_eq!(pool.swept, Nanos(0), "not due yet");
        let later = Nanos(SWEEP_EVERY.as_nanos() as u64 + 1);
        pool.sweep_when_due(later);
        assert_eq!(pool.swept, later);
        assert!(
            pool.origins.is_empty(),
            "an origin with nothing open is forgotten"
        );
    }

    #[test]
    fn origins_differ_by_scheme_and_authority() {
        let origin = |uri: &str| Origin::of(&uri.parse().unwrap()).unwrap();
        assert_eq!(origin("http://a:1/x"), origin("http://a:1/y?z"));
        assert_ne!(origin("http://a:1/"), origin("https://a:1/"));
        assert_ne!(origin("http://a:1/"), origin("http://a:2/"));
    }
}
