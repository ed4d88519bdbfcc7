use sluice_model::{Backend, FieldError, Name, Pool, Price, RetryPolicy, Strategy};
use sqlx::AnyConnection;
use sqlx::Row;

use super::keys::fetch_keys;
use super::write::WriteTx;
use super::{Actor, Precondition, Resource, Store, StoreError, require, to_revision};

/// A stored value and the revision of its last change, which is its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    pub value: T,
    pub revision: u64,
}

/// New settings for an existing pool; `backends: None` leaves its backends as they are.
/// `price: None` leaves the pool without a price, like a pool created without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReplacement {
    pub strategy: Strategy,
    pub retry: RetryPolicy,
    pub backends: Option<Vec<Backend>>,
    pub price: Option<Price>,
}

impl Store {
    pub async fn list_pools(&self) -> Result<Vec<Stored<Pool>>, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            fetch_pools(&mut conn, None).await
        })
        .await
    }

    pub async fn get_pool(&self, name: &Name) -> Result<Stored<Pool>, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            fetch_pool(&mut conn, name).await
        })
        .await
    }

    pub async fn create_pool(
        &self,
        actor: &Actor,
        pool: &Pool,
    ) -> Result<Stored<Pool>, StoreError> {
        let resource = Resource::Pool(pool.name.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            if pool_revision(tx.conn(), &pool.name).await?.is_some() {
                return Err(StoreError::AlreadyExists(resource));
            }
            sqlx::query(
                "INSERT INTO pools (name, strategy, retry, price, updated_revision) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(pool.name.as_str())
            .bind(strategy_to_db(pool.strategy))
            .bind(to_json(&pool.retry))
            .bind(pool.price.as_ref().map(to_json))
            .bind(tx.revision())
            .execute(tx.conn())
            .await?;
            insert_backends(&mut tx, &pool.name, &pool.backends).await?;
            require_priced_for_budgets(tx.conn(), pool).await?;
            let revision = tx.commit(self, actor, "pool.create", &resource).await?;
            Ok(Stored {
                value: pool.clone(),
                revision,
            })
        })
        .await
    }

    pub async fn replace_pool(
        &self,
        actor: &Actor,
        name: &Name,
        replacement: PoolReplacement,
        precondition: Option<&Precondition>,
    ) -> Result<Stored<Pool>, StoreError> {
        let resource = Resource::Pool(name.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let current = pool_revision(tx.conn(), name).await?;
            require(precondition, &resource, current)?;
            sqlx::query(
                "UPDATE pools SET strategy = $1, retry = $2, price = $3, updated_revision = $4 \
                 WHERE name = $5",
            )
            .bind(strategy_to_db(replacement.strategy))
            .bind(to_json(&replacement.retry))
            .bind(replacement.price.as_ref().map(to_json))
            .bind(tx.revision())
            .bind(name.as_str())
            .execute(tx.conn())
            .await?;
            if let Some(backends) = &replacement.backends {
                sqlx::query("DELETE FROM backends WHERE pool = $1")
                    .bind(name.as_str())
                    .execute(tx.conn())
                    .await?;
                insert_backends(&mut tx, name, backends).await?;
            }
            let stored = fetch_pool(tx.conn(), name).await?;
            require_priced_for_budgets(tx.conn(), &stored.value).await?;
            tx.commit(self, actor, "pool.update", &resource).await?;
            Ok(stored)
        })
        .await
    }

    pub async fn delete_pool(
        &self,
        actor: &Actor,
        name: &Name,
        precondition: Option<&Precondition>,
    ) -> Result<(), StoreError> {
        let resource = Resource::Pool(name.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let current = pool_revision(tx.conn(), name).await?;
            require(precondition, &resource, current)?;
            for statement in [
                "DELETE FROM backends WHERE pool = $1",
                "DELETE FROM pools WHERE name = $1",
            ] {
                sqlx::query(statement)
                    .bind(name.as_str())
                    .execute(tx.conn())
                    .await?;
            }
            tx.commit(self, actor, "pool.delete", &resource).await?;
            Ok(())
        })
        .await
    }
}

/// The revision of a pool's last change, or `None` when there is no such pool.
pub(crate) async fn pool_revision(
    conn: &mut AnyConnection,
    name: &Name,
) -> Result<Option<u64>, StoreError> {
    let revision: Option<i64> =
        sqlx::query_scalar("SELECT updated_revision FROM pools WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(conn)
            .await?;
    Ok(revision.map(to_revision))
}

/// Refuses a pool without a price while some key's budget covers it: the proxies could not
/// count that key's spending there. Runs inside the write, which holds the writer lock, so
/// no key can change in between.
async fn require_priced_for_budgets(
    conn: &mut AnyConnection,
    pool: &Pool,
) -> Result<(), StoreError> {
    if pool.price.is_some() {
        return Ok(());
    }
    for record in fetch_keys(conn).await? {
        if !record.key.limits.has_budget() {
            continue;
        }
        if let Err(error) = record.key.validate_limits(std::slice::from_ref(pool)) {
            return Err(StoreError::Invalid(FieldError::new("price", error.message)));
        }
    }
    Ok(())
}

/// Marks a pool as changed at the transaction's revision (a backend of it changed).
pub(crate) async fn touch_pool(tx: &mut WriteTx, name: &Name) -> Result<(), StoreError> {
    let revision = tx.revision();
    sqlx::query("UPDATE pools SET updated_revision = $1 WHERE name = $2")
        .bind(revision)
        .bind(name.as_str())
        .execute(tx.conn())
        .await?;
    Ok(())
}

async fn insert_backends(
    tx: &mut WriteTx,
    pool: &Name,
    backends: &[Backend],
) -> Result<(), StoreError> {
    for (position, backend) in backends.iter().enumerate() {
        super::backends::insert_backend(tx, pool, backend, position as i64).await?;
    }
    Ok(())
}

async fn fetch_pool(conn: &mut AnyConnection, name: &Name) -> Result<Stored<Pool>, StoreError> {
    fetch_pools(conn, Some(name))
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound(Resource::Pool(name.to_string())))
}

/// Pools with their backends in one statement, so the result is one consistent state.
pub(crate) async fn fetch_pools(
    conn: &mut AnyConnection,
    only: Option<&Name>,
) -> Result<Vec<Stored<Pool>>, StoreError> {
    macro_rules! select_pools {
        ($filter:literal) => {
            concat!(
                "SELECT p.name, p.strategy, p.retry, p.price, p.updated_revision, b.spec \
                 FROM pools p LEFT JOIN backends b ON b.pool = p.name ",
                $filter,
                " ORDER BY p.name, b.position"
            )
        };
    }
    let rows = match only {
        Some(name) => {
            sqlx::query(select_pools!("WHERE p.name = $1"))
                .bind(name.as_str())
                .fetch_all(conn)
                .await?
        }
        None => sqlx::query(select_pools!("")).fetch_all(conn).await?,
    };
    let mut pools: Vec<Stored<Pool>> = Vec::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        if pools.last().is_none_or(|p| p.value.name.as_str() != name) {
            let strategy: String = row.try_get("strategy")?;
            let retry: String = row.try_get("retry")?;
            let price: Option<String> = row.try_get("price")?;
            pools.push(Stored {
                value: Pool {
                    name: Name::try_from(name.as_str())
                        .map_err(|e| StoreError::corrupt(format!("pool name '{name}'"), e))?,
                    strategy: strategy_from_db(&strategy)?,
                    retry: from_json(&retry, "pool retry policy")?,
                    backends: Vec::new(),
                    price: price.map(|raw| from_json(&raw, "pool price")).transpose()?,
                },
                revision: to_revision(row.try_get("updated_revision")?),
            });
        }
        if let Some(spec) = row.try_get::<Option<String>, _>("spec")? {
            let backend = from_json(&spec, "backend")?;
            if let Some(pool) = pools.last_mut() {
                pool.value.backends.push(backend);
            }
        }
    }
    Ok(pools)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // The model's types serialise infallibly: maps have string keys, and the only floats
    // (US dollars from integer micro-dollars) are finite.
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    raw: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::corrupt(what, e))
}

fn strategy_to_db(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::RoundRobin => "round_robin",
        Strategy::Weighted => "weighted",
        Strategy::LeastLatency => "least_latency",
    }
}

fn strategy_from_db(raw: &str) -> Result<Strategy, StoreError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| StoreError::corrupt("pool strategy", e))
}
