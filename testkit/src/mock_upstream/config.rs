//! How one mock upstream instance behaves when no fault is injected.

use std::time::Duration;

use thiserror::Error;

/// Settings of one mock upstream. Plain public fields with a [`Default`]; the consuming
/// setters make one-line configs read well in tests:
///
/// ```
/// # use std::time::Duration;
/// # use sluice_testkit::mock_upstream::MockConfig;
/// let config = MockConfig::named("eastus").api_key("k1").latency(Duration::from_millis(5));
/// assert_eq!(config.completion_tokens, 16);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MockConfig {
    /// Sent back in `x-mock-upstream` so tests can tell which mock answered.
    pub name: String,
    /// The key callers must present; `None` accepts any key and no key.
    pub api_key: Option<String>,
    /// Added before every response head.
    pub latency: Duration,
    /// Pace of streamed tokens; `None` streams as fast as the client reads.
    pub tokens_per_second: Option<f64>,
    /// Tokens in every completion, lowered by the request's `max_tokens` /
    /// `max_completion_tokens`.
    pub completion_tokens: u32,
    /// Length of every embedding vector.
    pub embedding_dims: usize,
    /// Sent back in `x-ms-region`.
    pub region: String,
    /// Keep the most recent requests for inspection. Benchmarks turn it off; the request
    /// counter counts either way.
    pub record_requests: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            name: "mock".to_owned(),
            api_key: None,
            latency: Duration::ZERO,
            tokens_per_second: None,
            completion_tokens: 16,
            embedding_dims: 8,
            region: "eastus".to_owned(),
            record_requests: true,
        }
    }
}

/// A [`MockConfig`] that cannot be served.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("tokens_per_second must be a positive, finite number (got {0})")]
    TokensPerSecond(f64),
    #[error("{field} must be a valid HTTP header value")]
    HeaderValue { field: &'static str },
}

impl MockConfig {
    /// The default config with another name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn tokens_per_second(mut self, rate: f64) -> Self {
        self.tokens_per_second = Some(rate);
        self
    }

    pub fn completion_tokens(mut self, tokens: u32) -> Self {
        self.completion_tokens = tokens;
        self
    }

    pub fn embedding_dims(mut self, dims: usize) -> Self {
        self.embedding_dims = dims;
        self
    }

    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    pub fn record_requests(mut self, record: bool) -> Self {
        self.record_requests = record;
        self
    }

    /// Time between two streamed tokens, or `None` when streams are not paced.
    pub(crate) fn token_interval(&self) -> Result<Option<Duration>, ConfigError> {
        match self.tokens_per_second {
            None => Ok(None),
            Some(rate) if rate.is_finite() && rate > 0.0 => {
                Ok(Some(Duration::from_secs_f64(1.0 / rate)))
            }
            Some(rate) => Err(ConfigError::TokensPerSecond(rate)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_override_defaults() {
        let config = MockConfig::named("a")
            .api_key("k")
            .tokens_per_second(50.0)
            .completion_tokens(3)
            .embedding_dims(4)
            .region("westus")
            .record_requests(false);
        assert_eq!(config.name, "a");
        assert_eq!(config.api_key.as_deref(), Some("k"));
        assert_eq!(config.completion_tokens, 3);
        assert_eq!(config.embedding_dims, 4);
        assert_eq!(config.region, "westus");
        assert!(!config.record_requests);
        assert_eq!(config.token_interval(), Ok(Some(Duration::from_millis(20))));
    }

    #[test]
    fn rejects_unusable_token_rates() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = MockConfig::default().tokens_per_second(rate);
            assert!(config.token_interval().is_err(), "{rate} accepted");
        }
        assert_eq!(MockConfig::default().token_interval(), Ok(None));
    }
}
