//! The config a proxy serves: built from a snapshot (from a static file now, from the
//! control plane's stream later) and swapped atomically so in-flight requests finish on the
//! config they started with.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_model::{ClientKey, FieldError, KeyHash, Limits, Name, Pool, SecretRef, Snapshot};

use crate::backend::{BackendEndpoint, RefreshPolicy};
use crate::balance::PoolRuntime;
use crate::client_auth::ClientKeys;
use crate::clock::{Nanos, UnixTime};
use crate::metrics::{PoolClients, ProxyMetrics, UNKNOWN, key_labels};
use crate::quota::Quotas;
use crate::report::ReportLedger;
use crate::secrets::{SecretError, SecretResolver};
use crate::upstream::Upstream;

pub struct RuntimeConfig {
    pub revision: u64,
    /// Read per request by the name a client sent: a fast hasher (the table is built from
    /// config; lookups cannot fill it).
    pub pools: HashMap<String, Arc<PoolRuntime>, foldhash::fast::RandomState>,
    pub keys: ClientKeys,
    /// The client metrics of calls refused before a pool was chosen, by key slot.
    pub unrouted: PoolClients,
}

/// Turns snapshots into [`RuntimeConfig`]s, keeping the state of unchanged backends.
pub struct ConfigBuilder {
    pub upstream: Arc<Upstream>,
    /// Client-key limits: counters live here across config revisions.
    pub quotas: Arc<Quotas>,
    pub resolver: Arc<dyn SecretResolver>,
    pub metrics: Arc<ProxyMetrics>,
    /// The report's counters: backends and (key, pool) pairs keep theirs across revisions.
    pub ledger: Arc<ReportLedger>,
    pub refresh: RefreshPolicy,
    /// How long a new config waits for its new backends' credentials. Slower ones keep
    /// resolving in the background; their backends join as soon as they have one.
    pub resolve_budget: Duration,
}

impl ConfigBuilder {
    /// Backends whose spec did not change keep their connection pool, cooldowns, ejections
    /// and latency estimate from `previous`.
    pub async fn build(
        &self,
        snapshot: Snapshot,
        previous: Option<&RuntimeConfig>,
    ) -> RuntimeConfig {
        let mut pools = HashMap::with_capacity_and_hasher(snapshot.pools.len(), Default::default());
        let mut unresolved = Vec::new();
        let key_ids = key_labels(snapshot.client_keys.iter().map(|key| key.id.as_str()));
        for pool in snapshot.pools {
            let earlier = previous.and_then(|p| p.pools.get(pool.name.as_str()));
            let mut backends = Vec::with_capacity(pool.backends.len());
            for spec in pool.backends {
                let kept = earlier
                    .and_then(|p| p.backends.iter().find(|b| b.spec == spec))
                    .cloned();
                let endpoint = match kept {
                    Some(endpoint) => endpoint,
                    None => {
                        let metrics = self.metrics.backend(pool.name.as_str(), spec.name.as_str());
                        let attempts = self.ledger.attempt_counts(&pool.name, &spec.name);
                        let endpoint = Arc::new(BackendEndpoint::new(
                            spec,
                            self.upstream.clone(),
                            self.resolver.clone(),
                            self.refresh,
                            metrics,
                            attempts,
                        ));
                        unresolved.push(endpoint.clone());
                        endpoint
                    }
                };
                backends.push(endpoint);
            }
            // One cell per key in the keys' order (their slots), then the anonymous one.
            let usage = snapshot
                .client_keys
                .iter()
                .map(|key| Some(&key.id))
                .chain([None])
                .map(|key| self.ledger.usage_cells(key, &pool.name))
                .collect();
            let runtime = PoolRuntime::new(
                pool.name.clone(),
                pool.strategy,
                pool.retry,
                pool.price,
                backends,
                usage,
                self.metrics
                    .clients
                    .pool(pool.name.as_str(), key_ids.clone()),
            );
            pools.insert(pool.name.to_string(), Arc::new(runtime));
        }
        self.resolve_credentials(unresolved).await;
        let revision = i64::try_from(snapshot.revision).unwrap_or(i64::MAX);
        self.metrics.revision.set(revision);
        // A config from a file or the cache was offered too: the lag is never negative.
        let offered = &self.metrics.revision_offered;
        offered.set(offered.get().max(revision));
        RuntimeConfig {
            revision: snapshot.revision,
            pools,
            unrouted: self.metrics.clients.pool(UNKNOWN, key_ids),
            keys: ClientKeys::new(snapshot.client_keys, |key| {
                self.quotas.key_rules(key, UnixTime::now())
            }),
        }
    }
}

impl ConfigBuilder {
    /// A builder with local secrets only and default timings, for unit tests.
    #[cfg(test)]
    pub fn for_tests(metrics: Arc<ProxyMetrics>) -> Self {
        Self {
            upstream: crate::upstream::Upstream::new(Duration::from_secs(1))
                .expect("native roots load"),
            quotas: Arc::new(Quotas::new(false, Duration::from_millis(100))),
            resolver: Arc::new(crate::secrets::LocalSecrets),
            metrics,
            ledger: Arc::new(ReportLedger::tracking()),
            refresh: RefreshPolicy::default(),
            resolve_budget: Duration::from_secs(1),
        }
    }

    /// Resolves new backends' credentials concurrently, waiting at most the budget: one slow
    /// vault must not hold back a config whose other backends are ready.
    async fn resolve_credentials(&self, endpoints: Vec<Arc<BackendEndpoint>>) {
        let deadline = tokio::time::Instant::now() + self.resolve_budget;
        let tasks: Vec<_> = endpoints
            .into_iter()
            .filter(|endpoint| endpoint.credential.claim(Nanos::now(), self.refresh))
            .map(|endpoint| tokio::spawn(async move { endpoint.refresh_credential().await }))
            .collect();
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!(
                    budget_ms = self.resolve_budget.as_millis() as u64,
                    "some backend credentials are still resolving; those backends join when they resolve"
                );
                return;
            }
        }
    }
}

/// `sluice proxy --config FILE`: the admin API's model as YAML, with client keys given as
/// secret references (hashed on load).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub client_keys: Vec<StaticClientKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticClientKey {
    pub id: Name,
    pub secret: SecretRef,
    #[serde(default)]
    pub pools: Vec<Name>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config file {path}: {error}")]
    Invalid { path: String, error: FieldError },
    #[error("config file {path}: client key '{id}'")]
    KeySecret {
        path: String,
        id: String,
        #[source]
        source: SecretError,
    },
}

/// Reads, validates and resolves a static config file into a snapshot at revision 1.
pub async fn load_file(
    path: &Path,
    resolver: &dyn SecretResolver,
) -> Result<Snapshot, ConfigFileError> {
    let shown = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| ConfigFileError::Read {
            path: shown.clone(),
            source,
        })?;
    let config: StaticConfig =
        serde_yaml::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: shown.clone(),
            source,
        })?;
    let mut client_keys = Vec::with_capacity(config.client_keys.len());
    for (index, key) in config.client_keys.into_iter().enumerate() {
        if let Some((at, pool)) = key
            .pools
            .iter()
            .enumerate()
            .find(|(_, p)| !config.pools.iter().any(|pool| pool.name == **p))
        {
            return Err(ConfigFileError::Invalid {
                path: shown,
                error: FieldError::new(
                    format!("client_keys[{index}].pools[{at}]"),
                    format!("pool '{pool}' does not exist"),
                ),
            });
        }
        let secret =
            resolver
                .resolve(&key.secret)
                .await
                .map_err(|source| ConfigFileError::KeySecret {
                    path: shown.clone(),
                    id: key.id.to_string(),
                    source,
                })?;
        client_keys.push(ClientKey {
            hash: KeyHash::new(secrecy::ExposeSecret::expose_secret(&secret)),
            id: key.id,
            pools: key.pools,
            limits: key.limits,
        });
    }
    let snapshot = Snapshot {
        revision: 1,
        pools: config.pools,
        client_keys,
    };
    snapshot
        .validate()
        .map_err(|error| ConfigFileError::Invalid { path: shown, error })?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::LocalSecrets;

    fn snapshot(revision: u64, backends: serde_json::Value) -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "revision": revision,
            "pools": [{"name": "p", "backends": backends}]
        }))
        .unwrap()
    }

    /// An unchanged backend keeps its endpoint (connection pool, cooldowns, ejections,
    /// latency estimate) across config updates; a changed one starts afresh.
    #[tokio::test]
    async fn unchanged_backends_keep_their_state_across_updates() {
        let builder = ConfigBuilder::for_tests(Arc::new(ProxyMetrics::new()));
        let a = serde_json::json!({"name": "a", "url": "http://127.0.0.1:9", "kind": "openai", "auth": {"type": "none"}});
        let b = serde_json::json!({"name": "b", "url": "http://127.0.0.1:10", "kind": "openai", "auth": {"type": "none"}});
        let first = builder
            .build(snapshot(1, serde_json::json!([a, b])), None)
            .await;
        let mut b_weighted = b.clone();
        b_weighted["weight"] = serde_json::json!(5);
        let second = builder
            .build(
                snapshot(2, serde_json::json!([a, b_weighted])),
                Some(&first),
            )
            .await;
        let (before, after) = (&first.pools["p"].backends, &second.pools["p"].backends);
        assert!(
            Arc::ptr_eq(&before[0], &after[0]),
            "a is unchanged and kept"
        );
        assert!(
            !Arc::ptr_eq(&before[1], &after[1]),
            "b changed and was rebuilt"
        );
        assert_eq!(second.revision, 2);
    }

    async fn load(yaml: &str) -> Result<Snapshot, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, yaml).unwrap();
        load_file(&path, &LocalSecrets).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        })
    }

    #[tokio::test]
    async fn loads_the_contract_example_and_hashes_client_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("team-a");
        std::fs::write(&key_file, "sk-team-a\n").unwrap();
        let yaml = format!(
            r#"
pools:
  - name: gpt-4o
    strategy: round_robin
    retry: {{ max_attempts: 3 }}
    backends:
      - {{ name: eastus, url: "https://aoai-eastus.openai.azure.com", kind: azure_openai,
          auth: {{ type: api_key, secret: "keyvault://my-vault/aoai-eastus-key" }} }}
      - {{ name: westus, url: "https://aoai-westus.openai.azure.com", kind: azure_openai,
          auth: {{ type: api_key, secret: "env://AOAI_WESTUS_KEY" }} }}
client_keys:
  - {{ id: team-a, secret: "file://{}", pools: [gpt-4o] }}
"#,
            key_file.display()
        );
        let snapshot = load(&yaml).await.unwrap();
        assert_eq!(snapshot.pools[0].backends.len(), 2);
        assert!(snapshot.client_keys[0].hash.verify("sk-team-a"));
    }

    #[tokio::test]
    async fn refuses_invalid_files_with_the_reason() {
        let backend =
            r#"{ name: a, url: "https://x.example", kind: openai, auth: { type: none } }"#;
        for (yaml, expected) in [
            ("pools: [ { name: p, colour: red } ]".to_owned(), "unknown field `colour`"),
            ("pools: [ { name: p, backends: [ { name: a, url: \"https://x\", kind: openai, auth: { type: api_key, secret: \"sk-123\" } } ] } ]".to_owned(), "not a key"),
            (format!("pools: [ {{ name: p, backends: [ {backend}, {backend} ] }} ]"), "pools[0].backends[1].name"),
            ("pools: [ { name: p } ]\nclient_keys: [ { id: k, secret: \"env://SLUICE_SURELY_UNSET\", pools: [p] } ]".to_owned(), "SLUICE_SURELY_UNSET is not set"),
            ("pools: [ { name: p } ]\nclient_keys: [ { id: k, secret: \"env://X\", pools: [q] } ]".to_owned(), "client_keys[0].pools[0]: pool 'q' does not exist"),
            ("pools: [".to_owned(), "not valid"),
        ] {
            let error = load(&yaml).await.unwrap_err();
            assert!(error.contains(expected), "{yaml}\n=> {error}");
        }
    }
}
