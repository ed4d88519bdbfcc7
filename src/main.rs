//! `sluice`: one binary for the control plane, the proxy and the development tools.

mod cli;
mod commands;
mod logging;
mod shutdown;
mod telemetry;

use clap::Parser as _;

/// jemalloc rather than glibc's malloc: about 6 % fewer instructions per proxied call, the same
/// memory at 1,000 open streams (docs/performance.md, "Seventh round"). Tuned, if ever needed,
/// with `_RJEM_MALLOC_CONF` (the crate prefixes jemalloc's symbols and its variable).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // One process-wide TLS provider: sqlx, reqwest, tonic and the Azure SDK all use rustls.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let telemetry = telemetry::init(&cli.log)?;
    let outcome = cli.run(&telemetry).await;
    telemetry.shutdown();
    outcome
}
