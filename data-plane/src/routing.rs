//! Where a client's URL points: the pool comes from the Azure deployment segment, or from
//! the body's `model` for OpenAI-style and Azure v1 calls. Any operation is accepted, on a
//! canonical path only.

use crate::call::CallStyle;
use crate::canonical_path::{self, NonCanonical};

#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub style: CallStyle,
    /// The Azure deployment from the path; OpenAI-style routes read it from the body.
    pub deployment: Option<&'a str>,
    pub operation: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// Refused whatever it names: see [`canonical_path`].
    NonCanonical(NonCanonical),
    /// Canonical, but not a path the proxy serves.
    Unknown,
}

/// Routes the raw path of a request target (not a decoded copy).
pub fn route(path: &str) -> Result<Route<'_>, NoRoute> {
    canonical_path::check(path).map_err(NoRoute::NonCanonical)?;
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let (deployment, operation) = rest.split_once('/').ok_or(NoRoute::Unknown)?;
        return Ok(Route {
            style: CallStyle::Azure,
            deployment: Some(deployment),
            operation,
        });
    }
    let operation = path
        .strip_prefix("/openai/v1/")
        .or_else(|| path.strip_prefix("/v1/"))
        .ok_or(NoRoute::Unknown)?;
    Ok(Route {
        style: CallStyle::OpenAi,
        deployment: None,
        operation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_both_styles_and_unknown_operations() {
        assert_eq!(
            route("/openai/deployments/gpt-4o/chat/completions"),
            Ok(Route {
                style: CallStyle::Azure,
                deployment: Some("gpt-4o"),
                operation: "chat/completions"
            })
        );
        assert_eq!(
            route("/openai/deployments/gpt-4o/some/new/thing"),
            Ok(Route {
                style: CallStyle::Azure,
                deployment: Some("gpt-4o"),
                operation: "some/new/thing"
            })
        );
        for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
            assert_eq!(
                route(path),
                Ok(Route {
                    style: CallStyle::OpenAi,
                    deployment: None,
                    operation: "chat/completions"
                })
            );
        }
        assert_eq!(route("/v1/responses").unwrap().operation, "responses");
    }

    #[test]
    fn refuses_paths_without_a_target() {
        for path in ["/", "/healthz", "/openai/deployments/x", "/v2/chat"] {
            assert_eq!(route(path), Err(NoRoute::Unknown), "{path}");
        }
    }

    #[test]
    fn refuses_non_canonical_paths_before_routing() {
        for path in [
            "/openai/deployments/",
            "/openai/deployments//chat",
            "/v1/",
            "/openai/deployments/gpt-4o/../other/chat/completions",
            "/v1/%2e%2e/openai/deployments/other/chat/completions",
        ] {
            assert!(
                matches!(route(path), Err(NoRoute::NonCanonical(_))),
                "{path}"
            );
        }
    }
}
