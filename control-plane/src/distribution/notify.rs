//! Postgres `LISTEN`: other control-plane replicas announce each commit's revision, so every
//! replica publishes every change. After a reconnect the revision is re-read, because
//! notifications sent while disconnected are lost.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::store::{NOTIFY_CHANNEL, Store};

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

pub fn spawn(store: Store) {
    tokio::spawn(listen(store));
}

async fn listen(store: Store) {
    let mut backoff = RECONNECT_MIN;
    loop {
        match subscribe(&store).await {
            Ok(mut listener) => {
                backoff = RECONNECT_MIN;
                follow(&store, &mut listener).await;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot LISTEN for config changes");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

async fn subscribe(store: &Store) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(store.url()).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    catch_up(store).await;
    Ok(listener)
}

/// Follows notifications until the listener fails; reconnects inside `try_recv` are caught
/// up on at once.
async fn follow(store: &Store, listener: &mut PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<u64>() {
                Ok(revision) => store.observe_revision(revision),
                Err(_) => {
                    tracing::warn!("ignoring a malformed config notification");
                    catch_up(store).await;
                }
            },
            // The connection dropped and will be re-established: we may have missed some.
            Ok(None) => catch_up(store).await,
            Err(error) => {
                tracing::warn!(%error, "config notification listener failed");
                return;
            }
        }
    }
}

async fn catch_up(store: &Store) {
    if let Err(error) = store.refresh_revision().await {
        tracing::warn!(%error, "cannot re-read the config revision");
    }
}
