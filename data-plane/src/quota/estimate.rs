//! What a call will consume, guessed from its body before it is sent: held back from the
//! token and money limits, then replaced by the backend's own count.

use serde::Deserialize;

/// Bytes of request body per token: about four for English text; JSON syntax makes the guess
/// a little high, which is the safe side for a hold-back.
const BYTES_PER_TOKEN: u64 = 4;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub prompt_tokens: u64,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`; 0 when not given (then
    /// the output counts only once the backend reports it).
    pub max_output_tokens: u64,
    /// A streamed call that did not ask for usage (`stream_options.include_usage`).
    pub stream_without_usage: bool,
}

#[derive(Deserialize)]
struct Fields {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl Estimate {
    pub fn of(body: &[u8]) -> Self {
        let prompt_tokens = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
        // Not JSON (a multipart upload): the size is all there is to go on.
        let Ok(fields) = serde_json::from_slice::<Fields>(body) else {
            return Self {
                prompt_tokens,
                ..Self::default()
            };
        };
        Self {
            prompt_tokens,
            max_output_tokens: fields
                .max_completion_tokens
                .or(fields.max_tokens)
                .or(fields.max_output_tokens)
                .unwrap_or(0),
            stream_without_usage: fields.stream
                && !fields.stream_options.is_some_and(|o| o.include_usage),
        }
    }

    pub fn tokens(self) -> u64 {
        self.prompt_tokens.saturating_add(self.max_output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_output_cap_and_whether_usage_was_asked_for() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}],"max_tokens":50,"stream":true}"#;
        let estimate = Estimate::of(body);
        assert_eq!(estimate.prompt_tokens, (body.len() as u64).div_ceil(4));
        assert_eq!(estimate.max_output_tokens, 50);
        assert!(estimate.stream_without_usage);
        assert_eq!(estimate.tokens(), estimate.prompt_tokens + 50);

        let asked = Estimate::of(
            br#"{"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":7,"max_tokens":99}"#,
        );
        assert!(!asked.stream_without_usage);
        assert_eq!(asked.max_output_tokens, 7);
        assert_eq!(
            Estimate::of(br#"{"max_output_tokens":9}"#).max_output_tokens,
            9
        );
        let multipart = Estimate::of(b"--boundary\r\n...");
        assert_eq!(
            (multipart.max_output_tokens, multipart.stream_without_usage),
            (0, false)
        );
    }
}
