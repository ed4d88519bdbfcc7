//! Bearer admin tokens for the admin API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::store::Actor;
use crate::tokens::{TokenSet, TokenTooShort};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminAuthError {
    #[error(
        "no admin token configured: set SLUICE_ADMIN_TOKEN (or --admin-token), or pass \
         --insecure-no-admin-auth to run without authentication on loopback"
    )]
    NoToken,
    #[error(transparent)]
    TooShort(#[from] TokenTooShort),
}

pub struct AdminAuth {
    /// `None` when authentication is switched off (`--insecure-no-admin-auth`).
    tokens: Option<TokenSet>,
}

impl AdminAuth {
    pub fn with_tokens<S: AsRef<str>>(tokens: &[S]) -> Result<Self, AdminAuthError> {
        let tokens = TokenSet::new("admin", tokens)?;
        if tokens.is_empty() {
            return Err(AdminAuthError::NoToken);
        }
        Ok(Self {
            tokens: Some(tokens),
        })
    }

    pub fn disabled() -> Self {
        Self { tokens: None }
    }

    /// Whether authentication is off (`--insecure-no-admin-auth`).
    pub(crate) fn is_disabled(&self) -> bool {
        self.tokens.is_none()
    }

    /// The actor a bare token (as typed into the console's sign-in form) stands for.
    pub(crate) fn verify_token(&self, presented: &[u8]) -> Option<Actor> {
        match &self.tokens {
            Some(tokens) => tokens.verify(presented).map(|id| Actor(id.to_owned())),
            None => Some(Actor("anonymous".into())),
        }
    }

    /// Whether the token behind `actor` is still accepted; false once it was rotated away.
    pub(crate) fn still_accepts(&self, actor: &Actor) -> bool {
        self.tokens
            .as_ref()
            .is_none_or(|tokens| tokens.has_id(&actor.0))
    }

    /// The actor behind `authorization`, if it carries a configured token.
    fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Actor> {
        let Some(tokens) = &self.tokens else {
            return Some(Actor("anonymous".into()));
        };
        let presented = authorization?.strip_prefix(b"Bearer ")?;
        tokens.verify(presented).map(|id| Actor(id.to_owned()))
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
        assert!(matches!(
            AdminAuth::with_tokens(&["short"]),
            Err(AdminAuthError::TooShort(_))
        ));
    }

    #[test]
    fn disabled_auth_lets_everyone_in_as_anonymous() {
        assert_eq!(
            AdminAuth::disabled().authenticate(None),
            Some(Actor("anonymous".into()))
        );
    }
}
