//! A periodic round-trip to the database behind `sluice_database_up`, so an outage shows (and
//! alerts) even when nobody calls the admin API.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::MissedTickBehavior;

use crate::store::Store;

/// Often enough for a two-minute alert, rare enough to be noise on the database.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Pings until aborted; each ping is bounded by the store's timeout.
pub async fn watch(store: Store, up: Gauge) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut was_up = true;
    loop {
        ticks.tick().await;
        let is_up = match store.ping().await {
            Ok(()) => true,
            Err(error) => {
                if was_up {
                    tracing::warn!(%error, "database health check failed");
                }
                false
            }
        };
        if is_up && !was_up {
            tracing::info!("database health check recovered");
        }
        up.set(i64::from(is_up));
        was_up = is_up;
    }
}
