//! Where a client's URL points: the pool comes from the Azure deployment segment, or from
//! the body's `model` for OpenAI-style and Azure v1 calls. Any operation is accepted.

use crate::call::CallStyle;

#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub style: CallStyle,
    /// The Azure deployment from the path; OpenAI-style routes read it from the body.
    pub deployment: Option<&'a str>,
    pub operation: &'a str,
}

pub fn route(path: &str) -> Option<Route<'_>> {
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let (deployment, operation) = rest.split_once('/')?;
        return (!deployment.is_empty() && !operation.is_empty()).then_some(Route {
            style: CallStyle::Azure,
            deployment: Some(deployment),
            operation,
        });
    }
    let operation = path
        .strip_prefix("/openai/v1/")
        .or_else(|| path.strip_prefix("/v1/"))?;
    (!operation.is_empty()).then_some(Route {
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
            Some(Route {
                style: CallStyle::Azure,
                deployment: Some("gpt-4o"),
                operation: "chat/completions"
            })
        );
        assert_eq!(
            route("/openai/deployments/gpt-4o/some/new/thing"),
            Some(Route {
                style: CallStyle::Azure,
                deployment: Some("gpt-4o"),
                operation: "some/new/thing"
            })
        );
        for path in ["/v1/chat/completions", "/openai/v1/chat/completions"] {
            assert_eq!(
                route(path),
                Some(Route {
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
        for path in [
            "/",
            "/healthz",
            "/openai/deployments/",
            "/openai/deployments/x",
            "/openai/deployments//chat",
            "/v1/",
            "/v2/chat",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }
}
