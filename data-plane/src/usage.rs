//! Finds the `usage` object in a response as its bytes pass by, without buffering the body:
//! in a JSON body it is one object near the end; in an SSE stream it is the final usage
//! chunk (every other chunk says `"usage":null` or has none).

use std::sync::LazyLock;

use memchr::memmem;
use serde::Deserialize;

use crate::json_members::{count, each_field, nullable};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// The part of the prompt served from the prompt cache (priced lower).
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

impl Usage {
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }

    /// The usage object `object` starts with, and its length, read by skimming its members
    /// where that is sure to agree with serde; `None` where it is not (or the object is not
    /// complete yet). Serde, and finding the object's end beforehand, cost 2.7k instructions
    /// per call, more than the rest of the scanner (profiled).
    fn skim(object: &[u8]) -> Option<(Self, usize)> {
        const FIELDS: &[&[u8]] = &[
            b"prompt_tokens",
            b"completion_tokens",
            b"prompt_tokens_details",
        ];
        let mut usage = Self::default();
        let len = each_field(object, FIELDS, |name, value| {
            match name {
                b"prompt_tokens" => usage.prompt_tokens = count(value)?,
                b"completion_tokens" => usage.completion_tokens = count(value)?,
                // The last of `FIELDS`: `each_field` passes no other names.
                _ => usage.prompt_tokens_details = nullable(value, PromptTokensDetails::skim)?,
            }
            Some(())
        })?;
        Some((usage, len))
    }
}

impl PromptTokensDetails {
    fn skim(object: &[u8]) -> Option<Self> {
        let mut details = Self::default();
        each_field(object, &[b"cached_tokens"], |_, value| {
            details.cached_tokens = count(value)?;
            Some(())
        })?;
        Some(details)
    }
}

const KEY: &[u8] = b"\"usage\"";
/// Built once: `memmem::find` builds its searcher on every call, which cost more than the
/// search itself on short SSE frames (profiled).
static FIND_KEY: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
/// Bytes kept from one frame to the next so a key split across frames is still found.
const CARRY: usize = KEY.len() - 1;
/// Largest usage object we are willing to copy; real ones are a few hundred bytes.
const MAX_CAPTURE: usize = 8 * 1024;

#[derive(Default)]
pub struct UsageScanner {
    /// The last bytes seen (at most `CARRY`), kept without allocating per frame.
    carry: [u8; CARRY],
    carry_len: usize,
    /// Bytes from a `"usage"` key on, while its value is incomplete.
    capture: Vec<u8>,
    capturing: bool,
    pub found: Option<Usage>,
}

impl UsageScanner {
    /// Reads `chunk`; whether it may hold (part of) a usage object: a `"usage"` key with an
    /// object for its value, or with a value not complete yet. Never `false` when it does: the
    /// usage-event filter passes a frame of whole events on `false` without searching it again.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if chunk.is_empty() {
            return false;
        }
        let mut object = self.capturing;
        let carried = self.carry;
        let carried = &carried[..self.carry_len];
        let mut rest = chunk;
        let mut first_search = true;
        loop {
            if self.capturing {
                let prior = self.capture.len();
                let room = MAX_CAPTURE.saturating_sub(prior);
                self.capture
                    .extend_from_slice(&rest[..rest.len().min(room)]);
                match self.finish_capture() {
                    Some(consumed) => {
                        // `consumed` counts from the key; skip what of it was in `rest`.
                        rest = &rest[consumed.saturating_sub(prior).min(rest.len())..];
                        continue;
                    }
                    None => break,
                }
            }
            // Only the start of the chunk can complete a key that began in the carry.
            let carry: &[u8] = if first_search { carried } else { &[] };
            first_search = false;
            let Some(at) = find_key(carry, rest) else {
                break;
            };
            rest = &rest[at..];
            // Usually the whole value follows the key in the same chunk: read it from there
            // rather than copying it aside first.
            match read_value(rest) {
                Value::Incomplete => {
                    object = true;
                    self.capturing = true;
                    self.capture.clear();
                    self.capture.extend_from_slice(KEY);
                }
                Value::Read { usage, len } => {
                    object = true;
                    self.found = usage.or(self.found);
                    rest = &rest[len..];
                }
                Value::Other { len } => rest = &rest[len..],
            }
        }
        // The last few bytes seen, across short chunks too.
        let mut tail = [0u8; 2 * CARRY];
        let recent = &chunk[chunk.len().saturating_sub(CARRY)..];
        tail[..carried.len()].copy_from_slice(carried);
        tail[carried.len()..carried.len() + recent.len()].copy_from_slice(recent);
        let total = carried.len() + recent.len();
        let kept = total.min(CARRY);
        self.carry[..kept].copy_from_slice(&tail[total - kept..total]);
        self.carry_len = kept;
        object
    }

    /// When the captured value is complete: parses it and returns how many captured bytes,
    /// counted from the key, it spans; `None` while more bytes are needed.
    fn finish_capture(&mut self) -> Option<usize> {
        match read_value(&self.capture[KEY.len()..]) {
            Value::Incomplete => {
                if self.capture.len() >= MAX_CAPTURE {
                    self.capturing = false;
                }
                None
            }
            Value::Read { usage, len } => {
                self.found = usage.or(self.found);
                self.capturing = false;
                Some(KEY.len() + len)
            }
            Value::Other { len } => {
                self.capturing = false;
                Some(KEY.len() + len)
            }
        }
    }
}

/// What follows a `"usage"` key.
enum Value {
    /// More bytes are needed to tell.
    Incomplete,
    /// `len` bytes (separator and object) were read; `usage` is set when the object was a
    /// usage object (a key of that name in some other object may hold another).
    Read { usage: Option<Usage>, len: usize },
    /// The value is not an object (`"usage": null` in every frame of a stream that asked for
    /// usage); `len` bytes of separator were read.
    Other { len: usize },
}

fn read_value(after_key: &[u8]) -> Value {
    let Some(start) = after_key
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != b':')
    else {
        return Value::Incomplete;
    };
    if after_key[start] != b'{' {
        return Value::Other { len: start };
    }
    let object = &after_key[start..];
    if let Some((usage, len)) = Usage::skim(object) {
        return Value::Read {
            usage: Some(usage),
            len: start + len,
        };
    }
    // Not plain enough to skim, or not complete yet.
    let Some(end) = object_end(object) else {
        return Value::Incomplete;
    };
    Value::Read {
        usage: serde_json::from_slice(&object[..end]).ok(),
        len: start + end,
    }
}

/// Position right after the key in `chunk`, including a key that began in `carry` (the
/// bytes just before `chunk`).
fn find_key(carry: &[u8], chunk: &[u8]) -> Option<usize> {
    // A key begun in the carry has its rest at the start of the chunk. Compared in place:
    // searching the joined bytes went through memchr's short-haystack path on every frame
    // (profiled: more than the search of the frame itself).
    for start in (0..carry.len()).filter(|&start| carry[start] == KEY[0]) {
        let begun = &carry[start..];
        if KEY.starts_with(begun) && chunk.starts_with(&KEY[begun.len()..]) {
            return Some(KEY.len() - begun.len());
        }
    }
    FIND_KEY.find(chunk).map(|at| at + KEY.len())
}

/// Length of the JSON object at the start of `bytes` (which starts with `{`), if complete.
fn object_end(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0_usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&str]) -> Option<Usage> {
        let mut scanner = UsageScanner::default();
        for chunk in chunks {
            scanner.feed(chunk.as_bytes());
        }
        scanner.found
    }

    const USAGE: Usage = Usage {
        prompt_tokens: 12,
        completion_tokens: 34,
        prompt_tokens_details: None,
    };

    #[test]
    fn reads_cached_prompt_tokens() {
        let body = r#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}}"#;
        let usage = scan(&[body]).unwrap();
        assert_eq!((usage.prompt_tokens, usage.cached_tokens()), (2006, 1920));
        assert_eq!(USAGE.cached_tokens(), 0);
    }

    #[test]
    fn finds_usage_in_a_json_body() {
        let body = r#"{"id":"x","choices":[{"message":{"content":"the \"usage\" word"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(scan(&[body]), Some(USAGE));
        for split in 1..body.len() {
            assert_eq!(
                scan(&[&body[..split], &body[split..]]),
                Some(USAGE),
                "split at {split}"
            );
        }
    }

    #[test]
    fn finds_the_final_usage_chunk_of_a_stream() {
        let stream = [
            "data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[],\"prompt_filter_results\":[]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n",
            "data: [DONE]\n\n",
        ];
        assert_eq!(scan(&stream), Some(USAGE));
        let joined = stream.concat();
        for split in (1..joined.len()).step_by(7) {
            assert_eq!(
                scan(&[&joined[..split], &joined[split..]]),
                Some(USAGE),
                "split at {split}"
            );
        }
    }

    #[test]
    fn no_usage_means_none() {
        assert_eq!(
            scan(&[
                "data: {\"choices\":[],\"usage\":null}\n\n",
                "data: [DONE]\n\n"
            ]),
            None
        );
        assert_eq!(scan(&["{\"error\":{\"message\":\"x\"}}"]), None);
        assert_eq!(
            scan(&["{\"usage\":{\"prompt_tokens\":1", ",\"completion_tokens\""]),
            None,
            "interrupted"
        );
    }

    #[test]
    fn what_the_skim_gives_up_on_is_read_by_serde() {
        let read = |object: &str| match read_value(object.as_bytes()) {
            Value::Read { usage, len } => {
                assert_eq!(len, object.len(), "{object}");
                usage
            }
            Value::Incomplete | Value::Other { .. } => panic!("{object} is a complete object"),
        };
        assert_eq!(
            read(r#"{"prompt\u005ftokens":3,"completion_tokens":4}"#),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                prompt_tokens_details: None
            })
        );
        for refused in [
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens":1.5}"#,
            r#"{"prompt_tokens":null}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":-1}}"#,
        ] {
            assert_eq!(read(refused), None, "{refused}");
        }
        assert_eq!(
            read(r#"{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"total_tokens":9}"#)
                .map(|usage| usage.cached_tokens()),
            Some(8)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(bytes[from..cut].to_vec());
                from = cut;
            }
            pieces
        }

        fn usage_member() -> impl Strategy<Value = (String, serde_json::Value)> {
            use serde_json::{Value, json};

            use crate::json_members::arbitrary::value;

            let name = prop_oneof![
                Just("prompt_tokens"),
                Just("completion_tokens"),
                Just("total_tokens"),
                Just("prompt_tokens_details"),
                Just("completion_tokens_details"),
                Just("cached_tokens"),
            ]
            .prop_map(str::to_string);
            let details = prop_oneof![
                (0u64..10_000)
                    .prop_map(|cached| json!({"cached_tokens": cached, "audio_tokens": 0})),
                Just(json!({"cached_tokens": 1, "cached_tokens": 2})),
                Just(json!({})),
            ];
            (
                name,
                prop_oneof![
                    2 => value(),
                    2 => details,
                    4 => (0u64..1_000_000).prop_map(Value::from),
                    1 => Just(Value::Null),
                ],
            )
        }

        proptest! {
            /// For any usage object (repeated and nested fields, any value types, any
            /// spacing), the skim with its fallback reads exactly what serde reads.
            #[test]
            fn the_usage_skim_reads_what_serde_reads(
                members in proptest::collection::vec(usage_member(), 0..6),
                spaced in any::<bool>(),
            ) {
                let object = crate::json_members::arbitrary::object_text(&members, spaced);
                let by_serde: Option<Usage> = serde_json::from_slice(object.as_bytes()).ok();
                if let Some((usage, len)) = Usage::skim(object.as_bytes()) {
                    prop_assert_eq!(Some(usage), by_serde, "{}", object);
                    prop_assert_eq!(len, object.len());
                }
                let followed = format!(": {object},\"choices\":[]}}");
                match read_value(followed.as_bytes()) {
                    Value::Read { usage, len } => {
                        prop_assert_eq!(usage, by_serde, "{}", object);
                        prop_assert_eq!(len, 2 + object.len());
                    }
                    Value::Incomplete | Value::Other { .. } => {
                        prop_assert!(false, "{} is a complete object", object)
                    }
                }
            }

            /// However a stream is cut into frames, the final usage chunk is found exactly.
            #[test]
            fn finds_usage_across_any_frame_split(
                prompt in 0u64..1_000_000, completion in 0u64..1_000_000, tokens in proptest::collection::vec("[a-z \"\\\\{}]{0,12}", 0..20),
                cuts in proptest::collection::vec(0usize..100_000, 0..12),
            ) {
                let mut stream = String::from("data: {\"id\":\"\",\"choices\":[],\"prompt_filter_results\":[]}\n\n");
                for token in &tokens {
                    let content = serde_json::to_string(token).unwrap();
                    stream.push_str(&format!("data: {{\"choices\":[{{\"delta\":{{\"content\":{content}}}}}],\"usage\":null}}\n\n"));
                }
                stream.push_str(&format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", prompt + completion));
                let mut scanner = UsageScanner::default();
                for piece in split(stream.as_bytes(), &cuts) {
                    scanner.feed(&piece);
                }
                prop_assert_eq!(scanner.found, Some(Usage { prompt_tokens: prompt, completion_tokens: completion, prompt_tokens_details: None }));
            }

            /// Arbitrary bytes never make the scanner panic or report usage that is not there.
            #[test]
            fn arbitrary_bytes_are_harmless(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
                let mut scanner = UsageScanner::default();
                for chunk in &chunks {
                    scanner.feed(chunk);
                }
                let all: Vec<u8> = chunks.concat();
                if memmem::find(&all, b"\"usage\"").is_none() {
                    prop_assert_eq!(scanner.found, None);
                }
            }
        }
    }
}
