//! Maps a request path onto the operation it asks for, the way Azure OpenAI and OpenAI do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which service's conventions a path follows; it decides error shapes and Azure-only fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `/openai/deployments/…` and `/openai/v1/…`.
    Azure,
    /// `/v1/…`.
    OpenAi,
}

/// The inference operations the mock implements. In JSON: their path, e.g. `"chat/completions"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    #[serde(rename = "chat/completions")]
    ChatCompletions,
    #[serde(rename = "completions")]
    Completions,
    #[serde(rename = "embeddings")]
    Embeddings,
}

impl Operation {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "chat/completions" => Some(Self::ChatCompletions),
            "completions" => Some(Self::Completions),
            "embeddings" => Some(Self::Embeddings),
            _ => None,
        }
    }

    /// The path segment(s) after the deployment or `/v1/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
        }
    }

    /// Azure's name for the operation, as quoted in its 429 messages.
    pub(crate) fn azure_operation_id(self) -> &'static str {
        match self {
            Self::ChatCompletions => "ChatCompletions_Create",
            Self::Completions => "Completions_Create",
            Self::Embeddings => "Embeddings_Create",
        }
    }

    pub(crate) fn can_stream(self) -> bool {
        !matches!(self, Self::Embeddings)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the deployment (or model) name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// Named in the path (Azure classic).
    Deployment(&'a str),
    /// The body's `model` field (`/v1` and `/openai/v1`).
    BodyModel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub flavor: Flavor,
    pub operation: Operation,
    pub target: Target<'a>,
}

/// Why a path is not an inference call. Each maps to the 404 its service would send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Unknown to Azure, or an Azure classic call without `api-version`.
    AzureNotFound,
    /// Unknown `/v1/…` operation; OpenAI names the URL in its message.
    OpenAiInvalidUrl,
}

impl<'a> Route<'a> {
    pub fn parse(path: &'a str, query: Option<&str>) -> Result<Self, RouteError> {
        if let Some(rest) = path.strip_prefix("/v1/") {
            let operation = Operation::from_path(rest).ok_or(RouteError::OpenAiInvalidUrl)?;
            return Ok(Self::by_body_model(Flavor::OpenAi, operation));
        }
        let Some(rest) = path.strip_prefix("/openai/") else {
            return Err(RouteError::AzureNotFound);
        };
        if let Some(operation) = rest.strip_prefix("v1/") {
            let operation = Operation::from_path(operation).ok_or(RouteError::AzureNotFound)?;
            return Ok(Self::by_body_model(Flavor::Azure, operation));
        }
        let (deployment, operation) = rest
            .strip_prefix("deployments/")
            .and_then(|rest| rest.split_once('/'))
            .ok_or(RouteError::AzureNotFound)?;
        let operation = Operation::from_path(operation).ok_or(RouteError::AzureNotFound)?;
        if deployment.is_empty() || !has_api_version(query) {
            return Err(RouteError::AzureNotFound);
        }
        Ok(Self {
            flavor: Flavor::Azure,
            operation,
            target: Target::Deployment(deployment),
        })
    }

    fn by_body_model(flavor: Flavor, operation: Operation) -> Self {
        Self {
            flavor,
            operation,
            target: Target::BodyModel,
        }
    }
}

fn has_api_version(query: Option<&str>) -> bool {
    api_version(query).is_some_and(|version| !version.is_empty())
}

/// The `api-version` query parameter, undecoded (versions are plain ASCII).
pub fn api_version(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("api-version="))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Option<&str> = Some("api-version=2024-10-21");

    #[test]
    fn azure_classic_names_the_deployment() {
        let route = Route::parse("/openai/deployments/gpt-4o/chat/completions", V);
        assert_eq!(
            route,
            Ok(Route {
                flavor: Flavor::Azure,
                operation: Operation::ChatCompletions,
                target: Target::Deployment("gpt-4o"),
            })
        );
        let route = Route::parse("/openai/deployments/emb/embeddings", V);
        assert_eq!(route.map(|r| r.operation), Ok(Operation::Embeddings));
    }

    #[test]
    fn azure_classic_needs_api_version() {
        let path = "/openai/deployments/gpt-4o/completions";
        assert_eq!(Route::parse(path, None), Err(RouteError::AzureNotFound));
        assert_eq!(
            Route::parse(path, Some("foo=1&api-version=")),
            Err(RouteError::AzureNotFound)
        );
        assert!(Route::parse(path, Some("foo=1&api-version=2025-04-01-preview")).is_ok());
    }

    #[test]
    fn v1_paths_take_the_model_from_the_body() {
        let route = Route::parse("/v1/chat/completions", None);
        assert_eq!(
            route.map(|r| (r.flavor, r.target)),
            Ok((Flavor::OpenAi, Target::BodyModel))
        );
        let route = Route::parse("/openai/v1/embeddings", None);
        assert_eq!(
            route.map(|r| (r.flavor, r.target)),
            Ok((Flavor::Azure, Target::BodyModel))
        );
    }

    #[test]
    fn unknown_paths_are_not_found_in_the_right_dialect() {
        assert_eq!(
            Route::parse("/v1/images/generations", None),
            Err(RouteError::OpenAiInvalidUrl)
        );
        assert_eq!(
            Route::parse("/openai/v1/responses", None),
            Err(RouteError::AzureNotFound)
        );
        assert_eq!(
            Route::parse("/openai/deployments/x/audio", V),
            Err(RouteError::AzureNotFound)
        );
        assert_eq!(
            Route::parse("/openai/deployments//chat/completions", V),
            Err(RouteError::AzureNotFound)
        );
        assert_eq!(Route::parse("/", None), Err(RouteError::AzureNotFound));
    }

    #[test]
    fn finds_api_version_among_other_parameters() {
        assert_eq!(
            api_version(Some("a=b&api-version=2024-10-21")),
            Some("2024-10-21")
        );
        assert_eq!(api_version(Some("a=b")), None);
        assert_eq!(api_version(None), None);
    }
}
