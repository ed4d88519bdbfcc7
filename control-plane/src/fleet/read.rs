//! Reading the fleet tables into pool statuses: what `GET /api/v1/pools/{pool}/status` and
//! the console's overview and pool pages show.

use std::time::Duration;

use sluice_model::{Name, Pool};

use super::usage::{MINUTE_MS, floor};
use super::view::{PoolStatus, pool_status};
use crate::store::{ProxyRecord, Store, StoreError, TrafficRow, unix_millis};

/// Where a traffic window of `minutes` starts: the current minute counts as one.
fn window_start(now: i64, minutes: u32) -> i64 {
    floor(now, MINUTE_MS) - (i64::from(minutes) - 1) * MINUTE_MS
}

fn backends_of(pool: &Pool) -> Vec<(String, bool)> {
    pool.backends
        .iter()
        .map(|b| (b.name.to_string(), b.enabled))
        .collect()
}

/// One pool's backends as the connected proxies see them, with traffic over `minutes`.
pub async fn read_pool_status(
    store: &Store,
    gone_after: Duration,
    name: &Name,
    minutes: u32,
) -> Result<PoolStatus, StoreError> {
    let stored = store.get_pool(name).await?;
    let now = unix_millis();
    let records = store.fleet_proxies().await?;
    let traffic = store
        .backend_traffic(Some(name.as_str()), window_start(now, minutes))
        .await?;
    Ok(pool_status(
        name.as_str(),
        &backends_of(&stored.value),
        &records,
        &traffic,
        now,
        gone_after,
        minutes,
    ))
}

/// The whole fleet at one moment: every proxy, and every pool's status over `minutes`.
pub struct FleetSnapshot {
    pub now_unix_ms: i64,
    pub proxies: Vec<ProxyRecord>,
    pub pools: Vec<PoolStatus>,
}

/// Every pool's status from one read of the proxies and of the traffic.
pub async fn read_fleet(
    store: &Store,
    gone_after: Duration,
    minutes: u32,
) -> Result<FleetSnapshot, StoreError> {
    let pools = store.list_pools().await?;
    let now = unix_millis();
    let proxies = store.fleet_proxies().await?;
    let traffic: Vec<TrafficRow> = store
        .backend_traffic(None, window_start(now, minutes))
        .await?;
    let pools = pools
        .iter()
        .map(|stored| {
            pool_status(
                stored.value.name.as_str(),
                &backends_of(&stored.value),
                &proxies,
                &traffic,
                now,
                gone_after,
                minutes,
            )
        })
        .collect();
    Ok(FleetSnapshot {
        now_unix_ms: now,
        proxies,
        pools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_the_current_minute() {
        let now = 10 * MINUTE_MS + 30_000;
        assert_eq!(window_start(now, 1), 10 * MINUTE_MS);
        assert_eq!(window_start(now, 5), 6 * MINUTE_MS);
    }
}
