use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sluice_control_plane::store::StoreOptions;
use sluice_control_plane::{ControlPlane, ControlPlaneConfig};
use sluice_data_plane::proxy::ProxyOptions;
use sluice_data_plane::{DataPlane, DataPlaneConfig};
use sluice_testkit::mock_upstream::{self, MockUpstreamArgs};

use crate::logging::LogArgs;
use crate::shutdown;

/// Sluice: a self-hosted gateway that spreads OpenAI and Azure OpenAI traffic over many
/// deployments behind one endpoint.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything for a first try, on this machine only: the control plane on embedded SQLite
    /// under --data-dir, admin API on loopback without authentication.
    Dev(DevArgs),
    /// The control plane: config store and admin REST API.
    ControlPlane(ControlPlaneArgs),
    /// The data plane: serves OpenAI and Azure OpenAI clients and spreads their calls over
    /// the backends of a pool.
    Proxy(ProxyArgs),
    /// A fast mock Azure OpenAI / OpenAI server for demos, tests and benchmarks, with fault
    /// injection on `/_mock/faults`.
    MockUpstream(MockUpstreamArgs),
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// Static config file: the admin API's model as YAML (pools, backends, client keys).
    #[arg(long, env = "SLUICE_CONFIG")]
    config: PathBuf,
    /// Client-facing address (HTTP/1.1 and h2c).
    #[arg(long, env = "SLUICE_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// Operations address: /healthz, /readyz, /metrics.
    #[arg(long, env = "SLUICE_OPS_ADDR", default_value = "0.0.0.0:8081")]
    ops_addr: SocketAddr,
    /// Serve clients that present no key. Off by default.
    #[arg(long, env = "SLUICE_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Largest request body, kept in memory for retries; larger bodies get 413.
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Upstream TCP + TLS connect timeout.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT_MS", default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests (streams included) before closing.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,
}

#[derive(Args, Debug)]
struct ControlPlaneArgs {
    /// Config database: postgres://user@host/db or sqlite://path/to/file.db.
    #[arg(
        long,
        env = "SLUICE_DATABASE_URL",
        default_value = "sqlite://./.sluice/sluice.db"
    )]
    database_url: String,
    /// Admin REST API address (port 0 picks a free port).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    admin_addr: SocketAddr,
    #[command(flatten)]
    admin_auth: AdminAuthArgs,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Args, Debug)]
struct AdminAuthArgs {
    /// Admin bearer token(s), at least 16 characters; comma-separated to accept several
    /// while rotating.
    #[arg(
        long,
        env = "SLUICE_ADMIN_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    admin_token: Vec<String>,
    /// Serve the admin API without authentication. Loopback addresses only.
    #[arg(long, env = "SLUICE_INSECURE_NO_ADMIN_AUTH")]
    insecure_no_admin_auth: bool,
}

#[derive(Args, Debug)]
struct DatabaseArgs {
    /// Longest any one database operation may take before the API answers 503.
    #[arg(long, env = "SLUICE_DATABASE_TIMEOUT_MS", default_value_t = 1500,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    database_timeout_ms: u64,
    /// Size of the database connection pool.
    #[arg(long, env = "SLUICE_DATABASE_MAX_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    database_max_connections: u32,
}

impl DatabaseArgs {
    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            timeout: Duration::from_millis(self.database_timeout_ms),
            max_connections: self.database_max_connections,
        }
    }
}

#[derive(Args, Debug)]
struct DevArgs {
    /// Where the embedded SQLite database lives.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./.sluice")]
    data_dir: PathBuf,
    /// Admin REST API address; must be loopback, as dev runs without authentication.
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    admin_addr: SocketAddr,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::ControlPlane(args) => {
                run_control_plane(ControlPlaneConfig {
                    database_url: args.database_url,
                    admin_addr: args.admin_addr,
                    admin_tokens: args.admin_auth.admin_token,
                    insecure_no_admin_auth: args.admin_auth.insecure_no_admin_auth,
                    store: args.database.store_options(),
                })
                .await
            }
            Command::Dev(args) => run_dev(args).await,
            Command::Proxy(args) => run_proxy(args).await,
            Command::MockUpstream(args) => mock_upstream::run(args, shutdown::signal())
                .await
                .context("mock upstream failed"),
        }
    }
}

async fn run_control_plane(config: ControlPlaneConfig) -> anyhow::Result<()> {
    let control_plane = ControlPlane::bind(config)
        .await
        .context("control plane failed to start")?;
    control_plane
        .serve(shutdown::signal())
        .await
        .context("admin server failed")
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let data_plane = DataPlane::bind(DataPlaneConfig {
        addr: args.addr,
        ops_addr: args.ops_addr,
        config_file: args.config,
        options: ProxyOptions {
            allow_anonymous: args.allow_anonymous,
            max_body_bytes: args.max_body_bytes,
        },
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
    })
    .await
    .context("proxy failed to start")?;
    data_plane
        .serve(shutdown::signal())
        .await
        .context("proxy server failed")
}

async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let database = args.data_dir.join("dev.db");
    let config = ControlPlaneConfig {
        database_url: format!("sqlite://{}", database.display()),
        admin_addr: args.admin_addr,
        admin_tokens: Vec::new(),
        insecure_no_admin_auth: true,
        store: StoreOptions::default(),
    };
    let control_plane = ControlPlane::bind(config)
        .await
        .context("dev control plane failed to start")?;
    let admin = format!("http://{}", control_plane.admin_addr()?);
    println!(
        "\nSluice dev: control plane on {admin} (SQLite at {db}, no admin auth, loopback only)\n\n\
         Create a pool:\n  curl -s -X POST {admin}/api/v1/pools -H 'content-type: application/json' \\\n    \
         -d '{{\"name\":\"gpt-4o\",\"backends\":[{{\"name\":\"eastus\",\"url\":\"https://aoai-eastus.openai.azure.com\",\
         \"kind\":\"azure_openai\",\"auth\":{{\"type\":\"api_key\",\"secret\":\"env://AOAI_EASTUS_KEY\"}}}}]}}'\n\
         Read it back:\n  curl -si {admin}/api/v1/pools/gpt-4o\n\
         The API:\n  curl -s {admin}/openapi.json\n",
        db = database.display(),
    );
    control_plane
        .serve(shutdown::signal())
        .await
        .context("admin server failed")
}
