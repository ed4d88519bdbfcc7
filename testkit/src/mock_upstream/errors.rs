//! Error responses in the two shapes real upstreams use.
//!
//! Azure's front door answers `{"error":{"code":"404","message":…}}` (code as a string);
//! OpenAI, and Azure's model layer for bad request bodies, answer
//! `{"error":{"message","type","param","code"}}`.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::Serialize;

use super::routing::{Flavor, Operation};

/// A status and a pre-serialized JSON error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Serialize)]
struct Envelope<T> {
    error: T,
}

#[derive(Serialize)]
struct AzureError<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

const INVALID_REQUEST: &str = "invalid_request_error";

impl ErrorReply {
    pub fn azure(status: StatusCode, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &Envelope {
                error: AzureError { code, message },
            },
        )
    }

    pub fn openai(
        status: StatusCode,
        message: &str,
        kind: &str,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self::json(
            status,
            &Envelope {
                error: OpenAiError {
                    message,
                    kind,
                    param,
                    code,
                },
            },
        )
    }

    fn json(status: StatusCode, body: &impl Serialize) -> Self {
        // Serializing these borrowed-string structs cannot fail; an empty body would still be
        // a well-formed error status.
        let body = serde_json::to_vec(body).unwrap_or_default();
        Self {
            status,
            body: Bytes::from(body),
        }
    }

    pub fn resource_not_found() -> Self {
        Self::azure(StatusCode::NOT_FOUND, "404", "Resource not found")
    }

    pub fn invalid_url(method: &str, path: &str) -> Self {
        let message = format!("Invalid URL ({method} {path})");
        Self::openai(StatusCode::NOT_FOUND, &message, INVALID_REQUEST, None, None)
    }

    pub fn method_not_allowed(flavor: Flavor, method: &str, path: &str) -> Self {
        match flavor {
            Flavor::Azure => Self::azure(
                StatusCode::METHOD_NOT_ALLOWED,
                "405",
                "The requested method is not allowed for this resource",
            ),
            Flavor::OpenAi => {
                let message = format!("Invalid method for URL ({method} {path})");
                Self::openai(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &message,
                    INVALID_REQUEST,
                    None,
                    None,
                )
            }
        }
    }

    pub fn missing_key(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Azure => Self::azure(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to missing subscription key. Make sure to include \
                 subscription key when making requests to an API.",
            ),
            Flavor::OpenAi => Self::openai(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                INVALID_REQUEST,
                None,
                None,
            ),
        }
    }

    pub fn invalid_key(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Azure => Self::azure(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure \
                 to provide a valid key for an active subscription and use a correct regional \
                 API endpoint for your resource.",
            ),
            Flavor::OpenAi => Self::openai(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                INVALID_REQUEST,
                None,
                Some("invalid_api_key"),
            ),
        }
    }

    pub fn unparsable_json() -> Self {
        Self::openai(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.)",
            INVALID_REQUEST,
            None,
            None,
        )
    }

    pub fn invalid_body(detail: &str) -> Self {
        let message = format!("Invalid request body: {detail}");
        Self::openai(
            StatusCode::BAD_REQUEST,
            &message,
            INVALID_REQUEST,
            None,
            None,
        )
    }

    pub fn missing_parameter(param: &str) -> Self {
        let message = if param == "model" {
            "you must provide a model parameter".to_owned()
        } else {
            format!("Missing required parameter: '{param}'.")
        };
        Self::openai(
            StatusCode::BAD_REQUEST,
            &message,
            INVALID_REQUEST,
            Some(param),
            None,
        )
    }

    /// The body an injected fault sends when it names only a status.
    pub fn for_status(
        status: StatusCode,
        flavor: Flavor,
        operation: Operation,
        api_version: Option<&str>,
        retry_after_secs: Option<u64>,
    ) -> Self {
        match (status, flavor) {
            (StatusCode::TOO_MANY_REQUESTS, Flavor::Azure) => {
                let message = format!(
                    "Requests to the {} Operation under Azure OpenAI API version {} have \
                     exceeded token rate limit of your current OpenAI S0 pricing tier. Please \
                     retry after {} seconds. Please go here: https://aka.ms/oai/quotaincrease \
                     if you would like to further increase the default rate limit.",
                    operation.azure_operation_id(),
                    api_version.unwrap_or("v1"),
                    retry_after_secs.unwrap_or(1),
                );
                Self::azure(status, "429", &message)
            }
            (StatusCode::TOO_MANY_REQUESTS, Flavor::OpenAi) => Self::openai(
                status,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
            (StatusCode::SERVICE_UNAVAILABLE, Flavor::Azure) => Self::azure(
                status,
                "ServiceUnavailable",
                "The service is temporarily unable to process your request. Please try again \
                 later.",
            ),
            (StatusCode::SERVICE_UNAVAILABLE, Flavor::OpenAi) => Self::openai(
                status,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
                None,
            ),
            (status, Flavor::Azure) if status.is_server_error() => Self::azure(
                status,
                "InternalServerError",
                "The server had an error while processing your request. Sorry about that!",
            ),
            (status, Flavor::OpenAi) if status.is_server_error() => Self::openai(
                status,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            ),
            (status, Flavor::Azure) => {
                let reason = status.canonical_reason().unwrap_or("Error");
                Self::azure(status, status.as_str(), reason)
            }
            (status, Flavor::OpenAi) => {
                let reason = status.canonical_reason().unwrap_or("Error");
                Self::openai(status, reason, INVALID_REQUEST, None, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(reply: &ErrorReply) -> Value {
        serde_json::from_slice(&reply.body).expect("error bodies are JSON")
    }

    #[test]
    fn azure_not_found_matches_azure() {
        let reply = ErrorReply::resource_not_found();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(
            body(&reply),
            json!({"error": {"code": "404", "message": "Resource not found"}})
        );
    }

    #[test]
    fn missing_model_names_the_param() {
        let reply = ErrorReply::missing_parameter("model");
        assert_eq!(
            body(&reply),
            json!({"error": {
                "message": "you must provide a model parameter",
                "type": "invalid_request_error",
                "param": "model",
                "code": null,
            }})
        );
    }

    #[test]
    fn azure_429_quotes_operation_version_and_wait() {
        let reply = ErrorReply::for_status(
            StatusCode::TOO_MANY_REQUESTS,
            Flavor::Azure,
            Operation::ChatCompletions,
            Some("2024-10-21"),
            Some(2),
        );
        let body = body(&reply);
        assert_eq!(body["error"]["code"], "429");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit"));
        assert!(message.contains("Please retry after 2 seconds."));
    }

    #[test]
    fn server_errors_have_service_shapes() {
        let azure = |status| {
            body(&ErrorReply::for_status(
                status,
                Flavor::Azure,
                Operation::Embeddings,
                None,
                None,
            ))
        };
        assert_eq!(
            azure(StatusCode::INTERNAL_SERVER_ERROR)["error"]["code"],
            "InternalServerError"
        );
        assert_eq!(
            azure(StatusCode::SERVICE_UNAVAILABLE)["error"]["code"],
            "ServiceUnavailable"
        );
        assert_eq!(azure(StatusCode::CONFLICT)["error"]["code"], "409");
        let openai = body(&ErrorReply::for_status(
            StatusCode::BAD_GATEWAY,
            Flavor::OpenAi,
            Operation::Completions,
            None,
            None,
        ));
        assert_eq!(openai["error"]["type"], "server_error");
    }
}
