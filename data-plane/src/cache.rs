//! The last applied snapshot on disk, so a proxy restarted while the control plane is down
//! still serves. Written atomically (temporary file, fsync, rename): a crash leaves either
//! the old file or the new one, never half of one. It holds secret references and client
//! key hashes only, never secret values.

use std::io;
use std::path::{Path, PathBuf};

use sluice_model::Snapshot;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct SnapshotCache {
    path: PathBuf,
}

/// Writes snapshots to the cache in the background, newest first: the fsync (which can take
/// a hundred milliseconds when the disk is busy, and every proxy on a host waits for the same
/// journal commit) never delays applying a snapshot. Snapshots that arrive while a write is
/// under way are skipped but for the newest.
pub struct CacheWriter {
    latest: watch::Sender<Option<Snapshot>>,
}

impl CacheWriter {
    pub fn spawn(cache: SnapshotCache) -> Self {
        let (latest, mut pending) = watch::channel(None::<Snapshot>);
        tokio::spawn(async move {
            while pending.changed().await.is_ok() {
                let Some(snapshot) = pending.borrow_and_update().clone() else {
                    continue;
                };
                if let Err(error) = cache.store(&snapshot).await {
                    tracing::warn!(%error, "cannot persist the config snapshot; a restart during an outage would not have it");
                }
            }
        });
        Self { latest }
    }

    pub fn write(&self, snapshot: Snapshot) {
        self.latest.send_replace(Some(snapshot));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid snapshot: {reason}")]
    Invalid { path: String, reason: String },
}

impl SnapshotCache {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join("snapshot.json"),
        }
    }

    /// The cached snapshot, `None` when there is none yet.
    pub async fn load(&self) -> Result<Option<Snapshot>, CacheError> {
        let shown = || self.path.display().to_string();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CacheError::Read {
                    path: shown(),
                    source,
                });
            }
        };
        let snapshot: Snapshot =
            serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid {
                path: shown(),
                reason: e.to_string(),
            })?;
        snapshot.validate().map_err(|e| CacheError::Invalid {
            path: shown(),
            reason: e.to_string(),
        })?;
        Ok(Some(snapshot))
    }

    pub async fn store(&self, snapshot: &Snapshot) -> Result<(), CacheError> {
        let write = |source| CacheError::Write {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(write)?;
        }
        let bytes = serde_json::to_vec_pretty(snapshot).map_err(|e| write(io::Error::other(e)))?;
        let temporary = self.path.with_extension("json.tmp");
        let file_path = temporary.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&file_path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .await
        .map_err(|e| write(io::Error::other(e)))?
        .map_err(write)?;
        tokio::fs::rename(&temporary, &self.path)
            .await
            .map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::in_dir(&dir.path().join("nested"));
        assert!(cache.load().await.unwrap().is_none());
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "revision": 4,
            "pools": [{"name": "p", "backends": [{"name": "a", "url": "https://x.example", "kind": "openai", "auth": {"type": "none"}}]}]
        }))
        .unwrap();
        cache.store(&snapshot).await.unwrap();
        assert_eq!(cache.load().await.unwrap(), Some(snapshot));
        assert!(!dir.path().join("nested/snapshot.json.tmp").exists());
    }

    #[tokio::test]
    async fn refuses_a_corrupt_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snapshot.json"), "{not json").unwrap();
        let error = SnapshotCache::in_dir(dir.path()).load().await.unwrap_err();
        assert!(matches!(error, CacheError::Invalid { .. }), "{error}");
    }
}
