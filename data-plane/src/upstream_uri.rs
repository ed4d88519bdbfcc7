//! The target of an upstream call (origin form: path and query): the path of the backend's
//! URL, then `/openai/deployments/{deployment}/` (Azure) or `/v1/` (OpenAI), the client's
//! operation and its query.
//!
//! The operation was already checked as part of a canonical client path; the built target is
//! checked again (defence in depth), so that no client input, and no future change to the
//! routing, can produce a call outside the deployment with the backend's credentials.

use bytes::BytesMut;
use http::uri::PathAndQuery;
use sluice_model::BackendKind;

use crate::canonical_path::{self, NonCanonical};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamUriError {
    #[error("not a valid URI: {0}")]
    Invalid(#[from] http::uri::InvalidUri),
    #[error("the backend URL's host and port are not a valid HTTP authority")]
    InvalidOrigin,
    #[error("the path leaves the deployment prefix {expected}")]
    OutsideDeployment { expected: String },
    #[error("the path is not canonical: {0}")]
    NonCanonical(NonCanonical),
}

/// What an upstream call's target is made of.
pub struct UpstreamTarget<'a> {
    /// The path of the backend's URL, without its trailing slash (often empty).
    pub base_path: &'a str,
    pub kind: BackendKind,
    /// Added to Azure calls whose client sent none.
    pub api_version: &'a str,
    pub deployment: &'a str,
    /// E.g. `chat/completions`.
    pub operation: &'a str,
    /// The client's query.
    pub query: Option<&'a str>,
}

impl UpstreamTarget<'_> {
    /// The checked target. When it reads exactly as the client's (an Azure client calling an
    /// Azure backend of the same deployment name, as most do), it is the client's, already
    /// parsed: a clone instead of a second parse. The checks run on it all the same.
    pub fn build(&self, client: &PathAndQuery) -> Result<PathAndQuery, UpstreamUriError> {
        let mut same = SameAs::new(client.as_str());
        self.write(&mut same);
        let target = if same.is_same() {
            client.clone()
        } else {
            let mut built = BytesMut::with_capacity(self.len_hint());
            self.write(&mut built);
            PathAndQuery::from_maybe_shared(built.freeze())?
        };
        self.check(&target)?;
        Ok(target)
    }

    /// Everything up to the operation: what the target's path must start with.
    fn prefix(&self) -> [&str; 4] {
        match self.kind {
            BackendKind::AzureOpenai => {
                [self.base_path, "/openai/deployments/", self.deployment, "/"]
            }
            BackendKind::Openai => [self.base_path, "/v1/", "", ""],
        }
    }

    fn len_hint(&self) -> usize {
        let prefix: usize = self.prefix().iter().map(|piece| piece.len()).sum();
        prefix
            + self.operation.len()
            + self.query.map_or(0, str::len)
            + self.api_version.len()
            + "?&api-version=".len()
    }

    fn write(&self, out: &mut impl WriteTarget) {
        for piece in self.prefix() {
            out.push(piece);
        }
        out.push(self.operation);
        push_query(
            out,
            self.query,
            (self.kind == BackendKind::AzureOpenai).then_some(self.api_version),
        );
    }

    /// The target's path, as parsed, stays under the prefix with something after it, and is
    /// canonical.
    fn check(&self, target: &PathAndQuery) -> Result<(), UpstreamUriError> {
        let path = target.path();
        let operation = self
            .prefix()
            .iter()
            .try_fold(path, |rest, piece| rest.strip_prefix(piece));
        if operation.is_none_or(str::is_empty) {
            return Err(UpstreamUriError::OutsideDeployment {
                expected: self.prefix().concat(),
            });
        }
        canonical_path::check(path).map_err(UpstreamUriError::NonCanonical)
    }
}

/// Where a target is written: into a buffer, or compared with one already there.
trait WriteTarget {
    fn push(&mut self, text: &str);
}

impl WriteTarget for BytesMut {
    fn push(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Compares what is written with `rest`, a piece at a time, without copying it.
struct SameAs<'a> {
    rest: &'a str,
    same: bool,
}

impl<'a> SameAs<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            rest: text,
            same: true,
        }
    }

    fn is_same(&self) -> bool {
        self.same && self.rest.is_empty()
    }
}

impl WriteTarget for SameAs<'_> {
    fn push(&mut self, text: &str) {
        if !self.same {
            return;
        }
        match self.rest.strip_prefix(text) {
            Some(rest) => self.rest = rest,
            None => self.same = false,
        }
    }
}

/// Appends the client's query, replacing or adding `api-version` for Azure backends and
/// dropping it for OpenAI ones.
fn push_query(out: &mut impl WriteTarget, query: Option<&str>, api_version: Option<&str>) {
    let mut separator = "?";
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
        out.push(separator);
        out.push(pair);
        separator = "&";
    }
    if let (Some(version), false) = (api_version, has_version) {
        out.push(separator);
        out.push("api-version=");
        out.push(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::routing::route;

    fn query(client: Option<&str>, version: Option<&str>) -> String {
        let mut uri = BytesMut::new();
        push_query(&mut uri, client, version);
        String::from_utf8(uri.to_vec()).unwrap()
    }

    fn target<'a>(
        base_path: &'a str,
        kind: BackendKind,
        deployment: &'a str,
        operation: &'a str,
        query: Option<&'a str>,
    ) -> UpstreamTarget<'a> {
        UpstreamTarget {
            base_path,
            kind,
            api_version: "2024-10-21",
            deployment,
            operation,
            query,
        }
    }

    /// Built for a client whose own target reads differently.
    fn build(target: &UpstreamTarget<'_>) -> Result<PathAndQuery, UpstreamUriError> {
        target.build(&PathAndQuery::from_static("/"))
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
        let azure = build(&target(
            "/gateway",
            BackendKind::AzureOpenai,
            "gpt-4o-east",
            "chat/completions",
            Some("x=1"),
        ))
        .unwrap();
        assert_eq!(
            azure,
            "/gateway/openai/deployments/gpt-4o-east/chat/completions?x=1&api-version=2024-10-21"
        );
        let openai = build(&target(
            "",
            BackendKind::Openai,
            "gpt-4o",
            "embeddings",
            None,
        ))
        .unwrap();
        assert_eq!(openai, "/v1/embeddings");
    }

    #[test]
    fn a_client_target_that_reads_the_same_is_reused() {
        let client =
            PathAndQuery::from_static("/openai/deployments/gpt-4o/chat/completions?api-version=1");
        let same = target(
            "",
            BackendKind::AzureOpenai,
            "gpt-4o",
            "chat/completions",
            Some("api-version=1"),
        );
        let built = same.build(&client).unwrap();
        assert_eq!(built, client);
        assert_eq!(built.as_str().as_ptr(), client.as_str().as_ptr());
        // Anything that reads differently is built: another deployment, a base path, an
        // added api-version, a longer or shorter client target.
        for (other, expected) in [
            (
                target(
                    "",
                    BackendKind::AzureOpenai,
                    "gpt-4o-east",
                    "chat/completions",
                    Some("api-version=1"),
                ),
                "/openai/deployments/gpt-4o-east/chat/completions?api-version=1",
            ),
            (
                target(
                    "/b",
                    BackendKind::AzureOpenai,
                    "gpt-4o",
                    "chat/completions",
                    Some("api-version=1"),
                ),
                "/b/openai/deployments/gpt-4o/chat/completions?api-version=1",
            ),
            (
                target(
                    "",
                    BackendKind::AzureOpenai,
                    "gpt-4o",
                    "chat/completions",
                    None,
                ),
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ),
            (
                target(
                    "",
                    BackendKind::AzureOpenai,
                    "gpt-4o",
                    "chat",
                    Some("api-version=1"),
                ),
                "/openai/deployments/gpt-4o/chat?api-version=1",
            ),
            (
                target(
                    "",
                    BackendKind::AzureOpenai,
                    "gpt-4o",
                    "chat/completions",
                    Some("api-version=1&x=2"),
                ),
                "/openai/deployments/gpt-4o/chat/completions?api-version=1&x=2",
            ),
        ] {
            let built = other.build(&client).unwrap();
            assert_eq!(built, expected);
            assert_ne!(built.as_str().as_ptr(), client.as_str().as_ptr());
        }
    }

    #[test]
    fn a_reused_client_target_is_checked_all_the_same() {
        let client = PathAndQuery::from_static("/openai/deployments/../chat?api-version=1");
        let built = target(
            "",
            BackendKind::AzureOpenai,
            "..",
            "chat",
            Some("api-version=1"),
        )
        .build(&client);
        assert!(
            matches!(built, Err(UpstreamUriError::NonCanonical(_))),
            "{built:?}"
        );
        // `?` in a deployment ends the path early: the prefix check sees it.
        let client = PathAndQuery::from_static("/openai/deployments/a?b/chat?api-version=1");
        let built = target(
            "",
            BackendKind::AzureOpenai,
            "a?b",
            "chat",
            Some("api-version=1"),
        )
        .build(&client);
        assert!(
            matches!(built, Err(UpstreamUriError::OutsideDeployment { .. })),
            "{built:?}"
        );
    }

    #[test]
    fn refuses_what_would_leave_the_deployment() {
        for operation in ["../other/chat", "%2e%2e/x", "a/../../b", "", "a//b", "a b"] {
            let built = build(&target(
                "",
                BackendKind::AzureOpenai,
                "gpt-4o",
                operation,
                None,
            ));
            assert!(built.is_err(), "{operation}: {built:?}");
        }
        // A deployment the model would refuse is caught here too.
        let built = build(&target(
            "",
            BackendKind::AzureOpenai,
            "..",
            "chat/completions",
            None,
        ));
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
            let uri = build(&target(
                "/base",
                backend_kind,
                "gpt-4o-east",
                route.operation,
                None,
            ));
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
