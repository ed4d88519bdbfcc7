//! The few request-body fields the mock acts on, read without building a JSON tree.
//!
//! Prompt text is never kept: the visitors below only count characters, so a large chat
//! history costs a scan, not a copy.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};

/// Characters per token in the mock's deterministic tokenizer.
const CHARS_PER_TOKEN: usize = 4;

#[derive(Debug, Default, Deserialize)]
pub struct InferenceRequest<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Chat history; only the length of its text matters.
    #[serde(default)]
    pub messages: Option<TextLen>,
    /// Completions prompt.
    #[serde(default)]
    pub prompt: Option<Inputs>,
    /// Embeddings input.
    #[serde(default)]
    pub input: Option<Inputs>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

impl InferenceRequest<'_> {
    pub fn parse(body: &[u8]) -> Result<InferenceRequest<'_>, serde_json::Error> {
        let request = serde_json::from_slice(body)?;
        // Derived struct deserializers also accept arrays of field values; OpenAI does not.
        let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(de::Error::invalid_type(Unexpected::Seq, &"a JSON object"));
        }
        Ok(request)
    }

    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            == Some(true)
    }

    /// The caller's token cap; `max_completion_tokens` supersedes `max_tokens` in OpenAI's API.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Total characters of the text the operation consumes.
    pub fn prompt_chars(&self) -> usize {
        let messages = self.messages.map_or(0, |text| text.0);
        let prompt = self.prompt.map_or(0, |inputs| inputs.chars);
        let input = self.input.map_or(0, |inputs| inputs.chars);
        messages + prompt + input
    }
}

/// `ceil(chars / 4)`, at least 1: deterministic so tests can assert usage numbers.
pub fn prompt_tokens(chars: usize) -> u32 {
    let tokens = chars.div_ceil(CHARS_PER_TOKEN).max(1);
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// Characters of text inside a JSON value: strings count, `content` and `text` members of
/// objects count (so both `"content": "hi"` and content-part arrays work), anything else is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextLen(pub usize);

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextLenVisitor)
    }
}

struct TextLenVisitor;

impl<'de> Visitor<'de> for TextLenVisitor {
    type Value = TextLen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<TextLen, E> {
        Ok(TextLen(text.chars().count()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextLen, A::Error> {
        let mut total = 0;
        while let Some(TextLen(len)) = seq.next_element()? {
            total += len;
        }
        Ok(TextLen(total))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextLen, A::Error> {
        let mut total = 0;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "content" || key == "text" {
                total += map.next_value::<TextLen>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(TextLen(total))
    }
}

/// A `prompt` or `input`: a string, an array of strings, one token array or an array of token
/// arrays. Counts the inputs (one embedding each) and their characters (a token counts as
/// [`CHARS_PER_TOKEN`] characters so token arrays keep their token count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    pub count: usize,
    pub chars: usize,
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InputsVisitor)
    }
}

struct InputsVisitor;

impl<'de> Visitor<'de> for InputsVisitor {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of strings or an array of tokens")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Inputs, E> {
        Ok(Inputs {
            count: 1,
            chars: text.chars().count(),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
        let mut inputs = Inputs::default();
        let mut bare_tokens = false;
        while let Some(item) = seq.next_element::<InputItem>()? {
            match item {
                InputItem::Text(chars) => {
                    inputs.count += 1;
                    inputs.chars += chars;
                }
                InputItem::Token => {
                    bare_tokens = true;
                    inputs.chars += CHARS_PER_TOKEN;
                }
                InputItem::Tokens(tokens) => {
                    inputs.count += 1;
                    inputs.chars += tokens * CHARS_PER_TOKEN;
                }
            }
        }
        // `[1, 2, 3]` is one tokenized input, not three.
        if bare_tokens {
            inputs.count += 1;
        }
        Ok(inputs)
    }
}

enum InputItem {
    Text(usize),
    Token,
    Tokens(usize),
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InputItemVisitor)
    }
}

struct InputItemVisitor;

impl<'de> Visitor<'de> for InputItemVisitor {
    type Value = InputItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a token or an array of tokens")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<InputItem, E> {
        Ok(InputItem::Text(text.chars().count()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<InputItem, E> {
        Ok(InputItem::Token)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<InputItem, E> {
        Ok(InputItem::Token)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputItem, A::Error> {
        let mut tokens = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            tokens += 1;
        }
        Ok(InputItem::Tokens(tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> InferenceRequest<'_> {
        InferenceRequest::parse(json.as_bytes()).expect("valid request")
    }

    #[test]
    fn counts_chat_text_in_strings_and_content_parts() {
        let request = parse(
            r#"{"model":"m","messages":[
                {"role":"system","content":"abcd"},
                {"role":"user","content":[{"type":"text","text":"héllo"},{"type":"image_url","image_url":{"url":"x"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}
            ]}"#,
        );
        assert_eq!(request.model.as_deref(), Some("m"));
        assert_eq!(request.prompt_chars(), 9);
        assert_eq!(prompt_tokens(request.prompt_chars()), 3);
    }

    #[test]
    fn counts_inputs_of_every_shape() {
        let inputs = |json: &str| parse(json).input.expect("input");
        assert_eq!(
            inputs(r#"{"input":"abcde"}"#),
            Inputs { count: 1, chars: 5 }
        );
        assert_eq!(
            inputs(r#"{"input":["ab","cd","e"]}"#),
            Inputs { count: 3, chars: 5 }
        );
        assert_eq!(
            inputs(r#"{"input":[1,2,3]}"#),
            Inputs {
                count: 1,
                chars: 12
            }
        );
        assert_eq!(
            inputs(r#"{"input":[[1,2],[3]]}"#),
            Inputs {
                count: 2,
                chars: 12
            }
        );
    }

    #[test]
    fn reads_stream_flags_and_token_caps() {
        let request = parse(
            r#"{"stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"max_completion_tokens":3}"#,
        );
        assert!(request.is_stream());
        assert!(request.include_usage());
        assert_eq!(request.max_tokens(), Some(3));
        let request = parse(r#"{"stream":null,"stream_options":null}"#);
        assert!(!request.is_stream());
        assert!(!request.include_usage());
    }

    #[test]
    fn unescapes_before_counting() {
        let request = parse(r#"{"prompt":"a\"b\u00e9"}"#);
        assert_eq!(request.prompt_chars(), 4);
    }

    #[test]
    fn prompt_tokens_round_up_and_never_reach_zero() {
        assert_eq!(prompt_tokens(0), 1);
        assert_eq!(prompt_tokens(4), 1);
        assert_eq!(prompt_tokens(5), 2);
    }

    #[test]
    fn rejects_wrong_types_and_broken_json() {
        assert!(InferenceRequest::parse(br#"{"stream":"yes"}"#).is_err());
        assert!(InferenceRequest::parse(b"{").is_err());
        assert!(InferenceRequest::parse(b"[]").is_err());
    }
}
