use sluice_model::{ClientKey, KeyHash, Limits, Name, generate_client_secret};
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::pools::{fetch_pools, from_json, pool_revision, to_json};
use super::{Actor, Precondition, Resource, Store, StoreError, require, to_revision, unix_millis};

/// What an operator asks for when creating a client key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClientKey {
    pub id: Name,
    /// Pools the key may use; empty means every pool.
    pub pools: Vec<Name>,
    /// What the key may consume; empty means no limits.
    pub limits: Limits,
}

/// New pools and limits for an existing key; its secret never changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdate {
    /// Pools the key may use; empty means every pool.
    pub pools: Vec<Name>,
    pub limits: Limits,
}

/// A stored client key: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyRecord {
    pub key: ClientKey,
    /// The key's last four characters, to tell keys apart.
    pub hint: String,
    pub created_at_unix_ms: i64,
    /// The revision of the key's last change, which is its ETag.
    pub revision: u64,
}

/// A key that was just created; `secret` exists only in this value and is shown once.
#[derive(Debug)]
pub struct CreatedClientKey {
    pub record: ClientKeyRecord,
    pub secret: String,
    pub revision: u64,
}

/// `SELECT` over client keys with a literal tail, so the SQL stays a static string.
macro_rules! select_keys {
    ($tail:literal) => {
        concat!(
            "SELECT id, pools, limits, salt, digest, hint, created_at, updated_revision \
             FROM client_keys ",
            $tail
        )
    };
}

impl Store {
    pub async fn list_keys(&self) -> Result<Vec<ClientKeyRecord>, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            fetch_keys(&mut conn).await
        })
        .await
    }

    pub async fn get_key(&self, id: &Name) -> Result<ClientKeyRecord, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            fetch_key(&mut conn, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(Resource::ClientKey(id.to_string())))
        })
        .await
    }

    pub async fn create_key(
        &self,
        actor: &Actor,
        new: NewClientKey,
    ) -> Result<CreatedClientKey, StoreError> {
        let resource = Resource::ClientKey(new.id.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM client_keys WHERE id = $1")
                    .bind(new.id.as_str())
                    .fetch_optional(tx.conn())
                    .await?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists(resource));
            }
            let secret = generate_client_secret();
            let record = ClientKeyRecord {
                hint: secret[secret.len() - 4..].to_owned(),
                key: ClientKey {
                    id: new.id,
                    pools: new.pools,
                    hash: KeyHash::new(&secret),
                    limits: new.limits,
                },
                created_at_unix_ms: unix_millis(),
                revision: to_revision(tx.revision()),
            };
            require_valid_key(tx.conn(), &record.key).await?;
            let revision = tx.revision();
            sqlx::query(
                "INSERT INTO client_keys \
                 (id, pools, limits, salt, digest, hint, created_at, created_revision, updated_revision) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(record.key.id.as_str())
            .bind(to_json(&record.key.pools))
            .bind(to_json(&record.key.limits))
            .bind(record.key.hash.salt().to_vec())
            .bind(record.key.hash.digest().to_vec())
            .bind(&record.hint)
            .bind(record.created_at_unix_ms)
            .bind(revision)
            .execute(tx.conn())
            .await?;
            let revision = tx.commit(self, actor, "key.create", &resource).await?;
            Ok(CreatedClientKey {
                record,
                secret,
                revision,
            })
        })
        .await
    }

    /// Replaces a key's pools and limits; the key (and so its hash) stays the same.
    pub async fn update_key(
        &self,
        actor: &Actor,
        id: &Name,
        update: KeyUpdate,
        precondition: Option<&Precondition>,
    ) -> Result<ClientKeyRecord, StoreError> {
        let resource = Resource::ClientKey(id.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let current = fetch_key(tx.conn(), id).await?;
            require(precondition, &resource, current.as_ref().map(|r| r.revision))?;
            let Some(mut record) = current else {
                return Err(StoreError::NotFound(resource));
            };
            record.key.pools = update.pools;
            record.key.limits = update.limits;
            record.revision = to_revision(tx.revision());
            require_valid_key(tx.conn(), &record.key).await?;
            sqlx::query(
                "UPDATE client_keys SET pools = $1, limits = $2, updated_revision = $3 WHERE id = $4",
            )
            .bind(to_json(&record.key.pools))
            .bind(to_json(&record.key.limits))
            .bind(tx.revision())
            .bind(id.as_str())
            .execute(tx.conn())
            .await?;
            tx.commit(self, actor, "key.update", &resource).await?;
            Ok(record)
        })
        .await
    }

    pub async fn delete_key(
        &self,
        actor: &Actor,
        id: &Name,
        precondition: Option<&Precondition>,
    ) -> Result<(), StoreError> {
        let resource = Resource::ClientKey(id.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let current: Option<i64> =
                sqlx::query_scalar("SELECT updated_revision FROM client_keys WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(tx.conn())
                    .await?;
            require(precondition, &resource, current.map(to_revision))?;
            sqlx::query("DELETE FROM client_keys WHERE id = $1")
                .bind(id.as_str())
                .execute(tx.conn())
                .await?;
            tx.commit(self, actor, "key.delete", &resource).await?;
            Ok(())
        })
        .await
    }
}

/// Checks a key about to be written against the pools as they are in this write: every pool
/// it names (in `pools` and in `limits.pools`) exists, and its limits hold
/// ([`ClientKey::validate_limits`]: a budget needs a price on every pool it covers).
async fn require_valid_key(conn: &mut AnyConnection, key: &ClientKey) -> Result<(), StoreError> {
    let missing = |field: String, pool: &Name| StoreError::InvalidReference {
        field,
        message: format!("pool '{pool}' does not exist"),
    };
    for (index, pool) in key.pools.iter().enumerate() {
        if pool_revision(conn, pool).await?.is_none() {
            return Err(missing(format!("pools[{index}]"), pool));
        }
    }
    let pools: Vec<_> = fetch_pools(conn, None)
        .await?
        .into_iter()
        .map(|p| p.value)
        .collect();
    key.validate_limits(&pools).map_err(StoreError::Invalid)?;
    for pool in key.limits.pools.keys() {
        if !pools.iter().any(|p| p.name == *pool) {
            return Err(missing(format!("limits.pools.{pool}"), pool));
        }
    }
    Ok(())
}

async fn fetch_key(
    conn: &mut AnyConnection,
    id: &Name,
) -> Result<Option<ClientKeyRecord>, StoreError> {
    let row = sqlx::query(select_keys!("WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(key_record).transpose()
}

pub(crate) async fn fetch_keys(
    conn: &mut AnyConnection,
) -> Result<Vec<ClientKeyRecord>, StoreError> {
    let rows = sqlx::query(select_keys!("ORDER BY id"))
        .fetch_all(conn)
        .await?;
    rows.iter().map(key_record).collect()
}

fn key_record(row: &AnyRow) -> Result<ClientKeyRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let pools: String = row.try_get("pools")?;
    let limits: String = row.try_get("limits")?;
    let salt: Vec<u8> = row.try_get("salt")?;
    let digest: Vec<u8> = row.try_get("digest")?;
    let what = || format!("client key '{id}'");
    Ok(ClientKeyRecord {
        key: ClientKey {
            id: Name::try_from(id.as_str()).map_err(|e| StoreError::corrupt(what(), e))?,
            pools: from_json(&pools, "client key pools")?,
            hash: KeyHash::from_parts(&salt, &digest)
                .map_err(|e| StoreError::corrupt(what(), e))?,
            limits: from_json(&limits, "client key limits")?,
        },
        hint: row.try_get("hint")?,
        created_at_unix_ms: row.try_get("created_at")?,
        revision: to_revision(row.try_get("updated_revision")?),
    })
}
