//! Builds the snapshot once per revision and hands it to every proxy session. Sessions read
//! the latest one from a watch channel: a slow proxy only ever misses intermediate
//! snapshots, it never makes anyone else wait.

use std::sync::Arc;
use std::time::Duration;

use sluice_model::proto;
use tokio::sync::watch;

use crate::store::Store;

/// Safety net for missed notifications: the revision is re-read this often.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// A snapshot ready to send, built once and shared by every session.
#[derive(Debug)]
pub struct Published {
    pub revision: u64,
    pub snapshot: proto::Snapshot,
}

pub type Snapshots = watch::Receiver<Option<Arc<Published>>>;

/// Starts publishing; the task ends when every receiver is gone.
pub fn spawn(store: Store) -> Snapshots {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(publish(store, tx));
    rx
}

async fn publish(store: Store, tx: watch::Sender<Option<Arc<Published>>>) {
    let mut revisions = store.watch_revision();
    let mut published = None;
    loop {
        let wanted = *revisions.borrow_and_update();
        if published.is_none_or(|p| p < wanted) {
            match store.snapshot().await {
                Ok(snapshot) => {
                    let revision = snapshot.revision;
                    tracing::debug!(revision, "publishing config snapshot");
                    published = Some(revision);
                    store.observe_revision(revision);
                    tx.send_replace(Some(Arc::new(Published {
                        revision,
                        snapshot: proto::Snapshot::from(&snapshot),
                    })));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot build config snapshot; retrying");
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RESYNC_EVERY) => {
                if let Err(error) = store.refresh_revision().await {
                    tracing::warn!(%error, "cannot re-read the config revision");
                }
            }
            () = tx.closed() => return,
        }
    }
}
