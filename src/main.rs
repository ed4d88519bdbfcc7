//! `sluice`: one binary for the control plane, the proxy and the development tools.

mod cli;
mod commands;
mod logging;
mod shutdown;
// Nothing calls the OTLP metrics export yet: the commands wire it in next.
#[allow(dead_code, unused_imports)]
mod telemetry;

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    logging::init(&cli.log)?;
    // One process-wide TLS provider: sqlx, reqwest and the Azure SDK all use rustls.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    cli.run().await
}
