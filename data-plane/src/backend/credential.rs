//! A backend's credential: resolved from its `auth`, read lock-free by every request,
//! refreshed in the background (keys every interval, tokens before they expire) and after the
//! backend refuses it. A failed refresh keeps the value that still works.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use sluice_model::{Auth, Backend, BackendKind};

use crate::clock::Nanos;
use crate::headers::copied_per_worker;
use crate::metrics::BackendMetrics;
use crate::per_worker::PerWorker;
use crate::secrets::SecretResolver;

static API_KEY: HeaderName = HeaderName::from_static("api-key");

/// First retry after a failed resolution; doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Tokens are renewed this long before they expire (or at half their remaining life when
/// that is shorter), so requests never carry an expired one.
const TOKEN_RENEWAL_MARGIN: Duration = Duration::from_secs(300);

/// How requests to a backend are authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// The value is copied per worker: every request to the backend clones it.
    Header(HeaderName, PerWorker<HeaderValue>),
    None,
    /// Never resolved: the backend takes no traffic until it is. Holds the reason.
    Missing(String),
}

/// When credentials are refreshed in the background.
#[derive(Clone, Copy, Debug)]
pub struct RefreshPolicy {
    pub interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
        }
    }
}

/// Where a backend's credential comes from and what its resolutions report to.
#[derive(Clone, Copy)]
pub struct CredentialSource<'a> {
    pub spec: &'a Backend,
    pub resolver: &'a dyn SecretResolver,
    pub policy: RefreshPolicy,
    pub metrics: &'a BackendMetrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refreshed {
    Changed,
    Unchanged,
    Failed,
}

pub struct CredentialSlot {
    current: ArcSwap<Credential>,
    /// Whether `current` is `Missing`, read by every backend selection without touching
    /// `current`.
    missing: AtomicBool,
    /// Bumped on every change, so a request refused with an older credential knows another
    /// task already replaced it.
    generation: AtomicU64,
    next_refresh: AtomicU64,
    /// When the current token expires (`u64::MAX` for keys): failed renewals retry well
    /// before it, whatever the backoff says.
    expires: AtomicU64,
    failures: AtomicU32,
    /// One resolution at a time per backend: a burst of 401s costs one Key Vault read.
    refreshing: tokio::sync::Mutex<()>,
}

impl CredentialSlot {
    /// Not resolved yet; due for resolution right away.
    pub fn unresolved() -> Self {
        Self {
            current: ArcSwap::from_pointee(Credential::Missing("not resolved yet".into())),
            missing: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            next_refresh: AtomicU64::new(0),
            expires: AtomicU64::new(u64::MAX),
            failures: AtomicU32::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn load(&self) -> Guard<Arc<Credential>> {
        self.current.load()
    }

    pub fn is_missing(&self) -> bool {
        self.missing.load(Ordering::Acquire)
    }

    /// The only way `current` changes, so `missing` always tells what it holds.
    fn store(&self, credential: Credential) {
        let missing = matches!(credential, Credential::Missing(_));
        self.current.store(Arc::new(credential));
        self.missing.store(missing, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Claims a due refresh for a background task; `false` when another task has it.
    pub fn claim(&self, now: Nanos, policy: RefreshPolicy) -> bool {
        let due = self.next_refresh.load(Ordering::Relaxed);
        due <= now.0
            && self
                .next_refresh
                .compare_exchange(
                    due,
                    now.after(policy.interval).0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Resolves again and stores the result when it is usable.
    pub async fn refresh(&self, source: &CredentialSource<'_>) -> Refreshed {
        let _one_at_a_time = self.refreshing.lock().await;
        self.refresh_locked(source).await
    }

    /// After the backend refused the credential of `generation`: `true` when the request
    /// should be sent again because the credential is now a different one.
    pub async fn refresh_after_refusal(
        &self,
        generation: u64,
        source: &CredentialSource<'_>,
    ) -> bool {
        let _one_at_a_time = self.refreshing.lock().await;
        if self.generation() != generation {
            return !self.is_missing();
        }
        self.refresh_locked(source).await == Refreshed::Changed
    }

    async fn refresh_locked(&self, source: &CredentialSource<'_>) -> Refreshed {
        let CredentialSource {
            spec,
            resolver,
            policy,
            metrics,
        } = *source;
        let now = Nanos::now();
        match resolve(spec, resolver).await {
            Ok((credential, expires_at)) => {
                metrics.credential_refresh(true);
                self.failures.store(0, Ordering::Relaxed);
                let due = match expires_at {
                    Some(expires_at) => renewal_due(now, expires_at, policy.interval),
                    None if credential == Credential::None => Nanos(u64::MAX),
                    None => now.after(policy.interval),
                };
                self.next_refresh.store(due.0, Ordering::Relaxed);
                let expires = expires_at.map_or(u64::MAX, |at| {
                    now.after(at.duration_since(SystemTime::now()).unwrap_or_default())
                        .0
                });
                self.expires.store(expires, Ordering::Relaxed);
                if **self.current.load() == credential {
                    return Refreshed::Unchanged;
                }
                let was_missing = self.is_missing();
                self.store(credential);
                self.generation.fetch_add(1, Ordering::AcqRel);
                if was_missing {
                    tracing::info!(backend.name = %spec.name, "backend credential resolved; it takes traffic");
                }
                Refreshed::Changed
            }
            Err(reason) => {
                metrics.credential_refresh(false);
                let failures = self.failures.fetch_add(1, Ordering::Relaxed);
                let until_expiry = Nanos(self.expires.load(Ordering::Relaxed))
                    .remaining_from(now)
                    .unwrap_or_default();
                let retry = retry_after(failures, policy.interval, until_expiry);
                self.next_refresh
                    .store(now.after(retry).0, Ordering::Relaxed);
                if self.is_missing() {
                    tracing::warn!(backend.name = %spec.name, reason = %reason, retry_in_s = retry.as_secs_f64(), "backend has no credential; it takes no traffic");
                    self.store(Credential::Missing(reason));
                } else {
                    tracing::warn!(backend.name = %spec.name, reason = %reason, retry_in_s = retry.as_secs_f64(), "cannot refresh the backend's credential; keeping the cached one");
                }
                Refreshed::Failed
            }
        }
    }
}

/// Backoff after the `failures`-th failed resolution in a row (0-based): 1 s doubling up to
/// the refresh interval, but within half the life a cached token has left.
fn retry_after(failures: u32, interval: Duration, until_expiry: Duration) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.min(16))
        .min(interval)
        .min((until_expiry / 2).max(FIRST_RETRY))
}

/// Renew at the margin before expiry, or halfway through a shorter remaining life, and at
/// least every `interval`.
fn renewal_due(now: Nanos, expires_at: SystemTime, interval: Duration) -> Nanos {
    let remaining = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let margin = TOKEN_RENEWAL_MARGIN.min(remaining / 2);
    now.after((remaining - margin).min(interval))
}

/// The credential a backend's `auth` asks for, and when it expires (tokens only). The error
/// is the reason, free of secret values.
async fn resolve(
    spec: &Backend,
    resolver: &dyn SecretResolver,
) -> Result<(Credential, Option<SystemTime>), String> {
    let (name, value, expires_at) = match &spec.auth {
        Auth::None {} => return Ok((Credential::None, None)),
        Auth::EntraId {} => {
            let token = resolver
                .entra_token()
                .await
                .map_err(|error| error.to_string())?;
            let bearer = format!("Bearer {}", token.value.expose_secret());
            (AUTHORIZATION, bearer, Some(token.expires_at))
        }
        Auth::ApiKey { secret } => {
            let value: SecretString = resolver
                .resolve(secret)
                .await
                .map_err(|error| error.to_string())?;
            let text = match spec.kind {
                BackendKind::AzureOpenai => value.expose_secret().to_owned(),
                BackendKind::Openai => format!("Bearer {}", value.expose_secret()),
            };
            let name = match spec.kind {
                BackendKind::AzureOpenai => API_KEY.clone(),
                BackendKind::Openai => AUTHORIZATION,
            };
            (name, text, None)
        }
    };
    let mut header = HeaderValue::try_from(value).map_err(|_| match &spec.auth {
        Auth::ApiKey { secret } => format!("{secret} holds characters not allowed in a header"),
        _ => "the Entra ID token holds characters not allowed in a header".to_owned(),
    })?;
    // Keeps the value out of hyper's and our own Debug output.
    header.set_sensitive(true);
    Ok((
        Credential::Header(name, copied_per_worker(&header)),
        expires_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_resolutions_back_off_but_not_past_a_tokens_life() {
        let interval = Duration::from_secs(300);
        let forever = Duration::MAX;
        let waits: Vec<u64> = (0..10)
            .map(|n| retry_after(n, interval, forever).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        let expiring = Duration::from_secs(40);
        assert_eq!(retry_after(9, interval, expiring), Duration::from_secs(20));
        assert_eq!(retry_after(9, interval, Duration::ZERO), FIRST_RETRY);
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        let now = Nanos::now();
        let hour = SystemTime::now() + Duration::from_secs(3600);
        let due = renewal_due(now, hour, Duration::from_secs(7200));
        let wait = due.remaining_from(now).unwrap();
        assert!(
            wait <= Duration::from_secs(3300) && wait > Duration::from_secs(3290),
            "{wait:?}"
        );
        let short = SystemTime::now() + Duration::from_secs(10);
        let wait = renewal_due(now, short, Duration::from_secs(300))
            .remaining_from(now)
            .unwrap();
        assert!(
            wait <= Duration::from_secs(5),
            "half of a short life: {wait:?}"
        );
        let capped = renewal_due(now, hour, Duration::from_secs(60))
            .remaining_from(now)
            .unwrap();
        assert!(capped <= Duration::from_secs(60), "{capped:?}");
        let expired = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(renewal_due(now, expired, Duration::from_secs(60)), now);
    }
}
