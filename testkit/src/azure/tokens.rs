//! The ledger of access tokens the fake identity issued.
//!
//! Real Entra tokens are signed JWTs a resource validates offline; the fakes instead share
//! this ledger, so the fake Key Vault (and tests) can ask "was this token issued for this
//! scope, and is it still valid?" and get an exact answer, including *why* it is not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::random::random_u64;

/// One access token the fake identity handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The opaque bearer token, `fake-aad-{scope tag}-{counter}-{random}`.
    pub token: String,
    /// The `scope` form field it was requested for, verbatim.
    pub scope: String,
    pub client_id: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

impl IssuedToken {
    /// Whether the token is still valid at `now`.
    pub fn is_live_at(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }
}

/// What the ledger says about a presented token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    /// Never issued by this identity (or made up by a test).
    Unknown,
    /// Issued, but for another scope; carries that scope.
    WrongScope(String),
    Expired,
}

#[derive(Debug, Default)]
pub(crate) struct TokenLedger {
    counter: AtomicU64,
    /// By token string: validation is the hot path, listing by scope is for tests.
    tokens: Mutex<HashMap<String, IssuedToken>>,
}

impl TokenLedger {
    pub fn issue(&self, scope: &str, client_id: &str, lifetime: Duration) -> IssuedToken {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let issued_at = SystemTime::now();
        let issued = IssuedToken {
            token: format!("fake-aad-{}-{n}-{:016x}", scope_tag(scope), random_u64()),
            scope: scope.to_owned(),
            client_id: client_id.to_owned(),
            issued_at,
            // Lifetimes are capped when configured, so this cannot overflow in practice.
            expires_at: issued_at.checked_add(lifetime).unwrap_or(issued_at),
        };
        self.lock().insert(issued.token.clone(), issued.clone());
        issued
    }

    pub fn check(&self, token: &str, scope: &str) -> TokenCheck {
        let tokens = self.lock();
        match tokens.get(token) {
            None => TokenCheck::Unknown,
            Some(issued) if issued.scope != scope => TokenCheck::WrongScope(issued.scope.clone()),
            Some(issued) if !issued.is_live_at(SystemTime::now()) => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
        }
    }

    /// Tokens issued for exactly `scope` (`None`: all), oldest first.
    pub fn issued(&self, scope: Option<&str>) -> Vec<IssuedToken> {
        let mut issued: Vec<IssuedToken> = self
            .lock()
            .values()
            .filter(|token| scope.is_none_or(|scope| token.scope == scope))
            .cloned()
            .collect();
        issued.sort_by_key(|token| (token.issued_at, token_counter(&token.token)));
        issued
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, IssuedToken>> {
        // The map stays consistent even if a holder panicked: every update is one insert.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A short readable hint of the scope, so a token in a log says what it is for:
/// `https://vault.azure.net/.default` gives `vault-azure-net`.
fn scope_tag(scope: &str) -> String {
    let without_scheme = scope.split_once("://").map_or(scope, |(_, rest)| rest);
    let resource = without_scheme.split('/').next().unwrap_or_default();
    let tag: String = resource
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if tag.is_empty() {
        "none".to_owned()
    } else {
        tag
    }
}

/// The counter part of a token, to order tokens issued within one clock tick.
fn token_counter(token: &str) -> u64 {
    token
        .rsplit('-')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "https://vault.azure.net/.default";

    #[test]
    fn tokens_are_unique_tagged_and_checked_per_scope() {
        let ledger = TokenLedger::default();
        let first = ledger.issue(VAULT, "app", Duration::from_secs(60));
        let second = ledger.issue(VAULT, "app", Duration::from_secs(60));
        assert_ne!(first.token, second.token);
        assert!(first.token.starts_with("fake-aad-vault-azure-net-1-"));
        assert!(second.token.starts_with("fake-aad-vault-azure-net-2-"));
        assert_eq!(ledger.check(&first.token, VAULT), TokenCheck::Valid);
        assert_eq!(
            ledger.check(&first.token, "https://management.azure.com/.default"),
            TokenCheck::WrongScope(VAULT.to_owned())
        );
        assert_eq!(ledger.check("made-up", VAULT), TokenCheck::Unknown);
        assert_eq!(ledger.issued(Some(VAULT)), vec![first, second]);
        assert!(ledger.issued(Some("other")).is_empty());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let ledger = TokenLedger::default();
        let token = ledger.issue(VAULT, "app", Duration::ZERO);
        assert_eq!(ledger.check(&token.token, VAULT), TokenCheck::Expired);
    }

    #[test]
    fn scope_tags_stay_header_safe() {
        assert_eq!(scope_tag(VAULT), "vault-azure-net");
        assert_eq!(scope_tag("api://my app/.default"), "my-app");
        assert_eq!(scope_tag(""), "none");
    }
}
