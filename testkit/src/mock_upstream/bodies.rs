//! JSON response bodies shaped like Azure OpenAI's (and, without the Azure-only content
//! filter fields, OpenAI's).

use axum::body::Bytes;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::routing::Flavor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

#[derive(serde::Serialize)]
pub(crate) struct Severity {
    filtered: bool,
    severity: &'static str,
}

/// Azure's verdict for one prompt or completion: nothing filtered.
#[derive(serde::Serialize)]
pub(crate) struct ContentFilterResults {
    hate: Severity,
    self_harm: Severity,
    sexual: Severity,
    violence: Severity,
}

pub(crate) const SAFE: ContentFilterResults = {
    const fn safe() -> Severity {
        Severity {
            filtered: false,
            severity: "safe",
        }
    }
    ContentFilterResults {
        hate: safe(),
        self_harm: safe(),
        sexual: safe(),
        violence: safe(),
    }
};

#[derive(serde::Serialize)]
pub(crate) struct PromptFilterResult {
    prompt_index: u32,
    content_filter_results: &'static ContentFilterResults,
}

pub(crate) const PROMPT_FILTER_RESULTS: [PromptFilterResult; 1] = [PromptFilterResult {
    prompt_index: 0,
    content_filter_results: &SAFE,
}];

/// What every completion reply (streamed or not) says about itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion<'a> {
    pub flavor: Flavor,
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub content: &'a str,
    pub finish_reason: &'static str,
    pub usage: Usage,
}

impl Completion<'_> {
    pub fn azure_filters(&self) -> Option<&'static ContentFilterResults> {
        (self.flavor == Flavor::Azure).then_some(&SAFE)
    }

    pub fn azure_prompt_filters(&self) -> Option<&'static [PromptFilterResult]> {
        (self.flavor == Flavor::Azure).then_some(&PROMPT_FILTER_RESULTS)
    }
}

pub(crate) const SYSTEM_FINGERPRINT: &str = "fp_sluice_mock";

#[derive(serde::Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_filter_results: Option<&'static [PromptFilterResult]>,
}

#[derive(serde::Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<&'static ContentFilterResults>,
}

#[derive(serde::Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(serde::Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [TextChoice<'a>; 1],
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_filter_results: Option<&'static [PromptFilterResult]>,
}

#[derive(serde::Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    finish_reason: &'static str,
    logprobs: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_filter_results: Option<&'static ContentFilterResults>,
}

pub(crate) fn chat_completion(reply: &Completion<'_>) -> Bytes {
    to_bytes(&ChatCompletion {
        id: reply.id,
        object: "chat.completion",
        created: reply.created,
        model: reply.model,
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices: [ChatChoice {
            index: 0,
            message: Message {
                role: "assistant",
                content: reply.content,
                refusal: None,
            },
            finish_reason: reply.finish_reason,
            logprobs: None,
            content_filter_results: reply.azure_filters(),
        }],
        usage: reply.usage,
        prompt_filter_results: reply.azure_prompt_filters(),
    })
}

pub(crate) fn text_completion(reply: &Completion<'_>) -> Bytes {
    to_bytes(&TextCompletion {
        id: reply.id,
        object: "text_completion",
        created: reply.created,
        model: reply.model,
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices: [TextChoice {
            text: reply.content,
            index: 0,
            finish_reason: reply.finish_reason,
            logprobs: None,
            content_filter_results: reply.azure_filters(),
        }],
        usage: reply.usage,
        prompt_filter_results: reply.azure_prompt_filters(),
    })
}

#[derive(serde::Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Embeddings,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(serde::Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// `count` embeddings, generated while serializing so no vectors are allocated.
struct Embeddings {
    count: usize,
    dims: usize,
}

#[derive(serde::Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

struct Vector {
    input: usize,
    dims: usize,
}

impl Serialize for Embeddings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.count))?;
        for index in 0..self.count {
            seq.serialize_element(&Embedding {
                object: "embedding",
                index,
                embedding: Vector {
                    input: index,
                    dims: self.dims,
                },
            })?;
        }
        seq.end()
    }
}

impl Serialize for Vector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.dims))?;
        for dim in 0..self.dims {
            seq.serialize_element(&embedding_value(self.input, dim))?;
        }
        seq.end()
    }
}

/// Deterministic, varied and within [-1, 1), like real embedding components.
fn embedding_value(input: usize, dim: usize) -> f32 {
    let mixed = input
        .wrapping_mul(7919)
        .wrapping_add(dim.wrapping_mul(104_729))
        % 2000;
    mixed as f32 / 1000.0 - 1.0
}

pub(crate) fn embeddings(model: &str, inputs: usize, dims: usize, prompt_tokens: u32) -> Bytes {
    to_bytes(&EmbeddingList {
        object: "list",
        data: Embeddings {
            count: inputs,
            dims,
        },
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

pub(crate) fn to_bytes(value: &impl Serialize) -> Bytes {
    // These structs hold only strings, numbers and options, which serde_json always
    // serializes; the empty fallback is unreachable.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).expect("JSON body")
    }

    fn reply(flavor: Flavor) -> Completion<'static> {
        Completion {
            flavor,
            id: "chatcmpl-1",
            created: 7,
            model: "gpt-4o",
            content: "Sluice mock ",
            finish_reason: "length",
            usage: Usage::new(3, 2),
        }
    }

    #[test]
    fn chat_completion_has_openai_fields_and_azure_filters() {
        let body = parse(&chat_completion(&reply(Flavor::Azure)));
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(body["choices"][0]["message"]["content"], "Sluice mock ");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["choices"][0]["logprobs"], Value::Null);
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
        );
        assert_eq!(body["prompt_filter_results"][0]["prompt_index"], 0);
        assert_eq!(
            body["choices"][0]["content_filter_results"]["hate"],
            json!({"filtered": false, "severity": "safe"})
        );
    }

    #[test]
    fn openai_flavor_has_no_azure_fields() {
        let body = parse(&text_completion(&reply(Flavor::OpenAi)));
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "Sluice mock ");
        assert!(body.get("prompt_filter_results").is_none());
        assert!(body["choices"][0].get("content_filter_results").is_none());
    }

    #[test]
    fn embeddings_have_one_vector_per_input() {
        let body = parse(&embeddings("emb", 2, 3, 4));
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][1]["object"], "embedding");
        let vector = body["data"][1]["embedding"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(vector.len(), 3);
        assert!(
            vector
                .iter()
                .all(|v| v.as_f64().is_some_and(|v| (-1.0..1.0).contains(&v)))
        );
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 4, "total_tokens": 4})
        );
    }
}
