//! `sluice mock-upstream`: the mock as a standalone server for demos, scripts and benchmarks.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use super::config::MockConfig;
use super::server;

/// Run a mock Azure OpenAI / OpenAI upstream (chat completions, completions, embeddings, SSE
/// streaming). Drive faults and read stats over HTTP at /_mock/faults, /_mock/stats and
/// /_mock/requests on the same port.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct MockUpstreamArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "SLUICE_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// Name returned in the x-mock-upstream response header.
    #[arg(long, env = "SLUICE_NAME", default_value = "mock")]
    pub name: String,

    /// Key callers must send (api-key or Authorization: Bearer); any or none when unset.
    #[arg(long, env = "SLUICE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Delay before every response head, in milliseconds.
    #[arg(long, env = "SLUICE_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Pace of streamed tokens; as fast as possible when unset.
    #[arg(long, env = "SLUICE_TOKENS_PER_SECOND", value_parser = positive_rate)]
    pub tokens_per_second: Option<f64>,

    /// Tokens per completion, lowered by a request's max_tokens.
    #[arg(long, env = "SLUICE_COMPLETION_TOKENS", default_value_t = 16)]
    pub completion_tokens: u32,

    /// Length of embedding vectors.
    #[arg(long, env = "SLUICE_EMBEDDING_DIMS", default_value_t = 8)]
    pub embedding_dims: usize,

    /// Region returned in the x-ms-region response header.
    #[arg(long, env = "SLUICE_REGION", default_value = "eastus")]
    pub region: String,

    /// Don't keep recent requests in memory (for benchmarks); they are still counted.
    #[arg(long, env = "SLUICE_NO_RECORD")]
    pub no_record: bool,
}

impl MockUpstreamArgs {
    pub fn config(&self) -> MockConfig {
        MockConfig {
            name: self.name.clone(),
            api_key: self.api_key.clone(),
            latency: Duration::from_millis(self.latency_ms),
            tokens_per_second: self.tokens_per_second,
            completion_tokens: self.completion_tokens,
            embedding_dims: self.embedding_dims,
            region: self.region.clone(),
            record_requests: !self.no_record,
        }
    }
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a positive number")),
    }
}

/// Serves until `shutdown` resolves, then lets open requests finish.
pub async fn run(
    args: MockUpstreamArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let config = args.config();
    let listener = TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        mock.name = %config.name,
        mock.addr = %addr,
        "mock upstream listening on http://{addr}"
    );
    server::serve(listener, config, shutdown).await
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockUpstreamArgs,
    }

    #[test]
    fn every_flag_has_a_sluice_env_var() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let expected = format!("SLUICE_{}", long.replace('-', "_").to_uppercase());
            let env = arg.get_env().and_then(|env| env.to_str());
            assert_eq!(env, Some(expected.as_str()), "--{long}");
        }
        let key = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some("api-key"));
        assert!(key.is_some_and(|arg| arg.is_hide_env_values_set()));
    }

    #[test]
    fn defaults_match_the_default_config() {
        let cli = Cli::try_parse_from(["mock"]).expect("defaults parse");
        assert_eq!(cli.args.addr, SocketAddr::from(([127, 0, 0, 1], 8000)));
        assert_eq!(cli.args.config(), MockConfig::default());
    }

    #[test]
    fn flags_fill_the_config() {
        let cli = Cli::try_parse_from([
            "mock",
            "--addr=0.0.0.0:0",
            "--name=westus",
            "--api-key=k",
            "--latency-ms=25",
            "--tokens-per-second=50",
            "--completion-tokens=4",
            "--embedding-dims=3",
            "--region=westus",
            "--no-record",
        ])
        .expect("flags parse");
        let expected = MockConfig::named("westus")
            .api_key("k")
            .latency(Duration::from_millis(25))
            .tokens_per_second(50.0)
            .completion_tokens(4)
            .embedding_dims(3)
            .region("westus")
            .record_requests(false);
        assert_eq!(cli.args.config(), expected);
    }

    #[test]
    fn refuses_a_useless_token_rate() {
        assert!(Cli::try_parse_from(["mock", "--tokens-per-second=0"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--tokens-per-second=fast"]).is_err());
    }
}
