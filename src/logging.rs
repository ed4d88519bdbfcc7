use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "SLUICE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter in tracing's EnvFilter syntax, e.g. `info,sluice_control_plane=debug`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    pub log: String,
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    // Libraries below us log at debug level per request and connection; keep them quiet
    // unless asked for by name.
    let filter = EnvFilter::try_new(format!(
        "{},sqlx=warn,hyper=warn,h2=warn,tower=warn,tonic=warn",
        args.log
    ))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
