use clap::{Parser, Subcommand};
use sluice_testkit::mock_upstream::{self, MockUpstreamArgs};

use crate::commands::{ControlPlaneArgs, DevArgs, ProxyArgs};
use crate::logging::LogArgs;
use crate::shutdown;
use crate::telemetry::Telemetry;

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
    /// Everything in one process for a first try, on this machine only: control plane on
    /// embedded SQLite, one proxy, mock Azure OpenAI backends, a seeded pool and a demo key.
    Dev(DevArgs),
    /// The control plane: config store, admin REST API and the gRPC config stream.
    ControlPlane(ControlPlaneArgs),
    /// The data plane: serves OpenAI and Azure OpenAI clients and spreads their calls over
    /// the backends of a pool.
    Proxy(ProxyArgs),
    /// A fast mock Azure OpenAI / OpenAI server for demos, tests and benchmarks, with fault
    /// injection on `/_mock/faults`.
    MockUpstream(MockUpstreamArgs),
}

impl Cli {
    pub async fn run(self, telemetry: &Telemetry) -> anyhow::Result<()> {
        match self.command {
            Command::Dev(args) => args.run(telemetry).await,
            Command::ControlPlane(args) => args.run(telemetry).await,
            Command::Proxy(args) => args.run(telemetry).await,
            Command::MockUpstream(args) => Ok(mock_upstream::run(args, shutdown::signal()).await?),
        }
    }
}
