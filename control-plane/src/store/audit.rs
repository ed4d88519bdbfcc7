use sqlx::Row;

use super::{Store, StoreError, to_revision};

/// One committed change: what, when, under which revision and by which admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub revision: u64,
    pub at_unix_ms: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
}

impl Store {
    /// Entries with an id above `after`, oldest first, at most `limit`.
    pub async fn audit_log(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT id, revision, at, actor, action, resource FROM audit_log \
                 WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.db)
            .await?;
            rows.iter().map(audit_entry).collect()
        })
        .await
    }

    /// Entries with an id below `before` (all when `None`), newest first, at most `limit`:
    /// what an operator reading the log wants to see first.
    pub async fn audit_log_newest(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT id, revision, at, actor, action, resource FROM audit_log \
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.db)
            .await?;
            rows.iter().map(audit_entry).collect()
        })
        .await
    }
}

fn audit_entry(row: &sqlx::any::AnyRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        revision: to_revision(row.try_get("revision")?),
        at_unix_ms: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
    })
}
