//! The model-listing endpoints SDKs call (`client.models.list()` / `.retrieve()`): pools are
//! what Sluice offers as models, filtered by what the client's key may use.

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::{Either, Full};
use sluice_model::ClientKey;

use crate::body::ProxyBody;
use crate::client_error::ClientError;
use crate::config::RuntimeConfig;

enum Models<'a> {
    List,
    One(&'a str),
}

/// OpenAI's `/v1/models[/{id}]` (also under `/openai/v1`) and Azure's `/openai/models`.
fn parse(path: &str) -> Option<Models<'_>> {
    let rest = path
        .strip_prefix("/openai/v1/models")
        .or_else(|| path.strip_prefix("/v1/models"))
        .or_else(|| path.strip_prefix("/openai/models"))?;
    match rest.strip_prefix('/') {
        None if rest.is_empty() => Some(Models::List),
        Some(id) if !id.is_empty() && !id.contains('/') => Some(Models::One(id)),
        _ => None,
    }
}

/// The answer to a `GET` on a models endpoint, or `None` when `path` is not one.
pub fn answer(
    config: &RuntimeConfig,
    path: &str,
    key: Option<&ClientKey>,
) -> Option<Response<ProxyBody>> {
    let allowed =
        |pool: &str| config.pools.contains_key(pool) && key.is_none_or(|k| k.allows(pool));
    Some(match parse(path)? {
        Models::List => {
            let mut ids: Vec<&str> = config
                .pools
                .keys()
                .map(String::as_str)
                .filter(|p| allowed(p))
                .collect();
            ids.sort_unstable();
            let data: Vec<_> = ids.into_iter().map(model).collect();
            json(serde_json::json!({"object": "list", "data": data}))
        }
        Models::One(id) if allowed(id) => json(model(id)),
        Models::One(id) => ClientError::unknown_model(id).into_response(),
    })
}

fn model(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "sluice"})
}

fn json(value: serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(value.to_string()))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_listing_paths() {
        assert!(matches!(parse("/v1/models"), Some(Models::List)));
        assert!(matches!(parse("/openai/models"), Some(Models::List)));
        assert!(matches!(
            parse("/openai/v1/models/gpt-4o"),
            Some(Models::One("gpt-4o"))
        ));
        for other in [
            "/v1/modelsx",
            "/v1/models/",
            "/v1/models/a/b",
            "/v1/chat/completions",
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
    }
}
