//! The proxy's request path: route, authenticate, read the body once, then attempts through
//! tower's `Retry` over the pool's balancer, and the answer streamed back.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use tower::ServiceExt as _;

use crate::attempt::{Answer, Attempt, AttemptError, PoolService, RetryOnAnotherBackend};
use crate::backend::{NoResponse, State, UsageAskedFor};
use crate::balance::{NoBackend, PoolRuntime};
use crate::body::{Accounting, ObservedBody, Passing, ProxyBody};
use crate::call::{BodyPeek, ClientCall};
use crate::client_auth::{Caller, presented_key};
use crate::client_error::{ClientError, set_retry_after};
use crate::clock::{Nanos, UnixTime};
use crate::config::RuntimeConfig;
use crate::headers::strip_for_client;
use crate::metrics::{self, ClientCell, ProxyMetrics};
use crate::models;
use crate::quota::{self, Admitted, Demand, Estimate, KeyRules, Refused};
use crate::report::CallUsage;
use crate::request_body::{RequestBody, Unread};
use crate::routing::{NoRoute, route};
use crate::trace::Traced;
use tracing::Instrument as _;

static SLUICE_BACKEND: http::HeaderName = http::HeaderName::from_static("x-sluice-backend");
static SLUICE_ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-sluice-attempts");

#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Serve clients without a key (`--allow-anonymous`).
    pub allow_anonymous: bool,
    /// Largest request body accepted and kept for replay.
    pub max_body_bytes: usize,
}

pub struct Proxy {
    config: ArcSwapOption<RuntimeConfig>,
    /// When the current config was applied, for `sluice_config_age_seconds`.
    applied_at: AtomicU64,
    /// The revision being served, for callers that must wait for a given config.
    applied_revision: tokio::sync::watch::Sender<u64>,
    options: ProxyOptions,
    pub metrics: Arc<ProxyMetrics>,
}

impl Proxy {
    pub fn new(options: ProxyOptions, metrics: Arc<ProxyMetrics>) -> Self {
        Self {
            config: ArcSwapOption::empty(),
            applied_at: AtomicU64::new(0),
            applied_revision: tokio::sync::watch::Sender::new(0),
            options,
            metrics,
        }
    }

    /// Swaps in a new config; requests already in flight keep the one they started with.
    pub fn apply(&self, config: RuntimeConfig) {
        tracing::info!(
            revision = config.revision,
            pools = config.pools.len(),
            "config applied"
        );
        let revision = config.revision;
        self.config.store(Some(Arc::new(config)));
        self.applied_at.store(Nanos::now().0, Ordering::Relaxed);
        self.applied_revision.send_replace(revision);
    }

    /// Follows the revision being served (0 until a config is applied).
    pub fn applied_revision(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_revision.subscribe()
    }

    /// How long ago the current config was applied.
    pub fn config_age(&self) -> Option<Duration> {
        let applied = self.applied_at.load(Ordering::Relaxed);
        (applied > 0).then(|| Duration::from_nanos(Nanos::now().0.saturating_sub(applied)))
    }

    pub fn current(&self) -> Option<Arc<RuntimeConfig>> {
        self.config.load_full()
    }

    /// Answers one client request. An `async` block, not an `async fn`, so that its future
    /// does not keep the request twice (see `Upstream::request`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future keeps the request twice"
    )]
    pub fn handle(
        &self,
        mut request: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> {
        async move {
            let started = Instant::now();
            let span = Traced::request(&mut request);
            let config = self.current();
            let mut seen = Seen::default();
            // Boxed for the same reason as the exchange with the backend: a large future,
            // copied again by every future that holds it inline.
            let forwarded =
                Box::pin(self.forward(request, &span, started, config.as_deref(), &mut seen));
            let mut response = match forwarded.instrument(span.span().clone()).await {
                Ok(response) | Err(response) => response,
            };
            span.status(response.status().as_u16());
            let client = seen.client(config.as_deref());
            let client = client.unwrap_or_else(|| self.metrics.unidentified());
            metrics::record_client_call(client, &mut response, started);
            response
        }
    }

    async fn forward<'c>(
        &self,
        request: Request<Incoming>,
        span: &Traced,
        started: Instant,
        config: Option<&'c RuntimeConfig>,
        seen: &mut Seen<'c>,
    ) -> Result<Response<ProxyBody>, Response<ProxyBody>> {
        let (parts, body) = request.into_parts();
        // Whatever is answered, and when, the client's upload is read to its end.
        let body = RequestBody::new(body);
        // Before anything else: a path that some hop could read as another deployment or
        // resource is refused, whoever sends it.
        let route = match route(parts.uri.path()) {
            Ok(route) => Some(route),
            Err(NoRoute::NonCanonical(why)) => {
                return Err(ClientError::non_canonical_path(why).into_response());
            }
            Err(NoRoute::Unknown) => None,
        };
        let Some(config) = config else {
            return Err(ClientError::not_ready().into_response());
        };
        let caller = if self.options.allow_anonymous {
            None
        } else {
            let presented = presented_key(&parts.headers)
                .ok_or_else(|| ClientError::missing_key().into_response())?;
            Some(
                config
                    .keys
                    .authenticate(presented)
                    .ok_or_else(|| ClientError::wrong_key().into_response())?,
            )
        };
        seen.key_slot = Some(caller.map_or(config.keys.anonymous_slot(), |c| c.slot));
        let key = caller.map(|c| &c.key);
        if parts.method == Method::GET
            && let Some(answer) = models::answer(config, parts.uri.path(), key)
        {
            return Ok(answer);
        }
        let route = route.ok_or_else(|| ClientError::unknown_route().into_response())?;
        let body = self.read_body(&parts.headers, body).await?;
        // Read where it is, in the path or the body: the call names its pool by the pool's
        // own name from here on.
        let requested = match route.deployment {
            Some(deployment) => Cow::Borrowed(deployment),
            None => BodyPeek::of(&body)
                .map_err(|_| ClientError::invalid_json().into_response())?
                .model
                .ok_or_else(|| ClientError::missing_model().into_response())?,
        };
        let pool = config
            .pools
            .get(requested.as_ref())
            .ok_or_else(|| ClientError::unknown_deployment(&requested).into_response())?;
        seen.pool = Some(pool.as_ref());
        if key.is_some_and(|k| !k.allows(&requested)) {
            return Err(ClientError::key_not_allowed(&requested).into_response());
        }
        let usage = pool.usage(caller.map_or(config.keys.anonymous_slot(), |c| c.slot));
        let limits = caller.and_then(Caller::rules);
        let (quota, ask_for_usage) = match limits {
            None => (None, false),
            Some(rules) => {
                let (admitted, ask_for_usage) =
                    self.admit(rules, pool, &body).map_err(|refused| {
                        if let Some(usage) = usage {
                            usage.rate_limited();
                        }
                        self.refuse(rules, pool, &refused)
                    })?;
                (Some(admitted), ask_for_usage)
            }
        };
        if let Some(usage) = usage {
            usage.admitted();
        }
        // The operation ends the path (`route` takes it from there).
        let operation_start = parts.uri.path().len() - route.operation.len();
        let style = route.style;
        let call = ClientCall {
            method: parts.method,
            style,
            target: parts
                .uri
                .into_parts()
                .path_and_query
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            operation_start,
            headers: parts.headers,
            body,
            requested: pool.name.as_str(),
            ask_for_usage,
            traced: span.is_traced(),
        };
        let client_key = key.map(|k| k.id.as_str());
        span.routed(&call, call.style.route_template(), client_key);
        match attempts(pool, &self.metrics, &call).await {
            Ok(response) => Ok(client_response(
                response,
                pool,
                Observed {
                    started,
                    client_key,
                    span,
                    quota,
                    usage: usage.map(|cell| CallUsage {
                        cell: cell.clone(),
                        price: pool.price,
                    }),
                },
            )),
            Err(error) => {
                let mut response = self.failure(pool, error, span);
                if let Some(quota) = quota {
                    quota.refund();
                    quota.headers_now(response.headers_mut(), UnixTime::now());
                }
                Err(response)
            }
        }
    }

    /// Takes the call from the key's limits, holding back its estimated tokens and cost; a
    /// call over a limit is answered 429 here, with no upstream call. Also says whether to ask
    /// the backend for the stream's usage, which the client did not.
    fn admit(
        &self,
        rules: &Arc<KeyRules>,
        pool: &PoolRuntime,
        body: &[u8],
    ) -> Result<(Admitted, bool), Refused> {
        let now = UnixTime::now();
        let pool_name = pool.name.as_str();
        let estimate = if rules.counts_tokens(pool_name) {
            Estimate::of(body)
        } else {
            Estimate::default()
        };
        let demand = Demand {
            tokens: estimate.tokens(),
            cost: pool.price.map_or(0, |price| {
                price
                    .cost(estimate.prompt_tokens, 0, estimate.max_output_tokens)
                    .micros()
            }),
        };
        let admitted = rules.admit(pool_name, demand, pool.price, now)?;
        Ok((admitted, estimate.stream_without_usage))
    }

    /// The 429 for a call over one of its key's limits.
    fn refuse(
        &self,
        rules: &KeyRules,
        pool: &PoolRuntime,
        refused: &Refused,
    ) -> Response<ProxyBody> {
        let pool = pool.name.as_str();
        self.metrics
            .ratelimited(pool, rules.key.as_str(), refused.kind);
        let mut response = ClientError::over_limit(&rules.key, refused).into_response();
        quota::headers_for(rules, pool, response.headers_mut(), UnixTime::now());
        response
    }

    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        mut body: RequestBody,
    ) -> Result<Bytes, Response<ProxyBody>> {
        let limit = self.options.max_body_bytes;
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Refuse before reading a byte, and before any upstream call.
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ClientError::body_too_large(limit).into_response());
        }
        body.read_to_end(limit)
            .await
            .map_err(|unread| match unread {
                Unread::TooLarge => ClientError::body_too_large(limit).into_response(),
                Unread::Failed => ClientError::unreadable_body().into_response(),
            })
    }

    fn failure(
        &self,
        pool: &PoolRuntime,
        error: AttemptError,
        span: &Traced,
    ) -> Response<ProxyBody> {
        match error {
            AttemptError::NoBackend(none) => {
                span.failed("no_backend");
                self.metrics.rejected(pool.name.as_str());
                match none {
                    NoBackend::AllWaiting(wait) => {
                        ClientError::all_cooling(pool.name.as_str(), wait)
                    }
                    NoBackend::NoneUsable => ClientError::no_usable_backend(pool.name.as_str()),
                }
                .into_response()
            }
            AttemptError::Transport {
                backend,
                failure,
                attempt,
            } => {
                span.failed(failure.label());
                span.attempts(attempt);
                let mut response = match failure {
                    NoResponse::Connect => ClientError::upstream_unreachable(),
                    NoResponse::Timeout => ClientError::upstream_timeout(),
                    NoResponse::BadUri => ClientError::bad_upstream_uri(),
                }
                .into_response();
                tag(response.headers_mut(), pool, backend, attempt);
                response
            }
        }
    }
}

/// The call's attempts: tower's `Retry` over the pool's balancer, until one stands.
///
/// A function of its own so that the future's type names one lifetime for the pool, the
/// metrics and the call together; inline, the compiler cannot show that the request's future
/// is `Send` for every pair of lifetimes the service and the attempt might have.
fn attempts<'a>(
    pool: &'a PoolRuntime,
    metrics: &'a ProxyMetrics,
    call: &'a ClientCall<'a>,
) -> impl Future<Output = Result<Answer, AttemptError>> + Send + 'a {
    let policy = RetryOnAnotherBackend::new(pool, metrics);
    tower::retry::Retry::new(policy, PoolService { pool }).oneshot(Attempt {
        call,
        tried: Vec::new(),
    })
}

/// How far a call got, for the client metrics: its key's slot once authenticated, its pool
/// once routed.
#[derive(Default)]
struct Seen<'c> {
    key_slot: Option<usize>,
    pool: Option<&'c PoolRuntime>,
}

impl Seen<'_> {
    fn client<'a>(&'a self, config: Option<&'a RuntimeConfig>) -> Option<&'a Arc<ClientCell>> {
        let clients = self.pool.map_or(&config?.unrouted, |pool| &pool.clients);
        clients.cell(self.key_slot?)
    }
}

/// What the response body reports to when it has passed.
struct Observed<'a> {
    started: Instant,
    client_key: Option<&'a str>,
    span: &'a Traced,
    /// The client key's limits, holding this call's estimate until its usage is known.
    quota: Option<Admitted>,
    /// Where the call's tokens are counted for the control plane's report.
    usage: Option<CallUsage>,
}

/// The backend's response as it sent it (status, headers, body), tagged with who answered;
/// a 429 says when the pool, not just that backend, has room again.
fn client_response(
    answer: Answer,
    pool: &PoolRuntime,
    observed: Observed<'_>,
) -> Response<ProxyBody> {
    let (mut parts, body) = answer.response.into_parts();
    let (backend, attempt) = (answer.served.backend, answer.served.attempt);
    let endpoint = pool.backends[backend].clone();
    let tokens = endpoint.metrics.tokens.for_key(observed.client_key);
    let spans = observed.span.is_traced().then(|| {
        observed.span.attempts(attempt);
        let attempt_span = answer.span.unwrap_or_else(Traced::none);
        Box::new([observed.span.clone(), attempt_span])
    });
    let sse = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let strip_usage_event = parts.extensions.get::<UsageAskedFor>().is_some();
    if strip_usage_event {
        // The body will be shorter than the backend's.
        parts.headers.remove(CONTENT_LENGTH);
    }
    strip_for_client(&mut parts.headers);
    // Room for what is added below at once, rather than growing the map for it twice.
    let added = TAG_HEADERS + observed.quota.as_ref().map_or(0, |_| quota::RATE_HEADERS);
    parts.headers.reserve(added);
    if parts.status == StatusCode::TOO_MANY_REQUESTS {
        set_retry_after(&mut parts.headers, shortest_wait(pool));
    }
    if let Some(quota) = &observed.quota {
        // The key's own limits, not the deployment's, are what this client must pace on.
        quota.headers(&mut parts.headers);
    }
    let mut client = Response::new(Either::Left(Box::pin(ObservedBody::new(
        body,
        Passing {
            idle_timeout: pool.retry.idle_timeout_ms.as_duration(),
            sse,
            strip_usage_event,
        },
        Accounting::new(
            endpoint,
            observed.started,
            tokens,
            spans,
            observed.quota,
            observed.usage,
            parts.status.is_success(),
        ),
    ))));
    *client.status_mut() = parts.status;
    *client.headers_mut() = parts.headers;
    tag(client.headers_mut(), pool, backend, attempt);
    client
}

/// How long until some backend of the pool takes traffic again: the backend that answered
/// 429 may ask for longer than another one needs.
fn shortest_wait(pool: &PoolRuntime) -> Duration {
    let now = Nanos::now();
    pool.backends
        .iter()
        .filter_map(|backend| match backend.state(now) {
            State::Available => Some(Duration::ZERO),
            State::Cooling(wait) | State::Ejected(wait) => Some(wait),
            State::Disabled | State::NoCredential => None,
        })
        .min()
        .unwrap_or(Duration::ZERO)
}

/// `x-sluice-attempts` without allocating: attempts are 1–10 (`max_attempts` is bounded).
fn attempts_header(attempt: usize) -> HeaderValue {
    const VALUES: [&str; 10] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    match VALUES.get(attempt.wrapping_sub(1)) {
        Some(value) => HeaderValue::from_static(value),
        None => HeaderValue::from(attempt),
    }
}

/// How many headers [`tag`] adds.
const TAG_HEADERS: usize = 2;

fn tag(headers: &mut http::HeaderMap, pool: &PoolRuntime, backend: usize, attempt: usize) {
    headers.insert(
        SLUICE_BACKEND.clone(),
        pool.backends[backend].name_header.current().clone(),
    );
    headers.insert(SLUICE_ATTEMPTS.clone(), attempts_header(attempt));
}
