//! Bearer admin tokens. Tokens are kept only as SHA-256 digests and compared in constant
//! time; several may be configured at once so they can be rotated without downtime.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::store::Actor;

/// Shortest admin token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminAuthError {
    #[error(
        "no admin token configured: set SLUICE_ADMIN_TOKEN (or --admin-token), or pass \
         --insecure-no-admin-auth to run without authentication on loopback"
    )]
    NoToken,
    #[error("admin tokens must be at least {MIN_TOKEN_LEN} characters long")]
    TooShort,
}

struct AdminToken {
    /// Recorded in the audit log as `admin:<first 8 hex digits of the digest>`.
    id: String,
    digest: [u8; 32],
}

pub struct AdminAuth {
    /// `None` when authentication is switched off (`--insecure-no-admin-auth`).
    tokens: Option<Vec<AdminToken>>,
}

impl AdminAuth {
    pub fn with_tokens<S: AsRef<str>>(tokens: &[S]) -> Result<Self, AdminAuthError> {
        if tokens.is_empty() {
            return Err(AdminAuthError::NoToken);
        }
        let tokens = tokens
            .iter()
            .map(|token| {
                let token = token.as_ref();
                if token.len() < MIN_TOKEN_LEN {
                    return Err(AdminAuthError::TooShort);
                }
                let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                let id = digest[..4].iter().fold("admin:".to_owned(), |mut id, b| {
                    let _ = write!(id, "{b:02x}");
                    id
                });
                Ok(AdminToken { id, digest })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tokens: Some(tokens),
        })
    }

    pub fn disabled() -> Self {
        Self { tokens: None }
    }

    /// The actor behind `authorization`, if it carries a configured token.
    fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Actor> {
        let Some(tokens) = &self.tokens else {
            return Some(Actor("anonymous".into()));
        };
        let presented = authorization?.strip_prefix(b"Bearer ")?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Check every token so timing does not reveal which one matched.
        tokens
            .iter()
            .fold(None, |found, token| {
                let matches: bool = token.digest.ct_eq(&digest).into();
                found.or(matches.then_some(token))
            })
            .map(|token| Actor(token.id.clone()))
    }
}

/// Rejects requests without a valid admin token; puts the [`Actor`] in the extensions.
pub async fn require_admin(
    State(auth): State<Arc<AdminAuth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.authenticate(authorization) {
        Some(actor) => {
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-admin";

    #[test]
    fn accepts_any_configured_token_and_names_it() {
        let auth = AdminAuth::with_tokens(&[TOKEN, "another-token-of-length"]).unwrap();
        let actor = auth
            .authenticate(Some(format!("Bearer {TOKEN}").as_bytes()))
            .unwrap();
        assert!(
            actor.0.starts_with("admin:") && actor.0.len() == 14,
            "{actor:?}"
        );
        assert!(!actor.0.contains(TOKEN));
        let other = auth
            .authenticate(Some(b"Bearer another-token-of-length"))
            .unwrap();
        assert_ne!(actor, other);
    }

    #[test]
    fn refuses_missing_wrong_or_malformed_credentials() {
        let auth = AdminAuth::with_tokens(&[TOKEN]).unwrap();
        assert!(auth.authenticate(None).is_none());
        assert!(
            auth.authenticate(Some(b"Bearer wrong-token-000000"))
                .is_none()
        );
        assert!(auth.authenticate(Some(TOKEN.as_bytes())).is_none());
        assert!(
            auth.authenticate(Some(format!("Basic {TOKEN}").as_bytes()))
                .is_none()
        );
    }

    #[test]
    fn refuses_to_configure_no_or_short_tokens() {
        assert_eq!(
            AdminAuth::with_tokens::<&str>(&[]).err(),
            Some(AdminAuthError::NoToken)
        );
        assert_eq!(
            AdminAuth::with_tokens(&["short"]).err(),
            Some(AdminAuthError::TooShort)
        );
    }

    #[test]
    fn disabled_auth_lets_everyone_in_as_anonymous() {
        assert_eq!(
            AdminAuth::disabled().authenticate(None),
            Some(Actor("anonymous".into()))
        );
    }
}
