//! The fleet tables: each proxy's latest state, hourly usage per client key and pool, and
//! per-minute traffic per backend. Reports write them; no write here bumps the config
//! revision, so proxies never see a new snapshot because of a report.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Store, StoreError, to_revision};

/// A backend's state as one proxy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    Available,
    Cooling,
    Ejected,
    NoCredential,
    Disabled,
}

impl BackendState {
    pub const ALL: [Self; 5] = [
        Self::Available,
        Self::Cooling,
        Self::Ejected,
        Self::NoCredential,
        Self::Disabled,
    ];
}

/// One backend in a proxy's latest report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSeen {
    pub pool: String,
    pub backend: String,
    pub state: BackendState,
    /// When a cooling or ejected backend is tried again (Unix ms, the proxy's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_unix_ms: Option<i64>,
}

/// A snapshot the proxy rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NackRecord {
    pub revision: u64,
    pub error: String,
    pub at_unix_ms: i64,
}

/// A proxy as the fleet table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRecord {
    pub node_id: String,
    /// The control-plane replica holding its config stream.
    pub replica: String,
    /// Id of that stream, so a replica that has not yet noticed a dead stream cannot
    /// overwrite what a newer stream on another replica recorded.
    pub connection: String,
    pub address: String,
    pub version: String,
    pub connected: bool,
    pub connected_since_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    pub acked_revision: Option<u64>,
    pub last_nack: Option<NackRecord>,
    pub served_revision: Option<u64>,
    pub last_report_unix_ms: Option<i64>,
    pub backends: Vec<BackendSeen>,
}

/// Requests, tokens and cost; added up per bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Millionths of a US dollar; zero for pools without a price.
    pub cost_micro_usd: u64,
    /// Calls the key's limits refused before any upstream call.
    pub rate_limited: u64,
}

impl UsageCounts {
    pub fn add(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micro_usd = self.cost_micro_usd.saturating_add(other.cost_micro_usd);
        self.rate_limited = self.rate_limited.saturating_add(other.rate_limited);
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Usage of one client key in one pool over one bucket (an hour when stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// Start of the bucket, Unix ms.
    pub start_unix_ms: i64,
    pub client_key: String,
    pub pool: String,
    pub counts: UsageCounts,
}

/// Attempts to one backend over one minute, fleet-wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficRow {
    pub minute_unix_ms: i64,
    pub pool: String,
    pub backend: String,
    pub requests: u64,
    pub errors: u64,
}

/// A stream that ended: its proxy is no longer connected, unless a newer stream took over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    pub node_id: String,
    pub connection: String,
    pub at_unix_ms: i64,
}

/// Everything one replica writes in one transaction.
#[derive(Clone, Debug, Default)]
pub struct FleetBatch {
    pub proxies: Vec<ProxyRecord>,
    pub disconnects: Vec<Disconnect>,
    pub usage: Vec<UsageRow>,
    pub traffic: Vec<TrafficRow>,
}

impl FleetBatch {
    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
            && self.disconnects.is_empty()
            && self.usage.is_empty()
            && self.traffic.is_empty()
    }
}

/// Which usage to add up, and in buckets of how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageFilter {
    pub client_key: Option<String>,
    pub pool: Option<String>,
    /// Hours starting at or after this (Unix ms)…
    pub from_unix_ms: i64,
    /// …and before this.
    pub to_unix_ms: i64,
    /// Bucket length in ms: an hour or a day. Buckets are aligned to UTC.
    pub bucket_ms: i64,
    /// At most this many rows; one more means the answer was cut.
    pub max_rows: u32,
}

/// What a retention sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub usage_rows: u64,
    pub traffic_rows: u64,
    pub proxies: u64,
}

const UPSERT_PROXY: &str = "INSERT INTO fleet_proxies (node_id, replica, connection, address, version, \
     connected, connected_since, last_seen, acked_revision, nack_revision, nack_error, nack_at, \
     served_revision, last_report_at, backends) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (node_id) DO UPDATE SET replica = excluded.replica, \
     connection = excluded.connection, address = excluded.address, version = excluded.version, \
     connected = excluded.connected, connected_since = excluded.connected_since, \
     last_seen = excluded.last_seen, acked_revision = excluded.acked_revision, \
     nack_revision = excluded.nack_revision, nack_error = excluded.nack_error, \
     nack_at = excluded.nack_at, served_revision = excluded.served_revision, \
     last_report_at = excluded.last_report_at, backends = excluded.backends \
     WHERE fleet_proxies.connection = excluded.connection \
     OR fleet_proxies.connected_since <= excluded.connected_since";

const ADD_USAGE: &str = "INSERT INTO usage_hourly (hour, client_key, pool, requests, input_tokens, \
     output_tokens, cost_micro_usd, rate_limited) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (hour, client_key, pool) DO UPDATE SET \
     requests = usage_hourly.requests + excluded.requests, \
     input_tokens = usage_hourly.input_tokens + excluded.input_tokens, \
     output_tokens = usage_hourly.output_tokens + excluded.output_tokens, \
     cost_micro_usd = usage_hourly.cost_micro_usd + excluded.cost_micro_usd, \
     rate_limited = usage_hourly.rate_limited + excluded.rate_limited";

const ADD_TRAFFIC: &str = "INSERT INTO backend_traffic (minute, pool, backend, requests, errors) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (minute, pool, backend) DO UPDATE SET \
     requests = backend_traffic.requests + excluded.requests, \
     errors = backend_traffic.errors + excluded.errors";

impl Store {
    /// Writes one replica's batch atomically: a batch that fails can be retried whole
    /// without counting anything twice.
    pub async fn record_fleet(&self, batch: &FleetBatch) -> Result<(), StoreError> {
        self.bounded(async {
            let mut tx = self.db.begin().await?;
            for proxy in &batch.proxies {
                let backends =
                    serde_json::to_string(&proxy.backends).map_err(|e| StoreError::Corrupt {
                        what: format!("backends of proxy '{}'", proxy.node_id),
                        source: Box::new(e),
                    })?;
                let nack = proxy.last_nack.as_ref();
                sqlx::query(UPSERT_PROXY)
                    .bind(&proxy.node_id)
                    .bind(&proxy.replica)
                    .bind(&proxy.connection)
                    .bind(&proxy.address)
                    .bind(&proxy.version)
                    .bind(i64::from(proxy.connected))
                    .bind(proxy.connected_since_unix_ms)
                    .bind(proxy.last_seen_unix_ms)
                    .bind(proxy.acked_revision.map(to_column))
                    .bind(nack.map(|n| to_column(n.revision)))
                    .bind(nack.map(|n| n.error.clone()))
                    .bind(nack.map(|n| n.at_unix_ms))
                    .bind(proxy.served_revision.map(to_column))
                    .bind(proxy.last_report_unix_ms)
                    .bind(backends)
                    .execute(&mut *tx)
                    .await?;
            }
            for gone in &batch.disconnects {
                sqlx::query(
                    "UPDATE fleet_proxies SET connected = 0, last_seen = $1 \
                     WHERE node_id = $2 AND connection = $3",
                )
                .bind(gone.at_unix_ms)
                .bind(&gone.node_id)
                .bind(&gone.connection)
                .execute(&mut *tx)
                .await?;
            }
            for row in &batch.usage {
                let c = &row.counts;
                sqlx::query(ADD_USAGE)
                    .bind(row.start_unix_ms)
                    .bind(&row.client_key)
                    .bind(&row.pool)
                    .bind(to_column(c.requests))
                    .bind(to_column(c.input_tokens))
                    .bind(to_column(c.output_tokens))
                    .bind(to_column(c.cost_micro_usd))
                    .bind(to_column(c.rate_limited))
                    .execute(&mut *tx)
                    .await?;
            }
            for row in &batch.traffic {
                sqlx::query(ADD_TRAFFIC)
                    .bind(row.minute_unix_ms)
                    .bind(&row.pool)
                    .bind(&row.backend)
                    .bind(to_column(row.requests))
                    .bind(to_column(row.errors))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Every proxy the fleet table knows, ordered by node id.
    pub async fn fleet_proxies(&self) -> Result<Vec<ProxyRecord>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT node_id, replica, connection, address, version, connected, \
                 connected_since, last_seen, acked_revision, nack_revision, nack_error, nack_at, \
                 served_revision, last_report_at, backends FROM fleet_proxies ORDER BY node_id",
            )
            .fetch_all(&self.db)
            .await?;
            rows.iter().map(proxy_record).collect()
        })
        .await
    }

    /// Per-minute traffic of a pool's backends (every pool's with `None`) from `since` (Unix
    /// ms) on.
    pub async fn backend_traffic(
        &self,
        pool: Option<&str>,
        since_unix_ms: i64,
    ) -> Result<Vec<TrafficRow>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT minute, pool, backend, requests, errors FROM backend_traffic \
                 WHERE ($1 = '' OR pool = $1) AND minute >= $2 ORDER BY minute, backend",
            )
            .bind(pool.unwrap_or_default())
            .bind(since_unix_ms)
            .fetch_all(&self.db)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(TrafficRow {
                        minute_unix_ms: row.try_get("minute")?,
                        pool: row.try_get("pool")?,
                        backend: row.try_get("backend")?,
                        requests: from_column(row.try_get("requests")?),
                        errors: from_column(row.try_get("errors")?),
                    })
                })
                .collect()
        })
        .await
    }

    /// Usage added up per bucket, client key and pool, oldest bucket first.
    pub async fn usage_history(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
        self.bounded(async {
            // `$4` is the bucket length: integer division aligns hours to UTC days.
            let rows = sqlx::query(
                "SELECT (hour / $4) * $4 AS bucket, client_key, pool, \
                 CAST(SUM(requests) AS BIGINT) AS requests, \
                 CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
                 CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
                 CAST(SUM(cost_micro_usd) AS BIGINT) AS cost_micro_usd, \
                 CAST(SUM(rate_limited) AS BIGINT) AS rate_limited \
                 FROM usage_hourly WHERE hour >= $1 AND hour < $2 \
                 AND ($3 = '' OR client_key = $3) AND ($5 = '' OR pool = $5) \
                 GROUP BY bucket, client_key, pool \
                 ORDER BY bucket, client_key, pool LIMIT $6",
            )
            .bind(filter.from_unix_ms)
            .bind(filter.to_unix_ms)
            .bind(filter.client_key.clone().unwrap_or_default())
            .bind(filter.bucket_ms)
            .bind(filter.pool.clone().unwrap_or_default())
            .bind(i64::from(filter.max_rows) + 1)
            .fetch_all(&self.db)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(UsageRow {
                        start_unix_ms: row.try_get("bucket")?,
                        client_key: row.try_get("client_key")?,
                        pool: row.try_get("pool")?,
                        counts: UsageCounts {
                            requests: from_column(row.try_get("requests")?),
                            input_tokens: from_column(row.try_get("input_tokens")?),
                            output_tokens: from_column(row.try_get("output_tokens")?),
                            cost_micro_usd: from_column(row.try_get("cost_micro_usd")?),
                            rate_limited: from_column(row.try_get("rate_limited")?),
                        },
                    })
                })
                .collect()
        })
        .await
    }

    /// Drops usage hours and traffic minutes that started before the given times, and
    /// proxies last seen before `proxies_seen_before`.
    pub async fn prune_fleet(
        &self,
        usage_before_unix_ms: i64,
        traffic_before_unix_ms: i64,
        proxies_seen_before_unix_ms: i64,
    ) -> Result<Pruned, StoreError> {
        self.bounded(async {
            let usage = sqlx::query("DELETE FROM usage_hourly WHERE hour < $1")
                .bind(usage_before_unix_ms)
                .execute(&self.db)
                .await?;
            let traffic = sqlx::query("DELETE FROM backend_traffic WHERE minute < $1")
                .bind(traffic_before_unix_ms)
                .execute(&self.db)
                .await?;
            let proxies = sqlx::query("DELETE FROM fleet_proxies WHERE last_seen < $1")
                .bind(proxies_seen_before_unix_ms)
                .execute(&self.db)
                .await?;
            Ok(Pruned {
                usage_rows: usage.rows_affected(),
                traffic_rows: traffic.rows_affected(),
                proxies: proxies.rows_affected(),
            })
        })
        .await
    }
}

fn proxy_record(row: &AnyRow) -> Result<ProxyRecord, StoreError> {
    let node_id: String = row.try_get("node_id")?;
    let backends: String = row.try_get("backends")?;
    let backends = serde_json::from_str(&backends).map_err(|e| StoreError::Corrupt {
        what: format!("backends of proxy '{node_id}'"),
        source: Box::new(e),
    })?;
    let nack_revision: Option<i64> = row.try_get("nack_revision")?;
    let last_nack = match nack_revision {
        Some(revision) => Some(NackRecord {
            revision: to_revision(revision),
            error: row
                .try_get::<Option<String>, _>("nack_error")?
                .unwrap_or_default(),
            at_unix_ms: row
                .try_get::<Option<i64>, _>("nack_at")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(ProxyRecord {
        replica: row.try_get("replica")?,
        connection: row.try_get("connection")?,
        address: row.try_get("address")?,
        version: row.try_get("version")?,
        connected: row.try_get::<i64, _>("connected")? != 0,
        connected_since_unix_ms: row.try_get("connected_since")?,
        last_seen_unix_ms: row.try_get("last_seen")?,
        acked_revision: row
            .try_get::<Option<i64>, _>("acked_revision")?
            .map(to_revision),
        last_nack,
        served_revision: row
            .try_get::<Option<i64>, _>("served_revision")?
            .map(to_revision),
        last_report_unix_ms: row.try_get("last_report_at")?,
        backends,
        node_id,
    })
}

/// Counts are `BIGINT` columns; a count past `i64::MAX` is stored as the maximum.
fn to_column(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn from_column(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}
