//! Console sessions: random ids handed to the browser, only their SHA-256 kept in the
//! database with the admin token id that opened them, an absolute expiry and a CSRF token.
//!
//! A session is honoured only while the token that opened it is still configured on the
//! replica answering, so rotating a token away ends its sessions everywhere it is removed.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::admin::AdminAuth;
use crate::store::{Actor, ConsoleSession, Store, StoreError, unix_millis};

/// A session id or CSRF token: 256 random bits, URL-safe base64 (43 characters).
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the database keys a session by: the id itself never leaves the cookie.
pub(crate) fn id_hash(session_id: &str) -> [u8; 32] {
    Sha256::digest(session_id.as_bytes()).into()
}

/// Who is behind a request to the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Visitor {
    /// Recorded in the audit log for changes made through the console.
    pub actor: Actor,
    /// The session's CSRF token; `None` when authentication is off and there is no session.
    pub csrf: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error("that admin token is not accepted")]
    WrongToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A freshly opened session: `id` goes into the cookie and nowhere else.
pub(crate) struct Opened {
    pub id: String,
    pub ttl: Duration,
}

pub(crate) struct Sessions {
    store: Store,
    auth: Arc<AdminAuth>,
    ttl: Duration,
}

impl Sessions {
    pub fn new(store: Store, auth: Arc<AdminAuth>, ttl: Duration) -> Self {
        Self { store, auth, ttl }
    }

    /// Whether the console runs without sign-in (`--insecure-no-admin-auth`).
    pub fn auth_disabled(&self) -> bool {
        self.auth.is_disabled()
    }

    /// Opens a session for whoever presents a configured admin token.
    pub async fn open(&self, token: &str) -> Result<Opened, SignInError> {
        let actor = self
            .auth
            .verify_token(token.as_bytes())
            .ok_or(SignInError::WrongToken)?;
        let now = unix_millis();
        // Sign-ins are rare; clearing expired sessions here keeps the table small without
        // a background task on every replica.
        self.store.delete_expired_console_sessions(now).await?;
        let id = random_token();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let session = ConsoleSession {
            token_id: actor.0,
            csrf_token: random_token(),
            created_at_unix_ms: now,
            expires_at_unix_ms: now.saturating_add(ttl_ms),
        };
        self.store
            .create_console_session(&id_hash(&id), &session)
            .await?;
        Ok(Opened { id, ttl: self.ttl })
    }

    /// The visitor a session cookie stands for, if the session is live and its token still
    /// accepted; a session whose token was rotated away is deleted.
    pub async fn resolve(&self, session_id: &str) -> Result<Option<Visitor>, StoreError> {
        let hash = id_hash(session_id);
        let Some(session) = self.store.console_session(&hash, unix_millis()).await? else {
            return Ok(None);
        };
        let actor = Actor(session.token_id);
        if !self.auth.still_accepts(&actor) {
            self.store.delete_console_session(&hash).await?;
            return Ok(None);
        }
        Ok(Some(Visitor {
            actor,
            csrf: Some(session.csrf_token),
        }))
    }

    pub async fn close(&self, session_id: &str) -> Result<(), StoreError> {
        self.store
            .delete_console_session(&id_hash(session_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    const TOKEN: &str = "0123456789abcdef-console";
    const OTHER: &str = "0123456789abcdef-other";

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
        (dir, store)
    }

    fn sessions(store: &Store, tokens: &[&str], ttl: Duration) -> Sessions {
        let auth = Arc::new(AdminAuth::with_tokens(tokens).unwrap());
        Sessions::new(store.clone(), auth, ttl)
    }

    #[test]
    fn ids_are_long_random_and_hashed() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_ne!(id_hash(&a), id_hash(&b));
        assert_eq!(id_hash(&a), id_hash(&a.clone()));
    }

    #[tokio::test]
    async fn a_session_names_its_token_and_ends_on_sign_out() {
        let (_dir, store) = store().await;
        let sessions = sessions(&store, &[TOKEN], Duration::from_secs(60));
        assert!(matches!(
            sessions.open("not-the-token-at-all").await,
            Err(SignInError::WrongToken)
        ));
        let opened = sessions.open(TOKEN).await.unwrap();
        let visitor = sessions.resolve(&opened.id).await.unwrap().unwrap();
        assert!(visitor.actor.0.starts_with("admin:"), "{visitor:?}");
        assert_eq!(visitor.csrf.as_ref().map(String::len), Some(43));
        assert_ne!(visitor.csrf.as_deref(), Some(opened.id.as_str()));
        assert_eq!(sessions.resolve("forged").await.unwrap(), None);
        sessions.close(&opened.id).await.unwrap();
        assert_eq!(sessions.resolve(&opened.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn expired_sessions_are_refused_and_swept() {
        let (_dir, store) = store().await;
        let sessions = sessions(&store, &[TOKEN], Duration::ZERO);
        let opened = sessions.open(TOKEN).await.unwrap();
        assert_eq!(sessions.resolve(&opened.id).await.unwrap(), None);
        let swept = store
            .delete_expired_console_sessions(unix_millis() + 1)
            .await
            .unwrap();
        assert_eq!(swept, 1);
    }

    #[tokio::test]
    async fn rotating_the_token_away_ends_its_sessions() {
        let (_dir, store) = store().await;
        let before = sessions(&store, &[TOKEN, OTHER], Duration::from_secs(60));
        let by_token = before.open(TOKEN).await.unwrap();
        let by_other = before.open(OTHER).await.unwrap();
        let after = sessions(&store, &[OTHER], Duration::from_secs(60));
        assert_eq!(after.resolve(&by_token.id).await.unwrap(), None);
        assert!(after.resolve(&by_other.id).await.unwrap().is_some());
        // Deleted, not merely refused: restoring the token does not bring it back.
        assert_eq!(before.resolve(&by_token.id).await.unwrap(), None);
    }
}
