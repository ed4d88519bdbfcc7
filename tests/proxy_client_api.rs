//! What clients see: OpenAI-shaped errors, both URL styles, credentials swapped for the
//! backend's, headers and deployment names rewritten per backend kind.

mod support;

use serde_json::{Value, json};
use support::proxy::{CLIENT_KEY, TestProxy, backend_yaml, mock, pool_yaml};

async fn expect_openai_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error["type"].is_string() && error.get("param").is_some(),
        "OpenAI's shape: {body}"
    );
    body
}

async fn two_pool_proxy() -> (TestProxy, sluice_testkit::mock_upstream::MockHandle) {
    let a = mock("a").await;
    let pools = [
        pool_yaml("gpt-4o", "", &[(&a, "")]),
        pool_yaml("other", "", &[(&a, "")]),
    ]
    .join("\n");
    (TestProxy::start(&pools, &[&a]).await, a)
}

/// 401 without a key or with a wrong one, in OpenAI's error shape; nothing reaches a backend.
#[tokio::test]
async fn missing_or_wrong_keys_get_401() {
    let (proxy, a) = two_pool_proxy().await;
    let url = proxy.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    let body = json!({"messages": []});
    let missing = proxy.client.post(&url).json(&body).send().await.unwrap();
    expect_openai_error(missing, 401, "invalid_api_key").await;
    let wrong = proxy
        .client
        .post(&url)
        .header("api-key", "sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_openai_error(wrong, 401, "invalid_api_key").await;
    let wrong_bearer = proxy
        .client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_openai_error(wrong_bearer, 401, "invalid_api_key").await;
    assert_eq!(a.request_count(), 0);
}

/// A client still uploading when the proxy refuses it gets the error, not a reset connection:
/// the proxy reads the rest of the body before it lets the connection go. Refused mid-body
/// (413 once over the limit) and before it (401: the key is checked first), many times over,
/// since whether the reset overtakes the answer is a race.
#[tokio::test]
async fn a_client_refused_mid_upload_reads_its_error() {
    let (proxy, a) = two_pool_proxy().await;
    let azure = proxy.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    let big = || {
        let pieces: Vec<Vec<u8>> = vec![vec![b' '; 8192]; 256];
        reqwest::Body::wrap_stream(futures_stream_of(pieces))
    };
    for _ in 0..20 {
        let over_limit = proxy
            .client
            .post(&azure)
            .header("api-key", CLIENT_KEY)
            .body(big())
            .send()
            .await
            .expect("the 413, not a broken connection");
        expect_openai_error(over_limit, 413, "request_too_large").await;
        let wrong_key = proxy
            .client
            .post(&azure)
            .header("api-key", "sk-wrong")
            .body(big())
            .send()
            .await
            .expect("the 401, not a broken connection");
        expect_openai_error(wrong_key, 401, "invalid_api_key").await;
    }
    assert_eq!(a.request_count(), 0);
}

/// Unknown deployments and paths get 404; bad bodies 400; oversized bodies 413, before any
/// upstream call.
#[tokio::test]
async fn bad_requests_get_clear_openai_errors() {
    let (proxy, a) = two_pool_proxy().await;
    expect_openai_error(
        proxy.chat("nope").send().await.unwrap(),
        404,
        "DeploymentNotFound",
    )
    .await;
    let unknown_path = proxy
        .client
        .post(proxy.url("/v2/chat"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    expect_openai_error(unknown_path, 404, "not_found").await;
    let v1 = proxy.url("/v1/chat/completions");
    let malformed = proxy
        .client
        .post(&v1)
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    expect_openai_error(malformed, 400, "invalid_json").await;
    let no_model = proxy
        .client
        .post(&v1)
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    let body = expect_openai_error(no_model, 400, "missing_model").await;
    assert_eq!(body["error"]["param"], "model");
    let unknown_model = proxy
        .client
        .post(&v1)
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-5"}))
        .send()
        .await
        .unwrap();
    expect_openai_error(unknown_model, 404, "DeploymentNotFound").await;

    let big = "x".repeat(70 * 1024);
    let declared = proxy
        .client
        .post(&v1)
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_openai_error(declared, 413, "request_too_large").await;
    let chunked_body = reqwest::Body::wrap_stream(futures_stream(big.into_bytes()));
    let chunked = proxy
        .client
        .post(&v1)
        .bearer_auth(CLIENT_KEY)
        .body(chunked_body)
        .send()
        .await
        .unwrap();
    expect_openai_error(chunked, 413, "request_too_large").await;
    assert_eq!(a.request_count(), 0, "no bad request reached a backend");
}

/// A body without Content-Length, sent in pieces, so only reading it reveals its size.
fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_stream_of(bytes.chunks(8192).map(<[u8]>::to_vec).collect())
}

/// `pieces`, one by one, as a body without Content-Length.
fn futures_stream_of(
    pieces: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    struct Pieces(std::vec::IntoIter<Vec<u8>>);
    impl futures_core::Stream for Pieces {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(Ok))
        }
    }
    Pieces(pieces.into_iter())
}

/// A body sent in many pieces, without Content-Length, reaches the backend whole and in order.
#[tokio::test]
async fn a_body_sent_in_pieces_reaches_the_backend_whole() {
    let (proxy, a) = two_pool_proxy().await;
    let sent = json!({
        "messages": [{"role": "user", "content": "é".repeat(3000)}],
        "max_tokens": 5,
    });
    let bytes = serde_json::to_vec(&sent).unwrap();
    // Pieces that split characters and JSON tokens alike.
    let pieces = bytes.chunks(7).map(<[u8]>::to_vec).collect();
    let response = proxy
        .client
        .post(proxy.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"))
        .header("api-key", CLIENT_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream_of(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(a.last_request().unwrap().body, Some(sent));
}

/// The backend sees its own key, never the client's; traceparent and OpenAI headers pass.
/// Four calls on one connection: from the third on, the request to the backend is built in a
/// header map an earlier call's client headers (its key among them) were parsed into.
#[tokio::test]
async fn the_client_key_never_reaches_a_backend() {
    let (proxy, a) = two_pool_proxy().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for with_bearer in [false, true, false, true] {
        let request =
            proxy
                .client
                .post(proxy.url(
                    "/openai/deployments/gpt-4o/chat/completions?api-version=2025-04-01-preview",
                ))
                .header("traceparent", traceparent)
                .header("openai-organization", "org-1")
                .json(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        let request = if with_bearer {
            request.bearer_auth(CLIENT_KEY)
        } else {
            request.header("api-key", CLIENT_KEY)
        };
        assert_eq!(request.send().await.unwrap().status(), 200);
        let seen = a.last_request().unwrap();
        assert_eq!(seen.api_key(), Some("key-a"));
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.header("traceparent"), Some(traceparent));
        assert_eq!(seen.header("openai-organization"), Some("org-1"));
        assert_eq!(
            seen.query.as_deref(),
            Some("api-version=2025-04-01-preview"),
            "the client's api-version is kept"
        );
        for (name, value) in seen.headers.iter() {
            assert!(
                !value
                    .as_bytes()
                    .windows(CLIENT_KEY.len())
                    .any(|w| w == CLIENT_KEY.as_bytes()),
                "{name} carries the client key"
            );
        }
    }
}

/// OpenAI-style calls reach Azure backends at the deployment URL with a default api-version,
/// and OpenAI backends at /v1 with the renamed model and a Bearer key.
#[tokio::test]
async fn calls_are_rewritten_per_backend_kind() {
    let azure = mock("azure").await;
    let openai = mock("openai").await;
    let pools = format!(
        "  - name: gpt-4o\n    backends: [{}]\n  - name: mini\n    backends: [{{ name: openai, url: \"{}\", kind: openai, auth: {{ type: api_key, secret: \"file://SECRETS/key-openai\" }}, deployments: {{ mini: gpt-4o-mini }} }}]",
        backend_yaml(&azure, ", deployments: { gpt-4o: gpt-4o-eastus }"),
        openai.url()
    );
    let proxy = TestProxy::start(&pools, &[&azure, &openai]).await;

    let v1 = proxy
        .client
        .post(proxy.url("/openai/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 200);
    let seen = azure.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt-4o-eastus/chat/completions"
    );
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));

    let to_openai = proxy
        .client
        .post(proxy.url("/openai/deployments/mini/chat/completions?api-version=2024-10-21"))
        .header("api-key", CLIENT_KEY)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(to_openai.status(), 200);
    let seen = openai.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.query, None, "api-version is not sent to OpenAI");
    assert_eq!(seen.bearer_token(), Some("key-openai"));
    assert_eq!(seen.body.unwrap()["model"], "gpt-4o-mini");
}

/// Keys limited to some pools get 403 elsewhere; `GET /v1/models` lists the usable pools.
#[tokio::test]
async fn key_scopes_and_model_listing() {
    let a = mock("a").await;
    let pools = [
        pool_yaml("gpt-4o", "", &[(&a, "")]),
        pool_yaml("other", "", &[(&a, "")]),
    ]
    .join("\n");
    let proxy = TestProxy::start_with(&pools, &[&a], &[("ops", &["other"])], false).await;
    let list = |key: &'static str| {
        let request = proxy.client.get(proxy.url("/v1/models")).bearer_auth(key);
        async move {
            let models: Value = request.send().await.unwrap().json().await.unwrap();
            assert_eq!(models["object"], "list");
            models["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(CLIENT_KEY).await, ["gpt-4o", "other"]);
    assert_eq!(list("sk-ops").await, ["other"]);

    let forbidden = proxy
        .client
        .post(proxy.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"))
        .header("api-key", "sk-ops")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    expect_openai_error(forbidden, 403, "permission_denied").await;
    let allowed = proxy
        .client
        .post(proxy.url("/openai/deployments/other/chat/completions?api-version=2024-10-21"))
        .header("api-key", "sk-ops")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(a.request_count(), 1);
}

/// `--allow-anonymous` serves clients without a key.
#[tokio::test]
async fn anonymous_access_only_when_allowed() {
    let a = mock("a").await;
    let pool = pool_yaml("p", "", &[(&a, "")]);
    let proxy = TestProxy::start_with(&pool, &[&a], &[], true).await;
    let response = proxy
        .client
        .post(proxy.url("/openai/deployments/p/chat/completions?api-version=2024-10-21"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(a.last_request().unwrap().api_key(), Some("key-a"));
}

/// Operations Sluice has no special handling for are passed through to the backend at the
/// rewritten path, not refused; a backend's own `api_version` is sent when the client gave
/// none.
#[tokio::test]
async fn unknown_operations_pass_through_with_the_backends_api_version() {
    let a = mock("a").await;
    let pool = pool_yaml("p", "", &[(&a, r#", api_version: "2025-01-01-preview""#)]);
    let proxy = TestProxy::start(&pool, &[&a]).await;
    for (path, upstream_path, query) in [
        (
            "/openai/deployments/p/images/generations?api-version=2024-10-21",
            "/openai/deployments/p/images/generations",
            "api-version=2024-10-21",
        ),
        (
            "/v1/responses",
            "/openai/deployments/p/responses",
            "api-version=2025-01-01-preview",
        ),
        (
            "/v1/some/future/operation",
            "/openai/deployments/p/some/future/operation",
            "api-version=2025-01-01-preview",
        ),
    ] {
        let response = proxy
            .client
            .post(proxy.url(path))
            .header("api-key", CLIENT_KEY)
            .json(&json!({"model": "p", "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert!(
            response.headers().get("x-mock-upstream").is_some(),
            "{path}: answered by the backend, not refused by the proxy"
        );
        assert_eq!(response.headers()["x-sluice-attempts"], "1", "{path}");
        let seen = a.last_request().expect("the backend saw the call");
        assert_eq!(seen.path, upstream_path, "{path}");
        assert_eq!(seen.query.as_deref(), Some(query), "{path}");
    }
}
