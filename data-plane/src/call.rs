//! A client's call as the proxy understands it: which pool, which operation, which body.
//! Built once per request and shared by every attempt, so a retry replays it for free.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::Deserialize;

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

#[derive(Debug)]
pub struct ClientCall {
    pub method: Method,
    pub style: CallStyle,
    /// The deployment or model name the client asked for (= the pool name).
    pub requested: String,
    /// The operation path after the deployment or version, e.g. `chat/completions`.
    pub operation: String,
    pub query: Option<String>,
    /// Client headers minus hop-by-hop headers and the client's own credentials.
    pub headers: HeaderMap,
    pub body: Bytes,
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

impl ClientCall {
    /// The body with `model` set to `model`, for backends that route by it. Only renamed or
    /// cross-style calls pay for this re-serialisation.
    pub fn body_with_model(&self, model: &str) -> Bytes {
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&self.body) {
            Ok(mut object) => {
                object.insert(
                    "model".to_owned(),
                    serde_json::Value::String(model.to_owned()),
                );
                serde_json::to_vec(&object)
                    .map(Bytes::from)
                    .unwrap_or_else(|_| self.body.clone())
            }
            Err(_) => self.body.clone(),
        }
    }
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

    #[test]
    fn rewrites_only_the_model() {
        let call = ClientCall {
            method: Method::POST,
            style: CallStyle::Azure,
            requested: "gpt-4o".into(),
            operation: "chat/completions".into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"messages":[],"temperature":0.5}"#),
        };
        let body: serde_json::Value =
            serde_json::from_slice(&call.body_with_model("gpt-4o-east")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"messages": [], "temperature": 0.5, "model": "gpt-4o-east"})
        );
    }
}
