//! A fast, realistic mock of Azure OpenAI and OpenAI for end-to-end tests, `sluice dev`,
//! `sluice mock-upstream` and benchmarks.
//!
//! Serves `POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings}?api-version=…`,
//! `POST /openai/v1/{operation}` and `POST /v1/{operation}` (model from the body) with the
//! bodies, headers, error shapes and SSE framing of the real services, and lets tests inject
//! faults (statuses such as 429 with `retry-after`, connection resets, latency, streams cut
//! short, responses that hang mid-body) and inspect what arrived.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use sluice_testkit::mock_upstream::{Fault, MockConfig, MockUpstream};
//!
//! let mock = MockUpstream::start_local(MockConfig::named("eastus").api_key("k")).await?;
//! mock.inject(Fault::rate_limited(Duration::from_secs(2)).once()).expect("valid fault");
//! // … point the proxy at mock.url() and send it a request …
//! let seen = mock.last_request().expect("the proxy called the mock");
//! assert_eq!(seen.api_key(), Some("k"));
//! assert!(seen.header("traceparent").is_some());
//! # Ok(())
//! # }
//! ```
//!
//! Azure-only body fields (`prompt_filter_results`, `content_filter_results`, the empty first
//! stream chunk) appear on `/openai/…` paths, not on `/v1/…`, as with the real services.

mod bodies;
mod cli;
mod config;
mod control;
mod errors;
mod fault_queue;
mod faults;
mod handlers;
mod ids;
mod recording;
mod request;
mod routing;
mod script;
mod server;
mod stream;

pub use cli::{MockUpstreamArgs, run};
pub use config::{ConfigError, MockConfig};
pub use faults::{Fault, FaultError, FaultKind, STALL_LIMIT};
pub use recording::{RECORDED_REQUESTS, RecordedRequest};
pub use routing::Operation;
pub use server::{MockHandle, MockStats, MockUpstream, serve};
pub use stream::InjectedAbort;
