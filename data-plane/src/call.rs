//! A client's call as the proxy understands it: which pool, which operation, which body.
//! Built once per request and lent to every attempt, so a retry replays it for free.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use serde::Deserialize;

use crate::json_members::{each_member, only_space_after};

/// Which URL style the client used; decides where the pool name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStyle {
    /// `/openai/deployments/{deployment}/{operation}`: the pool is the deployment.
    Azure,
    /// `/v1/{operation}` or `/openai/v1/{operation}`: the pool is the body's `model`.
    OpenAi,
}

impl CallStyle {
    /// The `http.route` of spans.
    pub fn route_template(self) -> &'static str {
        match self {
            Self::Azure => "/openai/deployments/{deployment}/{operation}",
            Self::OpenAi => "/v1/{operation}",
        }
    }
}

pub struct ClientCall<'c> {
    pub method: Method,
    pub style: CallStyle,
    /// The deployment or model name the client asked for: the name of the pool it routed to,
    /// borrowed from the call's config rather than copied.
    pub requested: &'c str,
    /// The client's path and query, as hyper parsed them.
    pub target: PathAndQuery,
    /// Where the operation starts in the target's path: the operation is the rest of it,
    /// after the deployment or version (e.g. `chat/completions`).
    pub operation_start: usize,
    /// The client's headers as they came (with a `traceparent` added for an unsampled new
    /// trace); what of them reaches a backend is decided per attempt
    /// ([`crate::headers::for_upstream`]). They hold the client's credentials: never log them.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Ask backends for usage in the stream (`stream_options.include_usage`) although the
    /// client did not: its limits count tokens, and only the backend's usage is exact.
    pub ask_for_usage: bool,
    /// The request is traced: its attempts get spans too.
    pub traced: bool,
}

impl Drop for ClientCall<'_> {
    fn drop(&mut self) {
        crate::headers::give_back(std::mem::take(&mut self.headers));
    }
}

/// The body field the proxy needs for OpenAI-style routing; the rest is skipped unparsed.
#[derive(Deserialize)]
pub struct BodyPeek<'a> {
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
}

impl<'a> BodyPeek<'a> {
    /// Reads `model` from a JSON body.
    pub fn of(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl ClientCall<'_> {
    /// The operation path after the deployment or version, e.g. `chat/completions`.
    pub fn operation(&self) -> &str {
        self.target
            .path()
            .get(self.operation_start..)
            .unwrap_or_default()
    }

    pub fn query(&self) -> Option<&str> {
        self.target.query()
    }

    /// The body for one backend: `model` set for backends that route by it, and
    /// `stream_options.include_usage` when the proxy asks for usage. Otherwise the client's
    /// bytes as they came: only renamed, cross-style or usage-asking calls pay for this
    /// re-serialisation.
    pub fn upstream_body(&self, model: Option<&str>, include_usage: bool) -> Bytes {
        if model.is_none() {
            if !include_usage {
                return self.body.clone();
            }
            if let Some(body) = with_usage_asked(&self.body) {
                return body;
            }
        }
        let Ok(mut object) =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&self.body)
        else {
            return self.body.clone();
        };
        if let Some(model) = model {
            object.insert("model".to_owned(), model.into());
        }
        if include_usage {
            let options = object
                .entry("stream_options")
                .or_insert(serde_json::Value::Null);
            // `null` is what the client may send for none.
            if options.is_null() {
                *options = serde_json::Value::Object(serde_json::Map::new());
            }
            if let Some(options) = options.as_object_mut() {
                options.insert("include_usage".to_owned(), true.into());
            }
        }
        serde_json::to_vec(&object)
            .map(Bytes::from)
            .unwrap_or_else(|_| self.body.clone())
    }
}

/// The member that asks a backend for a stream's usage.
const ASK_FOR_USAGE: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// `body` with [`ASK_FOR_USAGE`] as its first member and the rest as it came: a copy, where
/// re-encoding through serde would parse every string of the prompt. `None` unless the body
/// is one object without `stream_options` as far as the skim can be sure (a key with an
/// escape, or bytes after the object, are left to serde).
fn with_usage_asked(body: &Bytes) -> Option<Bytes> {
    let mut members = 0usize;
    let mut has_options = false;
    let len = each_member(body, |key, _| {
        members += 1;
        has_options |= key == b"stream_options";
        Some(())
    })?;
    only_space_after(body, len)?;
    if has_options {
        return None;
    }
    // Only whitespace comes before the object's brace.
    let open = memchr::memchr(b'{', body)?;
    let mut asked = BytesMut::with_capacity(body.len() + ASK_FOR_USAGE.len() + 1);
    asked.extend_from_slice(&body[..=open]);
    asked.extend_from_slice(ASK_FOR_USAGE);
    if members > 0 {
        asked.extend_from_slice(b",");
    }
    asked.extend_from_slice(&body[open + 1..]);
    Some(asked.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_the_model_without_parsing_the_rest() {
        let peek = BodyPeek::of(br#"{"messages":[{"role":"user","content":"hi \"x\""}],"model":"gpt-4o","stream":true}"#);
        assert_eq!(peek.unwrap().model.as_deref(), Some("gpt-4o"));
        assert!(BodyPeek::of(b"{}").unwrap().model.is_none());
        assert!(BodyPeek::of(b"--boundary\r\nnot json").is_err());
    }

    /// An Azure-style chat call to `gpt-4o` with `body`.
    fn chat_call(body: &'static str, ask_for_usage: bool) -> ClientCall<'static> {
        ClientCall {
            method: Method::POST,
            style: CallStyle::Azure,
            requested: "gpt-4o",
            target: PathAndQuery::from_static("/openai/deployments/gpt-4o/chat/completions"),
            operation_start: "/openai/deployments/gpt-4o/".len(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            ask_for_usage,
            traced: false,
        }
    }

    #[test]
    fn rewrites_only_what_a_backend_needs() {
        let call = chat_call(r#"{"messages":[],"temperature":0.5}"#, false);
        let rewritten = |model, usage| -> serde_json::Value {
            serde_json::from_slice(&call.upstream_body(model, usage)).unwrap()
        };
        assert_eq!(
            rewritten(Some("gpt-4o-east"), false),
            serde_json::json!({"messages": [], "temperature": 0.5, "model": "gpt-4o-east"})
        );
        assert_eq!(
            rewritten(None, true),
            serde_json::json!({"messages": [], "temperature": 0.5, "stream_options": {"include_usage": true}})
        );
        assert_eq!(
            call.upstream_body(None, false),
            call.body,
            "untouched, not re-encoded"
        );
    }

    #[test]
    fn usage_is_asked_for_by_adding_one_member_to_the_body_as_it_came() {
        for (body, asked) in [
            (
                r#"{"messages":[{"content":"a \"b\" \u00e9"}],"stream":true}"#,
                r#"{"stream_options":{"include_usage":true},"messages":[{"content":"a \"b\" \u00e9"}],"stream":true}"#,
            ),
            (
                " \n{ \"stream\": true }\n",
                " \n{\"stream_options\":{\"include_usage\":true}, \"stream\": true }\n",
            ),
            ("{}", r#"{"stream_options":{"include_usage":true}}"#),
            (" { } ", r#" {"stream_options":{"include_usage":true} } "#),
        ] {
            let added = with_usage_asked(&Bytes::from(body)).unwrap();
            assert_eq!(std::str::from_utf8(&added).unwrap(), asked);
            let read: serde_json::Value = serde_json::from_slice(&added).unwrap();
            assert_eq!(read["stream_options"]["include_usage"], true, "{asked}");
        }
        // Where the skim cannot be sure, or the member is there, serde rewrites the body.
        for body in [
            r#"{"stream":true,"stream_options":null}"#,
            r#"{"stream":true,"stream_options":{"x":1}}"#,
            r#"{"stream":true,"stream\u005foptions":null}"#,
            r#"{"stream":true} {}"#,
            r#"[{"stream":true}]"#,
        ] {
            assert_eq!(with_usage_asked(&Bytes::from(body)), None, "{body}");
        }
        let options = |body| -> serde_json::Value {
            serde_json::from_slice::<serde_json::Value>(
                &chat_call(body, true).upstream_body(None, true),
            )
            .unwrap()["stream_options"]
                .clone()
        };
        assert_eq!(
            options(r#"{"stream":true,"stream_options":{"x":1}}"#),
            serde_json::json!({"x": 1, "include_usage": true})
        );
        assert_eq!(
            options(r#"{"stream":true,"stream\u005foptions":null}"#),
            serde_json::json!({"include_usage": true})
        );
    }
}
