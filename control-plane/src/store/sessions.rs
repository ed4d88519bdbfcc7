//! Admin console sessions: kept by the hash of their id, with the admin token that opened
//! them and an absolute expiry. They are not config, so writing them bumps no revision and
//! leaves no audit entry.

use sqlx::Row;

use super::{Store, StoreError};

/// A console session as stored; the session id itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Admin token id (`admin:xxxxxxxx`) that opened the session.
    pub token_id: String,
    pub csrf_token: String,
    pub created_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
}

impl Store {
    pub async fn create_console_session(
        &self,
        id_hash: &[u8],
        session: &ConsoleSession,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, token_id, csrf_token, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_hash.to_vec())
            .bind(&session.token_id)
            .bind(&session.csrf_token)
            .bind(session.created_at_unix_ms)
            .bind(session.expires_at_unix_ms)
            .execute(&self.db)
            .await?;
            Ok(())
        })
        .await
    }

    /// The session unless it is unknown or expired at `now_unix_ms`.
    pub async fn console_session(
        &self,
        id_hash: &[u8],
        now_unix_ms: i64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        self.bounded(async {
            let row = sqlx::query(
                "SELECT token_id, csrf_token, created_at, expires_at FROM console_sessions \
                 WHERE id_hash = $1 AND expires_at > $2",
            )
            .bind(id_hash.to_vec())
            .bind(now_unix_ms)
            .fetch_optional(&self.db)
            .await?;
            row.map(|row| {
                Ok(ConsoleSession {
                    token_id: row.try_get("token_id")?,
                    csrf_token: row.try_get("csrf_token")?,
                    created_at_unix_ms: row.try_get("created_at")?,
                    expires_at_unix_ms: row.try_get("expires_at")?,
                })
            })
            .transpose()
        })
        .await
    }

    pub async fn delete_console_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        self.bounded(async {
            sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                .bind(id_hash.to_vec())
                .execute(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Forgets sessions that expired before `now_unix_ms`; returns how many.
    pub async fn delete_expired_console_sessions(
        &self,
        now_unix_ms: i64,
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            let done = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
                .bind(now_unix_ms)
                .execute(&self.db)
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}
