//! One upstream deployment: where and how to call it, and whether it may be called now.

pub mod credential;
pub mod health;
pub mod rate_limit;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use sluice_model::{ApiVersion, Backend, BackendKind};
use tower::Service as _;
use tower::load::peak_ewma::Cost;
use tower::load::{CompleteOnResponse, Load as _, PeakEwma};

use crate::call::{CallStyle, ClientCall};
use crate::clock::Nanos;
use crate::headers::{copied_per_worker, for_upstream, spare_map};
use crate::metrics::{BackendMetrics, EjectionReason};
use crate::per_worker::PerWorker;
use crate::report::AttemptCounts;
use crate::secrets::SecretResolver;
use crate::trace::Traced;
use crate::upstream::{Origin, ResponseBody, Upstream, UpstreamBody, UpstreamService};
use crate::upstream_uri::{UpstreamTarget, UpstreamUriError};

pub use credential::{Credential, CredentialSlot, CredentialSource, RefreshPolicy, Refreshed};
pub use health::{Health, Unavailable};

/// Starting latency guess for least-latency balancing, before any response was seen.
const DEFAULT_RTT: Duration = Duration::from_secs(1);
/// How quickly old latency samples fade (tower's PeakEWMA decay).
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Why a backend cannot be selected, for the `sluice_backend_state` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Available,
    Cooling(Duration),
    Ejected(Duration),
    Disabled,
    NoCredential,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Cooling(_) => "cooling",
            Self::Ejected(_) => "ejected",
            Self::Disabled => "disabled",
            Self::NoCredential => "no_credential",
        }
    }
}

pub struct BackendEndpoint {
    pub spec: Backend,
    /// `x-sluice-backend`'s value, copied per worker: every answer from the backend carries it.
    pub name_header: PerWorker<HeaderValue>,
    pub health: Health,
    pub metrics: BackendMetrics,
    /// Attempts and failures since the last report; the same counters as the previous
    /// config's backend of that name, so a config change loses none.
    pub attempts: Arc<AttemptCounts>,
    pub credential: CredentialSlot,
    resolver: Arc<dyn SecretResolver>,
    refresh: RefreshPolicy,
    upstream: Arc<Upstream>,
    /// Where the backend's URL points, read once; `None` when its host is no HTTP authority.
    /// A copy per worker: every call clones it into its connection's pool key.
    origin: PerWorker<Option<Origin>>,
    /// The same client wrapped to measure latency, for least-latency pools only: its mutex
    /// is not worth paying where no one reads the estimate.
    measured: Mutex<PeakEwma<UpstreamService, CompleteOnResponse>>,
}

/// Why an attempt produced no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoResponse {
    Connect,
    Timeout,
    /// No valid URI inside the backend's deployment could be built for the call; nothing
    /// was sent, and the backend is not to blame.
    BadUri,
}

impl NoResponse {
    /// The `error.type` of spans.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect_error",
            Self::Timeout => "timeout",
            Self::BadUri => "bad_upstream_uri",
        }
    }
}

/// A response extension: the backend said it has no such deployment (Azure's 404
/// `DeploymentNotFound`), so the call should move on to another backend.
#[derive(Clone, Copy, Debug)]
pub struct DeploymentMissing;

/// A response extension: the proxy asked this backend for stream usage on the client's
/// behalf, so the usage-only event is not the client's to see.
#[derive(Clone, Copy, Debug)]
pub struct UsageAskedFor;

/// How much of a 404's body is read to find its error code, and for how long.
const NOT_FOUND_READ_LIMIT: usize = 64 * 1024;
const NOT_FOUND_READ_TIME: Duration = Duration::from_secs(5);

impl BackendEndpoint {
    /// A backend whose credential is still to be resolved ([`Self::refresh_credential`]).
    pub fn new(
        spec: Backend,
        upstream: Arc<Upstream>,
        resolver: Arc<dyn SecretResolver>,
        refresh: RefreshPolicy,
        metrics: BackendMetrics,
        attempts: Arc<AttemptCounts>,
    ) -> Self {
        let decay_ns = EWMA_DECAY.as_nanos() as f64;
        Self {
            // Read once per worker: each copy's reference count stays on its worker's core.
            origin: PerWorker::new(|_| Origin::of_url(spec.url.as_url())),
            name_header: copied_per_worker(
                &HeaderValue::from_str(spec.name.as_str())
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            ),
            spec,
            health: Health::default(),
            metrics,
            attempts,
            credential: CredentialSlot::unresolved(),
            resolver,
            refresh,
            measured: Mutex::new(PeakEwma::new(
                UpstreamService(upstream.clone()),
                DEFAULT_RTT,
                decay_ns,
                CompleteOnResponse::default(),
            )),
            upstream,
        }
    }

    pub fn state(&self, now: Nanos) -> State {
        if !self.spec.enabled {
            return State::Disabled;
        }
        if self.credential.is_missing() {
            return State::NoCredential;
        }
        match self.health.check(now) {
            Ok(()) => State::Available,
            Err(Unavailable::CoolingDown(wait)) => State::Cooling(wait),
            Err(Unavailable::Ejected(wait)) => State::Ejected(wait),
        }
    }

    /// PeakEWMA latency × pending requests: lower is better.
    pub fn load(&self) -> Cost {
        self.measured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .load()
    }

    /// Sends one attempt, begun at `started`, and updates health from what came back. A 401
    /// re-reads the backend's secret once and, when it changed (a rotated key), sends again
    /// with it.
    pub async fn send(
        &self,
        call: &ClientCall<'_>,
        started: Instant,
        per_try_timeout: Duration,
        measure_latency: bool,
        span: &Traced,
    ) -> Result<Response<UpstreamBody>, NoResponse> {
        let used = self.credential.generation();
        let mut response = self
            .send_once(call, started, per_try_timeout, measure_latency, span)
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED
            && self
                .credential
                .refresh_after_refusal(used, &self.credential_source())
                .await
        {
            tracing::info!(backend.name = %self.spec.name, "backend refused its credential; retrying with the refreshed one");
            response = self
                .send_once(call, Instant::now(), per_try_timeout, measure_latency, span)
                .await?;
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            // A key this backend keeps refusing will not start working by itself: keep traffic
            // away from it (the call itself fails over to another backend).
            tracing::warn!(backend.name = %self.spec.name, "backend refuses its key; ejecting it");
            self.eject(Nanos::now(), EjectionReason::key_rejected);
        }
        let mut response = if response.status() == StatusCode::NOT_FOUND {
            // Boxed: reading a 404's body is the largest state this future would hold, and
            // inline every call's future would be that large, to be copied as it is built.
            Box::pin(self.look_into_not_found(call, response)).await
        } else {
            response.map(UpstreamBody::streaming)
        };
        if call.ask_for_usage && self.streams_usage(call) {
            response.extensions_mut().insert(UsageAskedFor);
        }
        Ok(response)
    }

    /// Reads a 404's error code: a backend without the pool's deployment is kept out of the
    /// pool for a while and the response is marked for a retry elsewhere. Any other 404 (an
    /// unknown operation, a missing file) goes to the client as it came.
    async fn look_into_not_found(
        &self,
        call: &ClientCall<'_>,
        response: Response<ResponseBody>,
    ) -> Response<UpstreamBody> {
        let (mut parts, body) = response.into_parts();
        let (read, rest) = read_some(body, NOT_FOUND_READ_LIMIT).await;
        let missing = parts
            .headers
            .get("x-ms-error-code")
            .is_some_and(|code| is_missing_deployment_code(code.as_bytes()))
            || (rest.is_none()
                && error_code(&read)
                    .is_some_and(|code| is_missing_deployment_code(code.as_bytes())));
        if missing {
            let (excluded_for, first) = self.health.record_missing_deployment(Nanos::now());
            self.metrics.ejected(EjectionReason::deployment_not_found);
            let deployment = self.spec.deployment_for(call.requested);
            if first {
                tracing::warn!(pool.name = %call.requested, backend.name = %self.spec.name, deployment, excluded_secs = excluded_for.as_secs(), "backend has no such deployment; keeping it out of the pool");
            } else {
                tracing::debug!(pool.name = %call.requested, backend.name = %self.spec.name, deployment, excluded_secs = excluded_for.as_secs(), "backend still has no such deployment");
            }
            parts.extensions.insert(DeploymentMissing);
        }
        Response::from_parts(parts, UpstreamBody::partly_read(read, rest))
    }

    /// Resolves the credential again (first resolution, background refresh).
    pub async fn refresh_credential(&self) -> Refreshed {
        self.credential.refresh(&self.credential_source()).await
    }

    fn credential_source(&self) -> CredentialSource<'_> {
        CredentialSource {
            spec: &self.spec,
            resolver: self.resolver.as_ref(),
            policy: self.refresh,
            metrics: &self.metrics,
        }
    }

    /// One exchange with the backend; its latency and per-try deadline count from `started`.
    async fn send_once(
        &self,
        call: &ClientCall<'_>,
        started: Instant,
        per_try_timeout: Duration,
        measure_latency: bool,
        span: &Traced,
    ) -> Result<Response<ResponseBody>, NoResponse> {
        let (origin, mut request) = self.upstream_request(call).map_err(|error| {
            tracing::error!(pool.name = %call.requested, backend.name = %self.spec.name, %error, "cannot build the upstream URI; failing the call");
            NoResponse::BadUri
        })?;
        span.inject(request.headers_mut());
        // The deadline from the attempt's start (`timeout` would read the clock again). The
        // per-try timeout is at most an hour, so the sum cannot overflow.
        let deadline = tokio::time::Instant::from_std(started + per_try_timeout);
        let outcome = if measure_latency {
            let future = {
                let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
                measured.call((origin.clone(), request))
            };
            tokio::time::timeout_at(deadline, future).await
        } else {
            // Boxed: the exchange's future is large, and inline each enclosing future (this
            // one, `send`, the attempt) would copy it again as it is built (profiled: 2k
            // instructions of `memcpy` per call against one allocation).
            tokio::time::timeout_at(deadline, Box::pin(self.upstream.request(origin, request)))
                .await
        };
        let ended = Instant::now();
        let seconds = ended.saturating_duration_since(started).as_secs_f64();
        let now = Nanos::from_instant(ended);
        match outcome {
            Ok(Ok(response)) => {
                self.observe(&response, now, seconds, span);
                Ok(response)
            }
            Ok(Err(error)) => {
                tracing::debug!(backend.name = %self.spec.name, error = %error, "upstream request failed");
                self.metrics.response(None, seconds);
                self.eject(now, EjectionReason::connect_error);
                Err(NoResponse::Connect)
            }
            Err(_) => {
                self.metrics.response(None, seconds);
                self.eject(now, EjectionReason::timeout);
                Err(NoResponse::Timeout)
            }
        }
    }

    fn observe(&self, response: &Response<ResponseBody>, now: Nanos, seconds: f64, span: &Traced) {
        let status = response.status();
        self.metrics.response(Some(status.as_u16()), seconds);
        if let Some(wait) = rate_limit::cooldown(status, response.headers()) {
            self.health.cool_down(now, wait);
            let cooldown_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            span.cooldown(cooldown_ms);
            tracing::debug!(backend.name = %self.spec.name, cooldown_ms, "backend cooling down");
        }
        if status.is_server_error() {
            self.eject(now, EjectionReason::status_5xx);
        } else if status.is_success() {
            self.health.record_success();
        }
    }

    /// Takes the backend out of rotation for a while (exponential ejection), counted by why.
    pub fn eject(&self, now: Nanos, reason: EjectionReason) {
        self.health.record_failure(now);
        self.metrics.ejected(reason);
    }

    /// The request for this backend, in origin form, and the origin it goes to.
    fn upstream_request(
        &self,
        call: &ClientCall<'_>,
    ) -> Result<(&Origin, Request<Full<Bytes>>), UpstreamUriError> {
        let origin = self
            .origin
            .current()
            .as_ref()
            .ok_or(UpstreamUriError::InvalidOrigin)?;
        let deployment = self.spec.deployment_for(call.requested);
        let target = UpstreamTarget {
            base_path: self.spec.url.path_prefix(),
            kind: self.spec.kind,
            api_version: self
                .spec
                .api_version
                .as_ref()
                .map_or(ApiVersion::DEFAULT, |v| v.as_str()),
            deployment,
            operation: call.operation(),
            query: call.query(),
        }
        .build(&call.target)?;
        let include_usage = call.ask_for_usage && self.streams_usage(call);
        let body = call.upstream_body(self.body_model(call, deployment), include_usage);
        let body_len = body.len();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = target.into();
        let headers = request.headers_mut();
        *headers = spare_map();
        for_upstream(&call.headers, body_len, headers);
        if let Credential::Header(name, value) = &**self.credential.load() {
            headers.insert(name.clone(), value.current().clone());
        }
        Ok((origin, request))
    }

    /// Whether this backend accepts `stream_options` for this call: Azure from api-version
    /// 2024-09-01-preview on (older ones answer 400), OpenAI always.
    fn streams_usage(&self, call: &ClientCall<'_>) -> bool {
        match self.spec.kind {
            BackendKind::Openai => true,
            BackendKind::AzureOpenai => {
                let asked = call.query().and_then(|query| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("api-version="))
                });
                let version = asked.unwrap_or_else(|| {
                    self.spec
                        .api_version
                        .as_ref()
                        .map_or(ApiVersion::DEFAULT, |v| v.as_str())
                });
                version.get(..10).is_some_and(|date| date >= "2024-09-01")
            }
        }
    }

    /// The model the body must name for this backend, when it differs from what the client sent.
    fn body_model<'a>(&self, call: &ClientCall<'_>, deployment: &'a str) -> Option<&'a str> {
        match (self.spec.kind, call.style) {
            // OpenAI routes by the body's model: it must carry the (renamed) name.
            (BackendKind::Openai, CallStyle::Azure) => Some(deployment),
            (BackendKind::Openai, CallStyle::OpenAi) => {
                (deployment != call.requested).then_some(deployment)
            }
            // Azure routes by the URL; the body's model is informational.
            (BackendKind::AzureOpenai, _) => None,
        }
    }
}

/// Up to `limit` bytes of `body`, and what is left of it when it was longer, failed or slow.
async fn read_some(mut body: ResponseBody, limit: usize) -> (Bytes, Option<ResponseBody>) {
    let mut read = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + NOT_FOUND_READ_TIME;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return (read.freeze(), None),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
                if read.len() > limit {
                    return (read.freeze(), Some(body));
                }
            }
            // Whatever went wrong reaches the client when it reads on.
            Ok(Some(Err(_))) | Err(_) => return (read.freeze(), Some(body)),
        }
    }
}

/// `error.code` of an error body in OpenAI's (and Azure's) shape: a string, or a number.
fn error_code(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    match body.get("error")?.get("code")? {
        serde_json::Value::String(code) => Some(code.clone()),
        serde_json::Value::Number(code) => Some(code.to_string()),
        _ => None,
    }
}

/// Azure's code for a deployment the resource lacks, and OpenAI's for a model the account
/// cannot use: either way this backend cannot serve the pool.
fn is_missing_deployment_code(code: &[u8]) -> bool {
    code.eq_ignore_ascii_case(b"DeploymentNotFound")
        || code.eq_ignore_ascii_case(b"model_not_found")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::metrics::ProxyMetrics;
    use crate::secrets::LocalSecrets;

    /// A call whose URI cannot stay inside the deployment fails before anything is sent, and
    /// the backend is not blamed for it.
    #[tokio::test]
    async fn an_unbuildable_upstream_uri_fails_the_call_without_ejecting() {
        let spec: Backend = serde_json::from_value(serde_json::json!({
            // Nothing listens there: an attempt to connect would fail as `Connect`.
            "name": "a", "url": "http://127.0.0.1:1", "kind": "azure_openai", "auth": {"type": "none"}
        }))
        .unwrap();
        let endpoint = BackendEndpoint::new(
            spec,
            Upstream::new(Duration::from_secs(1)).unwrap(),
            Arc::new(LocalSecrets),
            RefreshPolicy::default(),
            ProxyMetrics::new().backend("p", "a"),
            Arc::default(),
        );
        endpoint.refresh_credential().await;
        let call = ClientCall {
            method: http::Method::POST,
            style: CallStyle::Azure,
            requested: "p",
            target: http::uri::PathAndQuery::from_static("/openai/deployments/p/../../files"),
            operation_start: "/openai/deployments/p/".len(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
            ask_for_usage: false,
            traced: false,
        };
        let sent = endpoint
            .send(
                &call,
                Instant::now(),
                Duration::from_secs(1),
                false,
                &Traced::none(),
            )
            .await;
        assert!(matches!(sent, Err(NoResponse::BadUri)));
        assert_eq!(endpoint.state(Nanos::now()), State::Available);
    }

    #[test]
    fn reads_the_error_code_of_azure_and_openai_404s() {
        let azure = br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#;
        assert_eq!(error_code(azure).as_deref(), Some("DeploymentNotFound"));
        let openai = br#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
        let missing =
            |body| error_code(body).is_some_and(|c| is_missing_deployment_code(c.as_bytes()));
        assert!(missing(openai));
        for other in [
            &br#"{"error":{"code":"404","message":"Resource not found"}}"#[..],
            br#"{"error":{"code":null}}"#,
            br#"{"error":{"code":404}}"#,
            br#"{"error":"nope"}"#,
            b"<html>not found</html>",
            b"",
        ] {
            assert!(!missing(other));
        }
    }
}
