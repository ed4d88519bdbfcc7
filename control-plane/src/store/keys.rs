use sluice_model::{ClientKey, KeyHash, Name, generate_client_secret};
use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::pools::{from_json, pool_revision, to_json};
use super::{Actor, Resource, Store, StoreError, unix_millis};

/// What an operator asks for when creating a client key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClientKey {
    pub id: Name,
    /// Pools the key may use; empty means every pool.
    pub pools: Vec<Name>,
}

/// A stored client key: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyRecord {
    pub key: ClientKey,
    /// The key's last four characters, to tell keys apart.
    pub hint: String,
    pub created_at_unix_ms: i64,
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
            "SELECT id, pools, salt, digest, hint, created_at FROM client_keys ",
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
            let row = sqlx::query(select_keys!("WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(&self.db)
                .await?;
            row.as_ref()
                .map(key_record)
                .transpose()?
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
            for (index, pool) in new.pools.iter().enumerate() {
                if pool_revision(tx.conn(), pool).await?.is_none() {
                    return Err(StoreError::InvalidReference {
                        field: format!("pools[{index}]"),
                        message: format!("pool '{pool}' does not exist"),
                    });
                }
            }
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
                    limits: Default::default(),
                },
                created_at_unix_ms: unix_millis(),
            };
            let revision = tx.revision();
            sqlx::query(
                "INSERT INTO client_keys (id, pools, salt, digest, hint, created_at, created_revision) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(record.key.id.as_str())
            .bind(to_json(&record.key.pools))
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

    pub async fn delete_key(&self, actor: &Actor, id: &Name) -> Result<(), StoreError> {
        let resource = Resource::ClientKey(id.to_string());
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM client_keys WHERE id = $1")
                .bind(id.as_str())
                .execute(tx.conn())
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound(resource));
            }
            tx.commit(self, actor, "key.delete", &resource).await?;
            Ok(())
        })
        .await
    }
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
    let salt: Vec<u8> = row.try_get("salt")?;
    let digest: Vec<u8> = row.try_get("digest")?;
    let what = || format!("client key '{id}'");
    Ok(ClientKeyRecord {
        key: ClientKey {
            id: Name::try_from(id.as_str()).map_err(|e| StoreError::corrupt(what(), e))?,
            pools: from_json(&pools, "client key pools")?,
            hash: KeyHash::from_parts(&salt, &digest)
                .map_err(|e| StoreError::corrupt(what(), e))?,
            limits: Default::default(),
        },
        hint: row.try_get("hint")?,
        created_at_unix_ms: row.try_get("created_at")?,
    })
}
