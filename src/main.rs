//! `sluice`: one binary for the control plane, the proxy and the development tools.

mod cli;
mod commands;
mod logging;
mod shutdown;
mod telemetry;

use clap::Parser as _;

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
