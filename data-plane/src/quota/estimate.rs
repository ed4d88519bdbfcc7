//! What a call will consume, guessed from its body before it is sent: held back from the
//! token and money limits, then replaced by the backend's own count.

use serde::Deserialize;

use crate::json_members::{count, each_field, flag, nullable, only_space_after};

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

/// The fields of a request body the estimate reads.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
struct Fields {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl Fields {
    /// Read by skimming the body's members where that is sure to give serde's answer (the
    /// usual request), by serde where it is not; `None` for what serde refuses too.
    fn of(body: &[u8]) -> Option<Self> {
        Self::skim(body).or_else(|| serde_json::from_slice(body).ok())
    }

    /// `None` for anything serde might read differently: an escaped key, a repeated field, a
    /// value that is not plainly of its field's type.
    fn skim(body: &[u8]) -> Option<Self> {
        const FIELDS: &[&[u8]] = &[
            b"max_tokens",
            b"max_completion_tokens",
            b"max_output_tokens",
            b"stream",
            b"stream_options",
        ];
        let mut fields = Self::default();
        let len = each_field(body, FIELDS, |name, value| {
            match name {
                b"max_tokens" => fields.max_tokens = nullable(value, count)?,
                b"max_completion_tokens" => fields.max_completion_tokens = nullable(value, count)?,
                b"max_output_tokens" => fields.max_output_tokens = nullable(value, count)?,
                b"stream" => fields.stream = flag(value)?,
                // The last of `FIELDS`: `each_field` passes no other names.
                _ => fields.stream_options = nullable(value, StreamOptions::skim)?,
            }
            Some(())
        })?;
        only_space_after(body, len)?;
        Some(fields)
    }
}

impl StreamOptions {
    fn skim(object: &[u8]) -> Option<Self> {
        let mut options = Self::default();
        each_field(object, &[b"include_usage"], |_, value| {
            options.include_usage = flag(value)?;
            Some(())
        })?;
        Some(options)
    }
}

impl Estimate {
    pub fn of(body: &[u8]) -> Self {
        let prompt_tokens = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
        // Not JSON (a multipart upload): the size is all there is to go on.
        let Some(fields) = Fields::of(body) else {
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

    /// Serde's reading, which the skim must match.
    fn by_serde(body: &[u8]) -> Option<Fields> {
        serde_json::from_slice(body).ok()
    }

    #[test]
    fn reads_what_serde_reads_where_the_skim_must_give_up() {
        for body in [
            r#"{"max_tokens":5,"max_tokens":6}"#,
            r#"{"max\u005ftokens":5}"#,
            r#"{"max_tokens":5.0}"#,
            r#"{"max_tokens":-1}"#,
            r#"{"max_tokens":05}"#,
            r#"{"max_tokens":1e2}"#,
            r#"{"max_tokens":"5"}"#,
            r#"{"max_tokens":18446744073709551616}"#,
            r#"{"stream":null}"#,
            r#"{"stream":1}"#,
            r#"{"stream":true,"stream_options":[]}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true,"include_usage":true}}"#,
            r#"{"stream":true,"stream_options":{"include_usage":null}}"#,
            r#"{"stream":true,"stream_options":{"include\u005fusage":true}}"#,
            r#"[1]"#,
            "",
        ] {
            assert_eq!(
                Fields::of(body.as_bytes()),
                by_serde(body.as_bytes()),
                "{body}"
            );
        }
        assert_eq!(
            Fields::of(br#"{"max\u005ftokens":5}"#).and_then(|f| f.max_tokens),
            Some(5)
        );
        assert_eq!(
            Fields::of(br#" {"max_tokens" : 0 , "stream" : false, "stream_options" : null } "#),
            Some(Fields {
                max_tokens: Some(0),
                ..Fields::default()
            })
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::Fields;
        use super::by_serde;
        use crate::json_members::arbitrary::{object_text, value};

        fn member() -> impl Strategy<Value = (String, Value)> {
            let name = prop_oneof![
                Just("max_tokens"),
                Just("max_completion_tokens"),
                Just("max_output_tokens"),
                Just("stream"),
                Just("stream_options"),
                Just("include_usage"),
                Just("messages"),
                Just("model"),
                Just("temperature"),
                Just("tools"),
                Just("user"),
            ]
            .prop_map(str::to_string);
            let options = prop_oneof![
                Just(json!({"include_usage": true})),
                Just(json!({"include_usage": false, "other": [1, "}"]})),
                Just(json!({})),
            ];
            (
                name,
                prop_oneof![
                    2 => value(),
                    1 => options,
                    3 => (0u64..100_000).prop_map(Value::from),
                    1 => any::<bool>().prop_map(Value::Bool),
                    1 => Just(Value::Null),
                ],
            )
        }

        proptest! {
            /// For any JSON object (repeated and nested fields, any value types, any spacing),
            /// the skim with its fallback reads exactly what serde reads.
            #[test]
            fn the_skim_reads_what_serde_reads(
                members in proptest::collection::vec(member(), 0..6),
                spaced in any::<bool>(),
            ) {
                let body = object_text(&members, spaced);
                prop_assert_eq!(Fields::of(body.as_bytes()), by_serde(body.as_bytes()), "{}", body);
            }
        }
    }
}
