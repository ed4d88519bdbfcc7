use sqlx::AnyConnection;
use sqlx::{Any, Transaction};

use super::{Actor, DatabaseKind, Resource, Store, StoreError, to_revision, unix_millis};

/// The Postgres channel on which every commit announces its revision to other replicas.
pub const NOTIFY_CHANNEL: &str = "sluice_config";

/// A write transaction that already holds the next revision (and with it the writer lock).
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    revision: i64,
}

impl Store {
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let mut tx = self.db.begin().await?;
        // Writing first takes SQLite's write lock at once (no lock upgrade deadlocks) and
        // Postgres's row lock, which orders concurrent writers by revision.
        sqlx::query("UPDATE config_revision SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        Ok(WriteTx { tx, revision })
    }
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Records the change in the audit log and commits it; returns the new revision.
    pub(crate) async fn commit(
        mut self,
        store: &Store,
        actor: &Actor,
        action: &str,
        resource: &Resource,
    ) -> Result<u64, StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (revision, at, actor, action, resource) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.revision)
        .bind(unix_millis())
        .bind(&actor.0)
        .bind(action)
        .bind(resource.path())
        .execute(&mut *self.tx)
        .await?;
        if store.kind == DatabaseKind::Postgres {
            // Delivered to listeners only when the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(self.revision.to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        let revision = to_revision(self.revision);
        store.observe_revision(revision);
        Ok(revision)
    }
}

pub(crate) async fn read_revision(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let revision: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(to_revision(revision))
}
