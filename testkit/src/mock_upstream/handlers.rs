//! The inference endpoints: route, authenticate, read the body, apply a fault, answer.
//!
//! Deciding the answer is synchronous ([`Shared::decide`]); the only awaits are reading the
//! body and the configured delay, and no lock is held across either.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::error::Category;

use super::bodies::{self, Completion, Usage};
use super::errors::ErrorReply;
use super::fault_queue::FaultTarget;
use super::faults::{Action, StatusReply};
use super::request::{InferenceRequest, prompt_tokens};
use super::routing::{self, Flavor, Operation, Route, RouteError, Target};
use super::server::Shared;
use super::stream::{Cutoff, ResetBody, SseStream, StalledBody, StreamPlan};

/// Larger than any request the proxy forwards (its default body limit is 16 MiB).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const REMAINING_REQUESTS: HeaderValue = HeaderValue::from_static("999");
const REMAINING_TOKENS: HeaderValue = HeaderValue::from_static("999000");

/// What to send, decided before any delay is slept.
enum Answer {
    Json(Bytes),
    /// A JSON body that hangs half-way (a stall fault).
    StalledJson(Bytes),
    Stream(StreamPlan),
    Error(ErrorReply),
    Fault(StatusReply),
    Reset,
}

struct Decision {
    answer: Answer,
    /// From a latency fault, on top of the configured latency.
    extra_delay: Duration,
}

impl From<Answer> for Decision {
    fn from(answer: Answer) -> Self {
        Self {
            answer,
            extra_delay: Duration::ZERO,
        }
    }
}

impl From<ErrorReply> for Decision {
    fn from(error: ErrorReply) -> Self {
        Answer::Error(error).into()
    }
}

pub(crate) async fn inference(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return shared.finish(Answer::Error(ErrorReply::invalid_body(
            "the body could not be read",
        )));
    };
    shared
        .recorder
        .record(&parts.method, &parts.uri, &parts.headers, &body);
    let decision = shared.decide(&parts, &body);
    let delay = shared.config.latency + decision.extra_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    shared.finish(decision.answer)
}

impl Shared {
    fn decide(&self, parts: &Parts, body: &Bytes) -> Decision {
        let path = parts.uri.path();
        match Route::parse(path, parts.uri.query()) {
            Ok(route) => self
                .answer(&route, parts, body)
                .unwrap_or_else(Decision::from),
            Err(RouteError::AzureNotFound) => ErrorReply::resource_not_found().into(),
            Err(RouteError::OpenAiInvalidUrl) => {
                ErrorReply::invalid_url(parts.method.as_str(), path).into()
            }
        }
    }

    fn answer(
        &self,
        route: &Route<'_>,
        parts: &Parts,
        body: &Bytes,
    ) -> Result<Decision, ErrorReply> {
        if parts.method != Method::POST {
            let path = parts.uri.path();
            return Err(ErrorReply::method_not_allowed(
                route.flavor,
                parts.method.as_str(),
                path,
            ));
        }
        self.authorize(route.flavor, &parts.headers)?;
        let request = InferenceRequest::parse(body).map_err(|error| match error.classify() {
            Category::Data => ErrorReply::invalid_body(&error.to_string()),
            Category::Io | Category::Syntax | Category::Eof => ErrorReply::unparsable_json(),
        })?;
        let model = match route.target {
            Target::Deployment(deployment) => deployment,
            Target::BodyModel => request
                .model
                .as_deref()
                .filter(|model| !model.is_empty())
                .ok_or_else(|| ErrorReply::missing_parameter("model"))?,
        };
        match route.operation {
            Operation::ChatCompletions if request.messages.is_none() => {
                return Err(ErrorReply::missing_parameter("messages"));
            }
            Operation::Embeddings if request.input.is_none_or(|input| input.count == 0) => {
                return Err(ErrorReply::missing_parameter("input"));
            }
            _ => {}
        }
        let stream = request.is_stream() && route.operation.can_stream();
        let target = FaultTarget {
            deployment: model,
            operation: route.operation,
            stream,
        };
        let mut cutoff = None;
        let mut extra_delay = Duration::ZERO;
        match self.faults.take(&target) {
            None => {}
            Some(Action::Status(mut reply)) => {
                if reply.body.is_none() {
                    let api_version = routing::api_version(parts.uri.query());
                    let default = ErrorReply::for_status(
                        reply.status,
                        route.flavor,
                        route.operation,
                        api_version,
                        reply.retry_after_secs,
                    );
                    reply.body = Some(default.body);
                }
                return Ok(Answer::Fault(reply).into());
            }
            Some(Action::Reset) => return Ok(Answer::Reset.into()),
            Some(Action::Latency(delay)) => extra_delay = delay,
            Some(Action::StreamAbortAfter(events)) => cutoff = Some(Cutoff::AbortAfter(events)),
            Some(Action::StallAfter(events)) => cutoff = Some(Cutoff::StallAfter(events)),
        }
        let answer = match self.complete(route, model, &request, stream, cutoff) {
            Answer::Json(body) if matches!(cutoff, Some(Cutoff::StallAfter(_))) => {
                Answer::StalledJson(body)
            }
            answer => answer,
        };
        Ok(Decision {
            answer,
            extra_delay,
        })
    }

    /// Accepts the configured key from `api-key` or `Authorization: Bearer` on every path:
    /// Azure takes both, and OpenAI-compatible clients sometimes send `api-key`.
    fn authorize(&self, flavor: Flavor, headers: &HeaderMap) -> Result<(), ErrorReply> {
        let Some(expected) = self.api_key() else {
            return Ok(());
        };
        let presented = headers
            .get("api-key")
            .or_else(|| headers.get(AUTHORIZATION))
            .map(|value| {
                let value = value.to_str().unwrap_or_default();
                value.strip_prefix("Bearer ").unwrap_or(value)
            });
        match presented {
            None => Err(ErrorReply::missing_key(flavor)),
            Some(key) if key == &*expected => Ok(()),
            Some(_) => Err(ErrorReply::invalid_key(flavor)),
        }
    }

    fn complete(
        &self,
        route: &Route<'_>,
        model: &str,
        request: &InferenceRequest<'_>,
        stream: bool,
        cutoff: Option<Cutoff>,
    ) -> Answer {
        let prompt_tokens = prompt_tokens(request.prompt_chars());
        if route.operation == Operation::Embeddings {
            let inputs = request.input.map_or(1, |input| input.count);
            let dims = self.config.embedding_dims;
            return Answer::Json(bodies::embeddings(model, inputs, dims, prompt_tokens));
        }
        let configured = self.config.completion_tokens;
        let (tokens, finish_reason) = match request.max_tokens() {
            Some(cap) if cap < configured => (cap, "length"),
            _ => (configured, "stop"),
        };
        let prefix = match route.operation {
            Operation::Completions => "cmpl-",
            _ => "chatcmpl-",
        };
        let id = self.ids.completion_id(prefix);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let usage = Usage::new(prompt_tokens, tokens);
        if stream {
            return Answer::Stream(StreamPlan {
                operation: route.operation,
                flavor: route.flavor,
                id,
                created,
                model: model.to_owned(),
                script: Arc::clone(&self.script),
                tokens,
                finish_reason,
                usage,
                include_usage: request.include_usage(),
                interval: self.token_interval,
                cutoff,
            });
        }
        let reply = Completion {
            flavor: route.flavor,
            id: &id,
            created,
            model,
            content: self.script.content(tokens),
            finish_reason,
            usage,
        };
        Answer::Json(match route.operation {
            Operation::Completions => bodies::text_completion(&reply),
            _ => bodies::chat_completion(&reply),
        })
    }

    fn finish(&self, answer: Answer) -> Response {
        let mut fault_headers = None;
        let mut response = match answer {
            Answer::Json(body) => {
                let mut response = Response::new(Body::from(body));
                success_headers(response.headers_mut(), APPLICATION_JSON);
                response
            }
            Answer::StalledJson(body) => {
                // The whole body's length, so that the half that comes is known to be short.
                let length = HeaderValue::from(body.len());
                let mut response = Response::new(Body::from_stream(StalledBody::new(body)));
                let headers = response.headers_mut();
                success_headers(headers, APPLICATION_JSON);
                headers.insert(CONTENT_LENGTH, length);
                response
            }
            Answer::Stream(plan) => {
                let mut response = Response::new(Body::from_stream(SseStream::new(plan)));
                let headers = response.headers_mut();
                success_headers(headers, EVENT_STREAM);
                headers.insert(CACHE_CONTROL, NO_CACHE);
                response
            }
            Answer::Error(error) => error_response(error.status, error.body),
            Answer::Fault(reply) => {
                fault_headers = Some(reply.headers);
                error_response(reply.status, reply.body.unwrap_or_default())
            }
            Answer::Reset => Response::new(Body::from_stream(ResetBody::new())),
        };
        let headers = response.headers_mut();
        self.identity_headers(headers);
        // A fault's own headers win over every default, content-type and ids included.
        if let Some(fault_headers) = fault_headers {
            for name in fault_headers.keys() {
                headers.remove(name);
            }
            for (name, value) in &fault_headers {
                headers.append(name, value.clone());
            }
        }
        response
    }

    /// Sent on every answer, errors included, so tests can always tell who answered. Azure's
    /// headers go out on `/v1` paths too: harmless there, and one set is simpler to assert.
    fn identity_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-mock-upstream", self.name_header.clone());
        headers.insert("x-ms-region", self.region_header.clone());
        for name in ["x-request-id", "apim-request-id"] {
            // A formatted UUID is always a valid header value.
            if let Ok(id) = HeaderValue::try_from(self.ids.uuid()) {
                headers.insert(name, id);
            }
        }
    }
}

fn success_headers(headers: &mut HeaderMap, content_type: HeaderValue) {
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert("x-ratelimit-remaining-requests", REMAINING_REQUESTS);
    headers.insert("x-ratelimit-remaining-tokens", REMAINING_TOKENS);
}

fn error_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}
