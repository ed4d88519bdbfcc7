//! One attempt at a pool, as a tower service, and the retry policy that drives further
//! attempts on other backends (tower's `Retry` with a per-pool `TpsBudget`).

use std::future::{Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::Response;
use tower::Service;
use tower::retry::budget::Budget as _;

use sluice_model::{RetryOn, Strategy};

use crate::backend::{DeploymentMissing, NoResponse};
use crate::balance::{NoBackend, PoolRuntime};
use crate::call::ClientCall;
use crate::clock::Nanos;
use crate::metrics::{ProxyMetrics, RetryReason};
use crate::trace::Traced;
use crate::upstream::UpstreamBody;
use tracing::Instrument as _;

/// What each attempt carries: the call, lent by the request that owns it (tower's `Retry`
/// clones the attempt, which then copies a reference, with no count to write or allocation
/// to free), and the backends already tried.
#[derive(Clone)]
pub struct Attempt<'c> {
    pub call: &'c ClientCall<'c>,
    pub tried: Vec<usize>,
}

/// A backend's response and who gave it: what an attempt returns.
///
/// Carried beside the response rather than in its extensions: the first extension allocates
/// the response's extension map, on every call (profiled).
pub struct Answer {
    pub response: Response<UpstreamBody>,
    pub served: ServedBy,
    /// The span of the attempt that answered, kept until its body has passed; present only
    /// while traces are exported.
    pub span: Option<Traced>,
}

/// Which backend answered, on which attempt.
#[derive(Clone, Copy, Debug)]
pub struct ServedBy {
    pub backend: usize,
    pub attempt: usize,
}

#[derive(Debug, Clone, Copy)]
pub enum AttemptError {
    Transport {
        backend: usize,
        failure: NoResponse,
        attempt: usize,
    },
    NoBackend(NoBackend),
}

/// Sends an [`Attempt`] to the backend the pool's strategy picks.
///
/// It borrows the pool from the call's config snapshot, as the retry policy does: tower's
/// `Retry` clones both per attempt, and a cloned `Arc` is a write to a count every worker
/// shares, several times per call.
#[derive(Clone, Copy)]
pub struct PoolService<'c> {
    pub pool: &'c PoolRuntime,
}

type AttemptFuture<'c> = Pin<Box<dyn Future<Output = Result<Answer, AttemptError>> + Send + 'c>>;

impl<'c> Service<Attempt<'c>> for PoolService<'c> {
    type Response = Answer;
    type Error = AttemptError;
    type Future = AttemptFuture<'c>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt<'c>) -> Self::Future {
        let pool = self.pool;
        Box::pin(async move {
            // One look at the clock for the pick and the attempt's start (a read costs 25–40 ns
            // on the benchmark hosts).
            let started = Instant::now();
            let backend = pool
                .select(&attempt.tried, Nanos::from_instant(started))
                .map_err(AttemptError::NoBackend)?;
            let number = attempt.tried.len() + 1;
            let timeout = pool.retry.per_try_timeout_ms.as_duration();
            let measure_latency = pool.strategy == Strategy::LeastLatency;
            let endpoint = &pool.backends[backend];
            let span = Traced::attempt(
                attempt.call,
                endpoint.spec.name.as_str(),
                &endpoint.spec.url,
                number,
            );
            let result = match endpoint
                .send(attempt.call, started, timeout, measure_latency, &span)
                .instrument(span.span().clone())
                .await
            {
                Ok(response) => {
                    span.status(response.status().as_u16());
                    Ok(Answer {
                        response,
                        served: ServedBy {
                            backend,
                            attempt: number,
                        },
                        span: span.is_traced().then_some(span),
                    })
                }
                Err(failure) => {
                    span.failed(failure.label());
                    Err(AttemptError::Transport {
                        backend,
                        failure,
                        attempt: number,
                    })
                }
            };
            // A call whose URI could not be built never reached the backend.
            if !matches!(
                result,
                Err(AttemptError::Transport {
                    failure: NoResponse::BadUri,
                    ..
                })
            ) {
                let failed = failover_reason(&result, &pool.retry.retry_on).is_some();
                endpoint.attempts.record(failed);
            }
            result
        })
    }
}

/// Retries on another backend after a connect error, a timeout, a `retry_on` status, a
/// refused backend key (401) or a missing deployment (404 `DeploymentNotFound`), while attempts, budget and untried available backends remain.
#[derive(Clone, Copy)]
pub struct RetryOnAnotherBackend<'c> {
    pub pool: &'c PoolRuntime,
    pub metrics: &'c ProxyMetrics,
    pub attempts_left: u32,
}

impl<'c> RetryOnAnotherBackend<'c> {
    pub fn new(pool: &'c PoolRuntime, metrics: &'c ProxyMetrics) -> Self {
        pool.budget.current().deposit();
        let attempts_left = pool.retry.max_attempts.get().saturating_sub(1);
        Self {
            pool,
            metrics,
            attempts_left,
        }
    }
}

impl<'c> tower::retry::Policy<Attempt<'c>, Answer, AttemptError> for RetryOnAnotherBackend<'_> {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        attempt: &mut Attempt<'c>,
        result: &mut Result<Answer, AttemptError>,
    ) -> Option<Self::Future> {
        let reason = failover_reason(result, &self.pool.retry.retry_on)?;
        let backend = match result {
            Ok(answer) => answer.served.backend,
            Err(AttemptError::Transport { backend, .. }) => *backend,
            Err(AttemptError::NoBackend(_)) => return None,
        };
        if self.attempts_left == 0 {
            return None;
        }
        attempt.tried.push(backend);
        // With nothing else to try, the client gets this failure as the backend sent it.
        if !self.pool.has_candidate(&attempt.tried, Nanos::now())
            || !self.pool.budget.current().withdraw()
        {
            return None;
        }
        self.attempts_left -= 1;
        self.metrics.retry(self.pool.name.as_str(), reason);
        tracing::debug!(pool.name = %self.pool.name, backend.name = %self.pool.backends[backend].spec.name, ?reason, "retrying on another backend");
        Some(ready(()))
    }

    fn clone_request(&mut self, attempt: &Attempt<'c>) -> Option<Attempt<'c>> {
        Some(attempt.clone())
    }
}

/// Why an attempt's outcome calls for another backend, which also makes it a failed attempt
/// in the report; `None` when the outcome stands.
fn failover_reason(
    result: &Result<Answer, AttemptError>,
    retry_on: &RetryOn,
) -> Option<RetryReason> {
    match result {
        Ok(Answer { response, .. }) => {
            let status = response.status().as_u16();
            // A refused key or a missing deployment is that backend's problem, not the
            // request's: always fail over.
            Some(match status {
                401 => RetryReason::key_rejected,
                404 if response.extensions().get::<DeploymentMissing>().is_some() => {
                    RetryReason::deployment_not_found
                }
                _ if !retry_on.contains(status) => return None,
                429 => RetryReason::status_429,
                500..=599 => RetryReason::status_5xx,
                _ => RetryReason::status_other,
            })
        }
        Err(AttemptError::Transport { failure, .. }) => match failure {
            NoResponse::Connect => Some(RetryReason::connect_error),
            NoResponse::Timeout => Some(RetryReason::timeout),
            // Nothing was sent: another backend would get the same call.
            NoResponse::BadUri => None,
        },
        Err(AttemptError::NoBackend(_)) => None,
    }
}
