//! Keeps backend credentials fresh off the request path: Key Vault keys every refresh
//! interval, Entra ID tokens before they expire, and unresolved credentials with backoff, so
//! a backend whose vault was down at start joins as soon as the vault answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::backend::RefreshPolicy;
use crate::clock::Nanos;
use crate::proxy::Proxy;

/// How often due credentials are looked for: the finest retry step, and cheap (a walk over
/// the configured backends, a few atomics each).
const TICK: Duration = Duration::from_secs(1);

pub async fn run(proxy: Arc<Proxy>, policy: RefreshPolicy) {
    let mut ticker = tokio::time::interval(TICK.min(policy.interval));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(config) = proxy.current() else {
            continue;
        };
        let now = Nanos::now();
        for endpoint in config.pools.values().flat_map(|pool| pool.backends.iter()) {
            if endpoint.credential.claim(now, policy) {
                let endpoint = endpoint.clone();
                // Each resolution is bounded by the Azure request timeout; running them apart
                // keeps one slow vault from delaying the others.
                tokio::spawn(async move { endpoint.refresh_credential().await });
            }
        }
    }
}
