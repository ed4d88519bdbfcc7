//! One upstream deployment: where and how to call it, and whether it may be called now.

pub mod credential;
pub mod health;
pub mod rate_limit;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use sluice_model::{ApiVersion, Backend, BackendKind};
use tower::Service as _;
use tower::load::peak_ewma::Cost;
use tower::load::{CompleteOnResponse, Load as _, PeakEwma};

use crate::call::{CallStyle, ClientCall};
use crate::clock::Nanos;
use crate::metrics::BackendMetrics;
use crate::secrets::SecretResolver;
use crate::trace;
use crate::upstream::{Upstream, UpstreamService};

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
    pub name_header: HeaderValue,
    pub health: Health,
    pub metrics: BackendMetrics,
    pub credential: CredentialSlot,
    resolver: Arc<dyn SecretResolver>,
    refresh: RefreshPolicy,
    upstream: Arc<Upstream>,
    /// The same client wrapped to measure latency, for least-latency pools only: its mutex
    /// is not worth paying where no one reads the estimate.
    measured: Mutex<PeakEwma<UpstreamService, CompleteOnResponse>>,
}

/// Why an attempt produced no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    Connect,
    Timeout,
}

impl TransportFailure {
    /// The `error.type` of spans.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect_error",
            Self::Timeout => "timeout",
        }
    }
}

impl BackendEndpoint {
    /// A backend whose credential is still to be resolved ([`Self::refresh_credential`]).
    pub fn new(
        spec: Backend,
        upstream: Arc<Upstream>,
        resolver: Arc<dyn SecretResolver>,
        refresh: RefreshPolicy,
        metrics: BackendMetrics,
    ) -> Self {
        let decay_ns = EWMA_DECAY.as_nanos() as f64;
        Self {
            name_header: HeaderValue::from_str(spec.name.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            spec,
            health: Health::default(),
            metrics,
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

    /// Sends one attempt and updates health from what came back. A 401 re-reads the
    /// backend's secret once and, when it changed (a rotated key), sends again with it.
    pub async fn send(
        &self,
        call: &ClientCall,
        per_try_timeout: Duration,
        measure_latency: bool,
        span: &tracing::Span,
    ) -> Result<Response<Incoming>, TransportFailure> {
        let used = self.credential.generation();
        let mut response = self
            .send_once(call, per_try_timeout, measure_latency, span)
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED
            && self
                .credential
                .refresh_after_refusal(used, &self.credential_source())
                .await
        {
            tracing::info!(backend.name = %self.spec.name, "backend refused its credential; retrying with the refreshed one");
            response = self
                .send_once(call, per_try_timeout, measure_latency, span)
                .await?;
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            // A key this backend keeps refusing will not start working by itself: keep traffic
            // away from it (the call itself fails over to another backend).
            tracing::warn!(backend.name = %self.spec.name, "backend refuses its key; ejecting it");
            self.health.record_failure(Nanos::now());
        }
        Ok(response)
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

    async fn send_once(
        &self,
        call: &ClientCall,
        per_try_timeout: Duration,
        measure_latency: bool,
        span: &tracing::Span,
    ) -> Result<Response<Incoming>, TransportFailure> {
        let mut request = self.upstream_request(call);
        trace::inject(span, request.headers_mut());
        let started = Nanos::now();
        let outcome = if measure_latency {
            let future = {
                let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
                measured.call(request)
            };
            tokio::time::timeout(per_try_timeout, future).await
        } else {
            tokio::time::timeout(per_try_timeout, self.upstream.request(request)).await
        };
        let now = Nanos::now();
        let seconds = Duration::from_nanos(now.0.saturating_sub(started.0)).as_secs_f64();
        match outcome {
            Ok(Ok(response)) => {
                self.observe(&response, now, seconds, span);
                Ok(response)
            }
            Ok(Err(error)) => {
                tracing::debug!(backend.name = %self.spec.name, error = %error, "upstream request failed");
                self.metrics.response(None, seconds);
                self.health.record_failure(now);
                Err(TransportFailure::Connect)
            }
            Err(_) => {
                self.metrics.response(None, seconds);
                self.health.record_failure(now);
                Err(TransportFailure::Timeout)
            }
        }
    }

    fn observe(
        &self,
        response: &Response<Incoming>,
        now: Nanos,
        seconds: f64,
        span: &tracing::Span,
    ) {
        let status = response.status();
        self.metrics.response(Some(status.as_u16()), seconds);
        if let Some(wait) = rate_limit::cooldown(status, response.headers()) {
            self.health.cool_down(now, wait);
            let cooldown_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            span.record("sluice.cooldown_ms", trace::int(cooldown_ms));
            tracing::debug!(backend.name = %self.spec.name, cooldown_ms, "backend cooling down");
        }
        if status.is_server_error() {
            self.health.record_failure(now);
        } else if status.is_success() {
            self.health.record_success();
        }
    }

    fn upstream_request(&self, call: &ClientCall) -> Request<Full<Bytes>> {
        let deployment = self.spec.deployment_for(&call.requested);
        let mut uri = String::with_capacity(
            self.spec.url.base().len() + call.operation.len() + deployment.len() + 64,
        );
        uri.push_str(self.spec.url.base());
        match self.spec.kind {
            BackendKind::AzureOpenai => {
                uri.push_str("/openai/deployments/");
                uri.push_str(deployment);
                uri.push('/');
                uri.push_str(&call.operation);
                let api_version = self
                    .spec
                    .api_version
                    .as_ref()
                    .map_or(ApiVersion::DEFAULT, |v| v.as_str());
                push_query(&mut uri, call.query.as_deref(), Some(api_version));
            }
            BackendKind::Openai => {
                uri.push_str("/v1/");
                uri.push_str(&call.operation);
                push_query(&mut uri, call.query.as_deref(), None);
            }
        }
        let body = match self.body_model(call, deployment) {
            Some(model) => call.body_with_model(model),
            None => call.body.clone(),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = Uri::try_from(uri).unwrap_or_default();
        let headers = request.headers_mut();
        headers.clone_from(&call.headers);
        if let Credential::Header(name, value) = &**self.credential.load() {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    /// The model the body must name for this backend, when it differs from what the client sent.
    fn body_model<'a>(&self, call: &ClientCall, deployment: &'a str) -> Option<&'a str> {
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

/// Appends the client's query, replacing or adding `api-version` for Azure backends and
/// dropping it for OpenAI ones.
fn push_query(uri: &mut String, query: Option<&str>, api_version: Option<&str>) {
    let mut separator = '?';
    let mut has_version = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let is_version = pair.starts_with("api-version=");
        if is_version && api_version.is_none() {
            continue;
        }
        has_version |= is_version;
        uri.push(separator);
        uri.push_str(pair);
        separator = '&';
    }
    if let (Some(version), false) = (api_version, has_version) {
        uri.push(separator);
        uri.push_str("api-version=");
        uri.push_str(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(client: Option<&str>, version: Option<&str>) -> String {
        let mut uri = String::new();
        push_query(&mut uri, client, version);
        uri
    }

    #[test]
    fn azure_calls_always_carry_an_api_version() {
        assert_eq!(query(None, Some("2024-10-21")), "?api-version=2024-10-21");
        assert_eq!(
            query(Some("api-version=2025-01-01"), Some("2024-10-21")),
            "?api-version=2025-01-01"
        );
        assert_eq!(
            query(Some("a=1"), Some("2024-10-21")),
            "?a=1&api-version=2024-10-21"
        );
    }

    #[test]
    fn openai_calls_drop_the_api_version() {
        assert_eq!(query(Some("api-version=2025-01-01&a=1"), None), "?a=1");
        assert_eq!(query(None, None), "");
    }
}
