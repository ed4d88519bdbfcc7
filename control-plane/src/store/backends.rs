use sluice_model::{Backend, Name};
use sqlx::AnyConnection;
use sqlx::Row;

use super::pools::{from_json, pool_revision, to_json, touch_pool};
use super::write::WriteTx;
use super::{Actor, Precondition, Resource, Store, StoreError, Stored, require, to_revision};

impl Store {
    /// A pool's backends in the order they were added; `NotFound` when the pool is missing.
    pub async fn list_backends(&self, pool: &Name) -> Result<Vec<Stored<Backend>>, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            require_pool(&mut conn, pool).await?;
            let rows = sqlx::query(
                "SELECT spec, updated_revision FROM backends WHERE pool = $1 ORDER BY position",
            )
            .bind(pool.as_str())
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(stored_backend).collect()
        })
        .await
    }

    pub async fn get_backend(
        &self,
        pool: &Name,
        name: &Name,
    ) -> Result<Stored<Backend>, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            require_pool(&mut conn, pool).await?;
            fetch_backend(&mut conn, pool, name)
                .await?
                .ok_or_else(|| StoreError::NotFound(backend_resource(pool, name)))
        })
        .await
    }

    pub async fn create_backend(
        &self,
        actor: &Actor,
        pool: &Name,
        backend: &Backend,
    ) -> Result<Stored<Backend>, StoreError> {
        let resource = backend_resource(pool, &backend.name);
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            require_pool(tx.conn(), pool).await?;
            if fetch_backend(tx.conn(), pool, &backend.name)
                .await?
                .is_some()
            {
                return Err(StoreError::AlreadyExists(resource));
            }
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT position FROM backends WHERE pool = $1 ORDER BY position DESC LIMIT 1",
            )
            .bind(pool.as_str())
            .fetch_optional(tx.conn())
            .await?;
            insert_backend(&mut tx, pool, backend, last.map_or(0, |p| p + 1)).await?;
            touch_pool(&mut tx, pool).await?;
            let revision = tx.commit(self, actor, "backend.create", &resource).await?;
            Ok(Stored {
                value: backend.clone(),
                revision,
            })
        })
        .await
    }

    pub async fn replace_backend(
        &self,
        actor: &Actor,
        pool: &Name,
        backend: &Backend,
        precondition: Option<&Precondition>,
    ) -> Result<Stored<Backend>, StoreError> {
        let resource = backend_resource(pool, &backend.name);
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            require_pool(tx.conn(), pool).await?;
            let current = fetch_backend(tx.conn(), pool, &backend.name).await?;
            require(precondition, &resource, current.map(|b| b.revision))?;
            let revision = tx.revision();
            sqlx::query("UPDATE backends SET spec = $1, updated_revision = $2 WHERE pool = $3 AND name = $4")
                .bind(to_json(backend))
                .bind(revision)
                .bind(pool.as_str())
                .bind(backend.name.as_str())
                .execute(tx.conn())
                .await?;
            touch_pool(&mut tx, pool).await?;
            let revision = tx.commit(self, actor, "backend.update", &resource).await?;
            Ok(Stored {
                value: backend.clone(),
                revision,
            })
        })
        .await
    }

    pub async fn delete_backend(
        &self,
        actor: &Actor,
        pool: &Name,
        name: &Name,
        precondition: Option<&Precondition>,
    ) -> Result<(), StoreError> {
        let resource = backend_resource(pool, name);
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            require_pool(tx.conn(), pool).await?;
            let current = fetch_backend(tx.conn(), pool, name).await?;
            require(precondition, &resource, current.map(|b| b.revision))?;
            sqlx::query("DELETE FROM backends WHERE pool = $1 AND name = $2")
                .bind(pool.as_str())
                .bind(name.as_str())
                .execute(tx.conn())
                .await?;
            touch_pool(&mut tx, pool).await?;
            tx.commit(self, actor, "backend.delete", &resource).await?;
            Ok(())
        })
        .await
    }
}

pub(crate) async fn insert_backend(
    tx: &mut WriteTx,
    pool: &Name,
    backend: &Backend,
    position: i64,
) -> Result<(), StoreError> {
    let revision = tx.revision();
    sqlx::query(
        "INSERT INTO backends (pool, name, position, spec, updated_revision) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(pool.as_str())
    .bind(backend.name.as_str())
    .bind(position)
    .bind(to_json(backend))
    .bind(revision)
    .execute(tx.conn())
    .await?;
    Ok(())
}

async fn require_pool(conn: &mut AnyConnection, pool: &Name) -> Result<(), StoreError> {
    match pool_revision(conn, pool).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(Resource::Pool(pool.to_string()))),
    }
}

async fn fetch_backend(
    conn: &mut AnyConnection,
    pool: &Name,
    name: &Name,
) -> Result<Option<Stored<Backend>>, StoreError> {
    let row =
        sqlx::query("SELECT spec, updated_revision FROM backends WHERE pool = $1 AND name = $2")
            .bind(pool.as_str())
            .bind(name.as_str())
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(stored_backend).transpose()
}

fn stored_backend(row: &sqlx::any::AnyRow) -> Result<Stored<Backend>, StoreError> {
    let spec: String = row.try_get("spec")?;
    Ok(Stored {
        value: from_json(&spec, "backend")?,
        revision: to_revision(row.try_get("updated_revision")?),
    })
}

fn backend_resource(pool: &Name, name: &Name) -> Resource {
    Resource::Backend {
        pool: pool.to_string(),
        name: name.to_string(),
    }
}
