//! Where the fleet's counts meet: Redis (or Valkey), standalone or cluster, or, without one,
//! this proxy's memory. Only the sync task calls a store; never the request path.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::counter::lease_size;

/// One counter's part of a sync.
#[derive(Clone, Debug)]
pub struct Push {
    pub key: String,
    /// Added to the shared count: what was spent, less the lease it replaces.
    pub correction: i64,
    /// Unix seconds after which the count is no use to anyone.
    pub expire_at: i64,
    /// Take a new lease after the correction.
    pub lease: Option<LeaseRequest>,
}

/// What a new lease is cut from.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub limit: u64,
    /// The largest lease worth taking: about what the proxy will spend before its next sync.
    /// An unspent lease is room nobody else can use until it is given back.
    pub cap: u64,
    /// The largest call the proxy had to refuse since its last sync: leased when it fits,
    /// even above a fair share, or no proxy could ever admit it.
    pub want: u64,
    /// Live proxies sharing the limit.
    pub proxies: u32,
    /// The previous minute of a rolling-minute limit, and its weight now in thousandths.
    pub previous: Option<(String, u64)>,
}

/// A counter's shared count after the push and lease, the lease, and the previous minute's
/// total when it was asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pulled {
    pub total: u64,
    pub lease: u64,
    pub previous: Option<u64>,
}

#[derive(Debug)]
pub struct Exchanged {
    /// In the order of the pushes.
    pub pulled: Vec<Pulled>,
    /// Proxies that synced within the last few seconds, this one included.
    pub proxies: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the shared store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the shared store answered something unexpected: {0}")]
    Reply(#[from] redis::ParsingError),
    /// Not an error of the store: the sync waits out a back-off.
    #[error("not tried (backing off)")]
    Skipped,
    #[error("the shared store did not answer within {0:?}")]
    Timeout(Duration),
}

#[async_trait]
pub trait SharedCounts: Send + Sync + 'static {
    /// Pushes every correction, takes the leases asked for, and reports this proxy alive.
    async fn exchange(
        &self,
        node: &str,
        now_ms: i64,
        pushes: &[Push],
    ) -> Result<Exchanged, StoreError>;

    /// Whether other proxies see these counts (a store in this process: no).
    fn is_shared(&self) -> bool;
}

/// Counts in this process: every limit holds per proxy.
#[derive(Default)]
pub struct LocalCounts {
    counts: Mutex<HashMap<String, (i64, i64)>>,
}

#[async_trait]
impl SharedCounts for LocalCounts {
    async fn exchange(
        &self,
        _: &str,
        now_ms: i64,
        pushes: &[Push],
    ) -> Result<Exchanged, StoreError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms / 1000;
        counts.retain(|_, (_, expire_at)| *expire_at > now);
        let pulled = pushes
            .iter()
            .map(|push| {
                let previous = push.lease.as_ref().and_then(|lease| {
                    let (key, _) = lease.previous.as_ref()?;
                    Some(counts.get(key).map_or(0, |(count, _)| *count))
                });
                let entry = counts
                    .entry(push.key.clone())
                    .or_insert((0, push.expire_at));
                entry.0 += push.correction;
                entry.1 = push.expire_at;
                let lease = push.lease.as_ref().map_or(0, |lease| {
                    let weight = lease.previous.as_ref().map_or(0, |(_, w)| *w as i64);
                    let weighted = previous.unwrap_or(0).max(0) * weight / 1000;
                    let room = i64::try_from(lease.limit).unwrap_or(i64::MAX) - entry.0 - weighted;
                    lease_size(
                        room,
                        lease.proxies,
                        i64::try_from(lease.cap).unwrap_or(i64::MAX),
                        i64::try_from(lease.want).unwrap_or(i64::MAX),
                    )
                });
                entry.0 += lease;
                Pulled {
                    total: non_negative(entry.0),
                    lease: non_negative(lease),
                    previous: previous.map(non_negative),
                }
            })
            .collect();
        Ok(Exchanged { pulled, proxies: 1 })
    }

    fn is_shared(&self) -> bool {
        false
    }
}

/// How long a proxy counts as live after its last sync.
const LIVE_FOR_MS: i64 = 5_000;
const PROXIES_KEY: &str = "{sluice}:proxies";
/// A sync that takes longer than this is abandoned (its spending is pushed with the next).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Redis or Valkey, standalone (`redis://`, `rediss://`) or a cluster (several seed URLs).
pub struct RedisCounts {
    client: RedisClient,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

// One per process: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum RedisClient {
    Standalone(redis::Client),
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisCounts {
    /// Checks the URLs; connects on the first sync (a Redis that is down at start is no
    /// reason not to serve).
    /// One `redis://` or `rediss://` URL is a standalone server; several, or one written
    /// `redis+cluster://` (`rediss+cluster://`), are seed nodes of a cluster.
    pub fn new(urls: &[String]) -> Result<Self, StoreError> {
        let cluster_seed = |url: &String| {
            url.strip_prefix("redis+cluster://")
                .map(|rest| format!("redis://{rest}"))
                .or_else(|| {
                    url.strip_prefix("rediss+cluster://")
                        .map(|rest| format!("rediss://{rest}"))
                })
        };
        let client = match urls {
            [one] if cluster_seed(one).is_none() => {
                RedisClient::Standalone(redis::Client::open(one.as_str())?)
            }
            many => RedisClient::Cluster(ClusterClient::new(
                many.iter()
                    .map(|url| cluster_seed(url).unwrap_or_else(|| url.clone()))
                    .collect::<Vec<_>>(),
            )?),
        };
        Ok(Self {
            client,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        let mut connection = self.connection.lock().await;
        if let Some(connection) = &*connection {
            return Ok(connection.clone());
        }
        let connected = match &self.client {
            RedisClient::Standalone(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(STORE_TIMEOUT))
                    .set_response_timeout(Some(STORE_TIMEOUT))
                    .set_number_of_retries(1);
                Connection::Standalone(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                )
            }
            RedisClient::Cluster(client) => {
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        *connection = Some(connected.clone());
        Ok(connected)
    }

    async fn run(&self, node: &str, now_ms: i64, pushes: &[Push]) -> Result<Exchanged, StoreError> {
        let connection = self.connection().await?;
        // One pipeline per client key: its counters share a hash slot, so the pipelines are
        // valid on a cluster too; they run concurrently.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (index, push) in pushes.iter().enumerate() {
            let tag = hash_tag(&push.key);
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, members)) => members.push(index),
                None => groups.push((tag, vec![index])),
            }
        }
        let counted = groups.iter().map(|(_, members)| {
            let mut pipe = redis::pipe();
            for &index in members {
                lease_command(&mut pipe, &pushes[index]);
            }
            let mut connection = connection.clone();
            async move {
                let replies: Vec<redis::Value> = connection.query(&pipe).await?;
                Ok::<_, StoreError>((members, replies))
            }
        });
        let mut alive = redis::pipe();
        alive
            .cmd("ZADD")
            .arg(PROXIES_KEY)
            .arg(now_ms)
            .arg(node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(PROXIES_KEY)
            .arg("-inf")
            .arg(now_ms - LIVE_FOR_MS)
            .ignore()
            .cmd("PEXPIRE")
            .arg(PROXIES_KEY)
            .arg(LIVE_FOR_MS * 2)
            .ignore()
            .cmd("ZCARD")
            .arg(PROXIES_KEY);
        let mut heartbeat = connection.clone();
        let (groups, proxies) =
            tokio::join!(futures_util::future::try_join_all(counted), async move {
                heartbeat.query::<(u32,)>(&alive).await
            });
        let mut pulled = vec![Pulled::default(); pushes.len()];
        for (members, replies) in groups? {
            for (&index, reply) in members.iter().zip(replies) {
                let (total, lease, previous) =
                    redis::from_redis_value::<(i64, i64, Option<i64>)>(reply)?;
                pulled[index] = Pulled {
                    total: non_negative(total),
                    lease: non_negative(lease),
                    previous: previous.map(non_negative),
                };
            }
        }
        Ok(Exchanged {
            pulled,
            proxies: proxies?.0.max(1),
        })
    }
}

#[async_trait]
impl SharedCounts for RedisCounts {
    async fn exchange(
        &self,
        node: &str,
        now_ms: i64,
        pushes: &[Push],
    ) -> Result<Exchanged, StoreError> {
        let outcome = tokio::time::timeout(STORE_TIMEOUT, self.run(node, now_ms, pushes)).await;
        let result = outcome.unwrap_or(Err(StoreError::Timeout(STORE_TIMEOUT)));
        if result.is_err() {
            // Start afresh next time: a cluster's topology or a standalone's address may
            // have changed (the connection manager would also reconnect by itself).
            if let Ok(mut connection) = self.connection.try_lock() {
                *connection = None;
            }
        }
        result
    }

    fn is_shared(&self) -> bool {
        true
    }
}

impl Connection {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, redis::RedisError> {
        match self {
            Self::Standalone(connection) => pipe.query_async(connection).await,
            Self::Cluster(connection) => pipe.query_async(connection).await,
        }
    }
}

/// Pushes a correction and, when asked, takes a lease, atomically: a lease is cut from the
/// room left after every lease already taken, so two proxies never get the same room.
const LEASE_SCRIPT: &str = r"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
local lease = 0
local previous = false
if ARGV[3] == '1' then
  local weighted = 0
  if #KEYS > 1 then
    previous = tonumber(redis.call('GET', KEYS[2]) or '0')
    weighted = math.floor(math.max(previous, 0) * tonumber(ARGV[6]) / 1000)
  end
  local room = tonumber(ARGV[4]) - total - weighted
  if room > 0 then
    -- As lease_size in counter.rs.
    lease = math.max(1, math.min(math.floor(room / tonumber(ARGV[5])), tonumber(ARGV[7])))
    local want = tonumber(ARGV[8])
    if want <= room and want > lease then lease = want end
    if lease > room then lease = room end
    total = redis.call('INCRBY', KEYS[1], lease)
  end
end
return {total, lease, previous}
";

fn lease_command(pipe: &mut redis::Pipeline, push: &Push) {
    let previous = push
        .lease
        .as_ref()
        .and_then(|lease| lease.previous.as_ref());
    let command = pipe
        .cmd("EVAL")
        .arg(LEASE_SCRIPT)
        .arg(if previous.is_some() { 2 } else { 1 })
        .arg(&push.key);
    if let Some((key, _)) = previous {
        command.arg(key);
    }
    command
        .arg(push.correction)
        .arg(push.expire_at)
        .arg(u8::from(push.lease.is_some()))
        .arg(push.lease.as_ref().map_or(0, |lease| lease.limit))
        .arg(push.lease.as_ref().map_or(1, |lease| lease.proxies))
        .arg(previous.map_or(0, |(_, weight)| *weight))
        .arg(push.lease.as_ref().map_or(0, |lease| lease.cap))
        .arg(push.lease.as_ref().map_or(0, |lease| lease.want));
}

/// The `{…}` part of a key: Redis Cluster hashes only that.
fn hash_tag(key: &str) -> &str {
    key.split_once('}').map_or(key, |(tag, _)| tag)
}

fn non_negative(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(key: &str, correction: i64, lease: Option<LeaseRequest>) -> Push {
        Push {
            key: key.into(),
            correction,
            expire_at: 100,
            lease,
        }
    }

    fn lease(limit: u64, proxies: u32, previous: Option<(&str, u64)>) -> Option<LeaseRequest> {
        Some(LeaseRequest {
            limit,
            cap: u64::MAX,
            want: 0,
            proxies,
            previous: previous.map(|(key, weight)| (key.to_owned(), weight)),
        })
    }

    #[tokio::test]
    async fn local_counts_lease_from_what_is_left_and_expire() {
        let counts = LocalCounts::default();
        let first = counts
            .exchange(
                "n",
                0,
                &[push("a", 3, lease(30, 3, None)), push("p", 40, None)],
            )
            .await
            .unwrap();
        // 27 left, a third of it leased: the total counts the lease.
        assert_eq!(
            first.pulled[0],
            Pulled {
                total: 12,
                lease: 9,
                previous: None
            }
        );
        assert_eq!(first.proxies, 1);
        // The previous minute weighs half: 20 of its 40.
        let weighed = counts
            .exchange("n", 0, &[push("b", 0, lease(30, 1, Some(("p", 500))))])
            .await
            .unwrap();
        assert_eq!(
            weighed.pulled[0],
            Pulled {
                total: 10,
                lease: 10,
                previous: Some(40)
            }
        );
        let refund = counts
            .exchange("n", 0, &[push("a", -50, None)])
            .await
            .unwrap();
        assert_eq!(refund.pulled[0].total, 0, "never below zero");
        let later = counts
            .exchange("n", 100_000, &[push("b", 0, None)])
            .await
            .unwrap();
        assert_eq!(later.pulled[0].total, 0, "expired");
        assert!(!counts.is_shared());
    }

    #[test]
    fn keys_of_one_client_key_share_a_hash_tag() {
        assert_eq!(
            hash_tag("{sluice:team-a}:key:requests:minute:60"),
            "{sluice:team-a"
        );
        assert_eq!(hash_tag("plain"), "plain");
    }
}
