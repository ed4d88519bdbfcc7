use sluice_model::Snapshot;

use super::keys::fetch_keys;
use super::pools::fetch_pools;
use super::{Store, StoreError};

impl Store {
    /// The whole config as of one revision: what every proxy receives.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (revision, (pools, keys)) = self
            .consistent_read(|| async {
                let mut conn = self.db.acquire().await?;
                let pools = fetch_pools(&mut conn, None).await?;
                let keys = fetch_keys(&mut conn).await?;
                Ok((pools, keys))
            })
            .await?;
        Ok(Snapshot {
            revision,
            pools: pools.into_iter().map(|p| p.value).collect(),
            client_keys: keys.into_iter().map(|k| k.key).collect(),
        })
    }
}
