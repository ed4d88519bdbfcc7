use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sluice_control_plane::console::ConsoleOptions;
use sluice_control_plane::fleet::{FleetSettings, default_replica_name};
use sluice_control_plane::store::StoreOptions;
use sluice_control_plane::{ControlPlane, ControlPlaneConfig, GrpcTls};

use super::{listener_tls, read_pem};
use crate::shutdown;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics_export::MetricsSource;

#[derive(Args, Debug)]
pub struct ControlPlaneArgs {
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
    /// PEM certificate chain to serve the admin API and console over HTTPS; the file is
    /// re-read when it changes, as when cert-manager renews it. (The config stream has its own:
    /// --grpc-tls-cert.)
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// gRPC config-stream address for proxies (port 0 picks a free port).
    #[arg(long, env = "SLUICE_GRPC_ADDR", default_value = "0.0.0.0:9091")]
    grpc_addr: SocketAddr,
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
    /// Token(s) proxies must present on the config stream, at least 16 characters;
    /// comma-separated to accept several while rotating.
    #[arg(
        long,
        env = "SLUICE_PROXY_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    proxy_token: Vec<String>,
    /// PEM certificate for serving the config stream over TLS.
    #[arg(long, env = "SLUICE_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for --grpc-tls-cert.
    #[arg(long, env = "SLUICE_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, proxies must present a client certificate it signed (mTLS).
    #[arg(long, env = "SLUICE_GRPC_CLIENT_CA", requires = "grpc_tls_cert")]
    grpc_client_ca: Option<PathBuf>,
    /// A proxy that does not take a config snapshot within this long is dropped; it
    /// reconnects and resyncs, and never holds up the others.
    #[arg(long, env = "SLUICE_PROXY_SEND_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    proxy_send_timeout_ms: u64,
    /// Longest any one database operation may take before the API answers 503.
    #[arg(long, env = "SLUICE_DATABASE_TIMEOUT_MS", default_value_t = 1500,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    database_timeout_ms: u64,
    /// Size of the database connection pool.
    #[arg(long, env = "SLUICE_DATABASE_MAX_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    database_max_connections: u32,
    /// The Redis the proxies share client-key limits through (their --redis-url), read for
    /// fleet-wide GET /api/v1/keys/{id}/usage; without it usage reports give windows only.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis_url: Option<String>,
    /// This replica's name in GET /api/v1/proxies (default: the host name, which on
    /// Kubernetes is the pod's).
    #[arg(long, env = "SLUICE_REPLICA_NAME")]
    replica_name: Option<String>,
    /// A proxy whose stream closed, or that nothing was heard of for this long, is shown as
    /// gone.
    #[arg(long, env = "SLUICE_PROXY_GONE_AFTER_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    proxy_gone_after_secs: u64,
    /// A proxy gone for this long is dropped from GET /api/v1/proxies.
    #[arg(long, env = "SLUICE_PROXY_FORGET_AFTER_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    proxy_forget_after_secs: u64,
    /// Hourly usage history older than this many days is deleted.
    #[arg(long, env = "SLUICE_USAGE_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    usage_retention_days: u64,
    /// How long an admin console session lasts after sign-in, e.g. 12h, 30m or 90s; it also
    /// ends at sign-out or when its admin token is no longer accepted.
    #[arg(long, env = "SLUICE_CONSOLE_SESSION_TTL", default_value = "12h",
          value_parser = parse_session_ttl)]
    console_session_ttl: Duration,
}

/// `90s`, `30m`, `12h` or `7d`: between a minute and thirty days.
fn parse_session_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.len().saturating_sub(1);
    let (number, unit) = raw.split_at(split);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err("give a number with a unit: s, m, h or d, as in 12h".into()),
    };
    let seconds = number
        .parse::<u64>()
        .map_err(|_| "give a whole number with a unit: s, m, h or d, as in 12h".to_owned())?
        .saturating_mul(seconds_per_unit);
    if !(60..=30 * 24 * 60 * 60).contains(&seconds) {
        return Err("sessions last between one minute and 30 days".into());
    }
    Ok(Duration::from_secs(seconds))
}

impl ControlPlaneArgs {
    pub async fn run(self, telemetry: &Telemetry) -> anyhow::Result<()> {
        let grpc_tls = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(GrpcTls {
                certificate: read_pem("--grpc-tls-cert", cert)?,
                private_key: read_pem("--grpc-tls-key", key)?,
                client_ca: self
                    .grpc_client_ca
                    .as_deref()
                    .map(|ca| read_pem("--grpc-client-ca", ca))
                    .transpose()?,
            }),
            _ => None,
        };
        let config = ControlPlaneConfig {
            database_url: self.database_url,
            admin_addr: self.admin_addr,
            admin_tls: listener_tls(&self.tls_cert, &self.tls_key),
            grpc_addr: self.grpc_addr,
            admin_tokens: self.admin_token,
            insecure_no_admin_auth: self.insecure_no_admin_auth,
            proxy_tokens: self.proxy_token,
            grpc_tls,
            proxy_send_timeout: Duration::from_millis(self.proxy_send_timeout_ms),
            store: StoreOptions {
                timeout: Duration::from_millis(self.database_timeout_ms),
                max_connections: self.database_max_connections,
            },
            redis_url: self.redis_url,
            fleet: FleetSettings {
                replica: self.replica_name.unwrap_or_else(default_replica_name),
                gone_after: Duration::from_secs(self.proxy_gone_after_secs),
                forget_after: Duration::from_secs(self.proxy_forget_after_secs),
                usage_retention: Duration::from_secs(self.usage_retention_days * 86_400),
            },
            console: ConsoleOptions {
                session_ttl: self.console_session_ttl,
            },
        };
        let control_plane = ControlPlane::bind(config)
            .await
            .context("control plane failed to start")?;
        let export = telemetry.export_metrics(vec![MetricsSource::new(
            "sluice.control_plane",
            control_plane.metrics_reader(),
        )])?;
        let served = control_plane.serve(shutdown::signal()).await;
        export.finish().await;
        served.context("control plane server failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ttls_take_a_unit_and_stay_in_bounds() {
        assert_eq!(parse_session_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_session_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_session_ttl("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["12", "h", "", "30s", "31d", "-1h", "1.5h"] {
            assert!(parse_session_ttl(bad).is_err(), "{bad}");
        }
    }
}
