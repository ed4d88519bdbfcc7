use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sluice_control_plane::console::ConsoleOptions;
use sluice_control_plane::fleet::FleetSettings;
use sluice_control_plane::store::{
    Actor, NewClientKey, PoolReplacement, Store, StoreError, StoreOptions,
};
use sluice_control_plane::{ControlPlane, ControlPlaneConfig};
use sluice_data_plane::proxy::ProxyOptions;
use sluice_data_plane::{
    ConfigSource, ControlPlaneSource, DEFAULT_REPORT_INTERVAL, DataPlane, DataPlaneConfig,
    ListenerOptions, QuotaOptions,
};
use sluice_model::{Backend, Limits, Name, Pool, generate_client_secret};
use sluice_testkit::mock_upstream::{MockConfig, MockHandle, MockUpstream};
use tokio::sync::watch;

use super::proxy::AzureArgs;
use crate::shutdown;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics_export::MetricsSource;

const POOL: &str = "gpt-4o";
const DEMO_KEY: &str = "demo";
/// The demo key's limits: far above a person trying things, there to be seen in the headers.
const DEMO_RPM: u64 = 600;
const DEMO_TPM: u64 = 200_000;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// How many mock Azure OpenAI backends to put behind the seeded pool.
    #[arg(long, env = "SLUICE_BACKENDS", default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    backends: u8,
    /// Where the embedded SQLite database, mock keys and the proxy's cache live.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./.sluice")]
    data_dir: PathBuf,
    /// Admin REST API address (loopback: dev runs it without authentication).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    admin_addr: SocketAddr,
    /// gRPC config-stream address.
    #[arg(long, env = "SLUICE_GRPC_ADDR", default_value = "127.0.0.1:9091")]
    grpc_addr: SocketAddr,
    /// Proxy address for clients.
    #[arg(long, env = "SLUICE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Proxy operations address: /healthz, /readyz, /metrics.
    #[arg(long, env = "SLUICE_OPS_ADDR", default_value = "127.0.0.1:8081")]
    ops_addr: SocketAddr,
    #[command(flatten)]
    azure: AzureArgs,
}

impl DevArgs {
    pub async fn run(self, telemetry: &Telemetry) -> anyhow::Result<()> {
        let secrets = self.data_dir.join("secrets");
        std::fs::create_dir_all(&secrets)
            .with_context(|| format!("cannot create {}", secrets.display()))?;
        let mut mocks = Vec::with_capacity(usize::from(self.backends));
        for i in 1..=self.backends {
            let name = format!("mock-{i}");
            let key = generate_client_secret();
            write_secret(&secrets.join(&name), &key)?;
            let config = MockConfig::named(&name)
                .api_key(key)
                .tokens_per_second(50.0);
            mocks.push(
                MockUpstream::start_local(config)
                    .await
                    .context("mock backend failed to start")?,
            );
        }

        // Dev runs on one machine only; the proxy token is made up fresh each time.
        let proxy_token = generate_client_secret();
        let control_plane = ControlPlane::bind(ControlPlaneConfig {
            database_url: format!("sqlite://{}", self.data_dir.join("dev.db").display()),
            admin_addr: self.admin_addr,
            admin_tls: None,
            grpc_addr: self.grpc_addr,
            admin_tokens: Vec::new(),
            insecure_no_admin_auth: true,
            proxy_tokens: vec![proxy_token.clone()],
            grpc_tls: None,
            proxy_send_timeout: Duration::from_secs(10),
            store: StoreOptions::default(),
            // One proxy, counting alone.
            redis_url: None,
            fleet: FleetSettings {
                replica: "dev".to_owned(),
                ..FleetSettings::default()
            },
            console: ConsoleOptions::default(),
        })
        .await
        .context("dev control plane failed to start")?;
        let demo_key = seed(control_plane.store(), &mocks, &secrets).await?;
        let seeded_revision = control_plane.store().revision().await?;
        let admin = control_plane.admin_addr()?;
        let grpc = control_plane.grpc_addr()?;

        let data_plane = DataPlane::bind(DataPlaneConfig {
            addr: self.addr,
            ops_addr: self.ops_addr,
            listener: ListenerOptions::default(),
            source: ConfigSource::ControlPlane(ControlPlaneSource {
                url: format!("http://{grpc}"),
                proxy_token,
                node_id: "dev-proxy".into(),
                cache_dir: Some(self.data_dir.join("proxy-cache")),
                tls: None,
                report_interval: DEFAULT_REPORT_INTERVAL,
            }),
            options: ProxyOptions {
                allow_anonymous: false,
                max_body_bytes: 16 * 1024 * 1024,
            },
            connect_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            azure: self.azure.options(),
            credential_refresh: self.azure.refresh(),
            // One proxy: limits are counted in it.
            quota: QuotaOptions {
                redis_urls: Vec::new(),
                sync_interval: Duration::from_millis(100),
                node_id: "dev-proxy".into(),
            },
        })
        .await
        .context("dev proxy failed to start")?;
        let proxy = data_plane.addr()?;
        let banner = format!(
            "\nSluice dev is running (loopback only, no admin auth):\n  \
             proxy        http://{proxy}   (ops http://{ops}/metrics)\n  \
             admin API    http://{admin}   (try /api/v1/pools, /api/v1/proxies, /api/v1/usage, /openapi.json)\n  \
             console      http://{admin}/ui/\n  \
             backends     {backends}\n\n\
             Call the seeded pool '{POOL}' with the demo key (limited to {DEMO_RPM} requests and \
             {DEMO_TPM} tokens a minute: its x-ratelimit-* headers count down; see \
             /api/v1/keys/{DEMO_KEY}/usage):\n\n  \
             curl -s 'http://{proxy}/openai/deployments/{POOL}/chat/completions?api-version=2024-10-21' \\\n    \
             -H 'api-key: {demo_key}' -H 'content-type: application/json' \\\n    \
             -d '{{\"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n",
            ops = data_plane.ops_addr()?,
            backends = mocks
                .iter()
                .map(MockHandle::url)
                .collect::<Vec<_>>()
                .join(", "),
        );

        let export = telemetry.export_metrics(vec![
            MetricsSource::new("sluice.control_plane", control_plane.metrics_reader()),
            MetricsSource::new("sluice.proxy", data_plane.metrics_reader()),
        ])?;
        let (stop, stopped) = watch::channel(false);
        let signal = async move {
            shutdown::signal().await;
            let _ = stop.send(true);
        };
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        // The banner's curl line must work when it appears: wait until the proxy serves the
        // seeded config, not a cached one from an earlier run.
        let mut applied = data_plane.applied_revision();
        let announce = async move {
            match tokio::time::timeout(
                Duration::from_secs(30),
                applied.wait_for(|revision| *revision >= seeded_revision),
            )
            .await
            {
                Ok(Ok(_)) => println!("{banner}"),
                _ => tracing::error!(
                    revision = seeded_revision,
                    "the dev proxy did not receive the seeded config"
                ),
            }
        };
        let (cp, dp, (), ()) = tokio::join!(
            control_plane.serve(until_stopped(stopped.clone())),
            data_plane.serve(until_stopped(stopped)),
            signal,
            announce,
        );
        export.finish().await;
        cp.context("dev control plane failed")?;
        dp.context("dev proxy failed")?;
        Ok(())
    }
}

/// Points pool `gpt-4o` at this run's mocks and issues a fresh demo key (keys are shown only
/// when created). Re-running dev keeps everything else an operator added.
async fn seed(store: &Store, mocks: &[MockHandle], secrets: &Path) -> anyhow::Result<String> {
    let actor = Actor("dev".into());
    let backends = mocks
        .iter()
        .map(|mock| -> anyhow::Result<Backend> {
            let secret = format!(
                "file://{}",
                std::fs::canonicalize(secrets.join(mock.name()))?.display()
            );
            Ok(serde_json::from_value(serde_json::json!({
                "name": mock.name(), "url": mock.url(), "kind": "azure_openai",
                "auth": {"type": "api_key", "secret": secret},
            }))?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pool: Name = POOL.parse()?;
    // A price the operator gave the pool stays: a key's budget may depend on it.
    let price = match store.get_pool(&pool).await {
        Ok(stored) => stored.value.price,
        Err(StoreError::NotFound(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let replacement = PoolReplacement {
        strategy: Default::default(),
        retry: Default::default(),
        backends: Some(backends.clone()),
        price,
    };
    match store.replace_pool(&actor, &pool, replacement, None).await {
        Err(StoreError::NotFound(_)) => {
            let new = Pool {
                name: pool,
                strategy: Default::default(),
                retry: Default::default(),
                backends,
                price: None,
            };
            store.create_pool(&actor, &new).await?;
        }
        other => {
            other?;
        }
    }
    let demo: Name = DEMO_KEY.parse()?;
    match store.delete_key(&actor, &demo, None).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let created = store
        .create_key(
            &actor,
            NewClientKey {
                id: demo,
                pools: Vec::new(),
                limits: Limits {
                    requests_per_minute: Some(DEMO_RPM.try_into()?),
                    tokens_per_minute: Some(DEMO_TPM.try_into()?),
                    ..Limits::default()
                },
            },
        )
        .await?;
    Ok(created.secret)
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(value.as_bytes())?;
    Ok(())
}
