//! The URI of an upstream call: the backend's base URL, then `/openai/deployments/{deployment}/`
//! (Azure) or `/v1/` (OpenAI), the client's operation and its query.
//!
//! The operation was already checked as part of a canonical client path; the built URI is
//! checked again (defence in depth), so that no client input, and no future change to the
//! routing, can produce a call outside the deployment with the backend's credentials.

use http::Uri;
use sluice_model::BackendKind;

use crate::canonical_path::{self, NonCanonical};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamUriError {
    #[error("not a valid URI: {0}")]
    Invalid(#[from] http::uri::InvalidUri),
    #[error("the path leaves the deployment prefix {expected}")]
    OutsideDeployment { expected: String },
    #[error("the path is not canonical: {0}")]
    NonCanonical(NonCanonical),
}

/// Builds and checks the URI for `operation` (e.g. `chat/completions`) at a backend.
pub fn upstream_uri(
    base: &str,
    kind: BackendKind,
    api_version: &str,
    deployment: &str,
    operation: &str,
    query: Option<&str>,
) -> Result<Uri, UpstreamUriError> {
    let mut uri = String::with_capacity(base.len() + deployment.len() + operation.len() + 64);
    uri.push_str(base);
    match kind {
        BackendKind::AzureOpenai => {
            uri.push_str("/openai/deployments/");
            uri.push_str(deployment);
            uri.push('/');
        }
        BackendKind::Openai => uri.push_str("/v1/"),
    }
    // Everything after the authority, up to here, is what the path must start with.
    let prefix = base_path_start(base)..uri.len();
    uri.push_str(operation);
    push_query(
        &mut uri,
        query,
        (kind == BackendKind::AzureOpenai).then_some(api_version),
    );
    let expected = &uri[prefix];
    let parsed = Uri::try_from(uri.as_str())?;
    let path = parsed.path();
    if !path.starts_with(expected) || path.len() == expected.len() {
        return Err(UpstreamUriError::OutsideDeployment {
            expected: expected.to_owned(),
        });
    }
    canonical_path::check(path).map_err(UpstreamUriError::NonCanonical)?;
    Ok(parsed)
}

/// Where the path of a base URL (`https://host:port[/path]`) starts.
fn base_path_start(base: &str) -> usize {
    // Byte windows, not `str::find`: that builds a substring searcher on every call.
    let authority = base
        .as_bytes()
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |i| i + 3);
    base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i)
}

/// Appends the client's query, replacing or adding `api-version` for Azure backends and
/// dropping it for OpenAI ones.
fn push_query(uri: &mut String, query: Option<&str>, api_version: Option<&str>) {
    let mut separator = '?';
    let mut has_version = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let is_version = pair.starts_with("api-version=");
        if is_version && api_version.is_none() {
            continue;
        }
        has_version |= is_version;
        uri.push(separator);
        uri.push_str(pair);
        separator = '&';
    }
    if let (Some(version), false) = (api_version, has_version) {
        uri.push(separator);
        uri.push_str("api-version=");
        uri.push_str(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::routing::route;

    fn query(client: Option<&str>, version: Option<&str>) -> String {
        let mut uri = String::new();
        push_query(&mut uri, client, version);
        uri
    }

    #[test]
    fn azure_calls_always_carry_an_api_version() {
        assert_eq!(query(None, Some("2024-10-21")), "?api-version=2024-10-21");
        assert_eq!(
            query(Some("api-version=2025-01-01"), Some("2024-10-21")),
            "?api-version=2025-01-01"
        );
        assert_eq!(
            query(Some("a=1"), Some("2024-10-21")),
            "?a=1&api-version=2024-10-21"
        );
    }

    #[test]
    fn openai_calls_drop_the_api_version() {
        assert_eq!(query(Some("api-version=2025-01-01&a=1"), None), "?a=1");
        assert_eq!(query(None, None), "");
    }

    #[test]
    fn builds_both_kinds_under_the_base_path() {
        let azure = upstream_uri(
            "https://aoai.example:8443/gateway",
            BackendKind::AzureOpenai,
            "2024-10-21",
            "gpt-4o-east",
            "chat/completions",
            Some("x=1"),
        )
        .unwrap();
        assert_eq!(
            azure.to_string(),
            "https://aoai.example:8443/gateway/openai/deployments/gpt-4o-east/chat/completions?x=1&api-version=2024-10-21"
        );
        let openai = upstream_uri(
            "http://127.0.0.1:9000",
            BackendKind::Openai,
            "2024-10-21",
            "gpt-4o",
            "embeddings",
            None,
        )
        .unwrap();
        assert_eq!(openai.to_string(), "http://127.0.0.1:9000/v1/embeddings");
    }

    #[test]
    fn refuses_what_would_leave_the_deployment() {
        for operation in ["../other/chat", "%2e%2e/x", "a/../../b", "", "a//b", "a b"] {
            let built = upstream_uri(
                "https://aoai.example",
                BackendKind::AzureOpenai,
                "2024-10-21",
                "gpt-4o",
                operation,
                None,
            );
            assert!(built.is_err(), "{operation}: {built:?}");
        }
        // A deployment the model would refuse is caught here too.
        let built = upstream_uri(
            "https://aoai.example",
            BackendKind::AzureOpenai,
            "2024-10-21",
            "..",
            "chat/completions",
            None,
        );
        assert!(
            matches!(built, Err(UpstreamUriError::NonCanonical(_))),
            "{built:?}"
        );
    }

    /// What a path means to a server that decodes it once and resolves dot-segments, treating
    /// backslashes as slashes: the reading most likely to disagree with the proxy's.
    fn as_a_normalising_server_reads_it(path: &str) -> String {
        let mut decoded = Vec::new();
        let bytes = path.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1..i + 3)) {
                (b'%', Some(hex))
                    if std::str::from_utf8(hex)
                        .is_ok_and(|h| u8::from_str_radix(h, 16).is_ok()) =>
                {
                    decoded
                        .push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                    i += 3;
                }
                (b'\\', _) => {
                    decoded.push(b'/');
                    i += 1;
                }
                (byte, _) => {
                    decoded.push(byte);
                    i += 1;
                }
            }
        }
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        let mut out: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            // `..;x` is `..` to Tomcat; `.. ` and `...` are `..` to servers that trim.
            let name = segment
                .split(';')
                .next()
                .unwrap_or_default()
                .trim_end_matches(' ');
            if name == "." {
                continue;
            }
            if !name.is_empty() && name.bytes().all(|b| b == b'.') {
                out.pop();
                continue;
            }
            out.push(segment);
        }
        out.join("/")
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("%2e%2e".to_owned()),
            Just("%2E.".to_owned()),
            Just(".%2e".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("\\".to_owned()),
            Just("..;".to_owned()),
            Just("%252e".to_owned()),
            Just("%00".to_owned()),
            Just("".to_owned()),
            Just("...".to_owned()),
            Just("..%20".to_owned()),
            "[a-z0-9._%-]{1,8}",
            "[a-zA-Z0-9]{1,6}",
        ]
    }

    proptest! {
        /// Whatever path the proxy accepts, the URI it builds stays inside the deployment,
        /// both as the proxy reads it and as a normalising server would.
        #[test]
        fn no_accepted_path_reaches_outside_the_deployment(
            segments in proptest::collection::vec(segment(), 1..8),
            openai_style in any::<bool>(),
            backend_kind in prop_oneof![Just(BackendKind::AzureOpenai), Just(BackendKind::Openai)],
        ) {
            let head = if openai_style { "/v1/" } else { "/openai/deployments/gpt-4o/" };
            let path = format!("{head}{}", segments.join("/"));
            let Ok(route) = route(&path) else { return Ok(()) };
            let uri = upstream_uri(
                "https://aoai.example/base",
                backend_kind,
                "2024-10-21",
                "gpt-4o-east",
                route.operation,
                None,
            );
            let uri = uri.map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
            let prefix = match backend_kind {
                BackendKind::AzureOpenai => "/base/openai/deployments/gpt-4o-east/",
                BackendKind::Openai => "/base/v1/",
            };
            prop_assert!(uri.path().starts_with(prefix), "{path} -> {uri}");
            let normalised = as_a_normalising_server_reads_it(uri.path());
            prop_assert!(
                normalised.starts_with(prefix) && normalised.len() > prefix.len(),
                "{path} -> {uri} -> {normalised}"
            );
        }
    }
}
