//! End-to-end tests of the admin REST API over HTTP, on SQLite and on Postgres.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    ADMIN_TOKEN, TestControlPlane, TestDatabase, backend_json, etag, expect_error, expect_status,
    pool_json,
};

on_both_databases! {
    /// The newcomer's path: create a pool with two backends, read it back with an ETag,
    /// watch the revision move.
    async fn pool_with_two_backends_round_trips(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        assert_eq!(cp.revision().await, 0);

        let created = cp.post("/api/v1/pools", &pool_json("gpt-4o", &["eastus", "westus"])).await;
        let created_etag = etag(&created);
        assert_eq!(created.headers()["location"], "/api/v1/pools/gpt-4o");
        let body = expect_status(created, 201).await;
        assert_eq!(body["strategy"], "round_robin", "defaults are filled in");
        assert_eq!(body["retry"]["max_attempts"], 3);
        assert_eq!(cp.revision().await, 1);

        let read = cp.get("/api/v1/pools/gpt-4o").await;
        assert_eq!(etag(&read), created_etag);
        let pool = expect_status(read, 200).await;
        assert_eq!(pool, body);
        let names: Vec<_> = pool["backends"].as_array().unwrap().iter().map(|b| b["name"].clone()).collect();
        assert_eq!(names, [json!("eastus"), json!("westus")]);

        let added = cp.post("/api/v1/pools/gpt-4o/backends", &backend_json("northeu")).await;
        expect_status(added, 201).await;
        assert_eq!(cp.revision().await, 2);
        let reread = cp.get("/api/v1/pools/gpt-4o").await;
        assert_ne!(etag(&reread), created_etag, "a backend change changes the pool's ETag");
        let backends = expect_status(cp.get("/api/v1/pools/gpt-4o/backends").await, 200).await;
        assert_eq!(backends["backends"][2]["name"], "northeu", "new backends are appended");

        let one = cp.get("/api/v1/pools/gpt-4o/backends/westus").await;
        assert_eq!(etag(&one), "\"1\"");
        assert_eq!(expect_status(one, 200).await, pool["backends"][1]);
    }
}

on_both_databases! {
    /// Two operators edit the same pool: the second, holding a stale ETag, gets 412.
    async fn if_match_prevents_lost_updates(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("p", &["a"])).await, 201).await;
        let seen = etag(&cp.get("/api/v1/pools/p").await);

        let first = cp.request(Method::PUT, "/api/v1/pools/p").header("if-match", &seen)
            .json(&json!({"strategy": "weighted"})).send().await.unwrap();
        let new_etag = etag(&first);
        expect_status(first, 200).await;
        let second = cp.request(Method::PUT, "/api/v1/pools/p").header("if-match", &seen)
            .json(&json!({"strategy": "least_latency"})).send().await.unwrap();
        let message = expect_error(second, 412, "precondition_failed", None).await;
        assert!(message.contains("ETag"), "{message}");
        let pool = expect_status(cp.get("/api/v1/pools/p").await, 200).await;
        assert_eq!(pool["strategy"], "weighted", "the stale write changed nothing");
        assert_eq!(pool["backends"][0]["name"], "a", "omitting backends keeps them");

        for (header, status) in [("*", 200), ("W/\"99\", \"0\"", 412), (new_etag.as_str(), 412)] {
            let response = cp.request(Method::PUT, "/api/v1/pools/p").header("if-match", header)
                .json(&json!({"strategy": "round_robin"})).send().await.unwrap();
            expect_status(response, status).await;
        }
        let malformed = cp.request(Method::PUT, "/api/v1/pools/p").header("if-match", "12")
            .json(&json!({})).send().await.unwrap();
        expect_error(malformed, 400, "invalid_header", Some("If-Match")).await;

        let backend_etag = etag(&cp.get("/api/v1/pools/p/backends/a").await);
        let stale = cp.request(Method::DELETE, "/api/v1/pools/p/backends/a").header("if-match", "\"0\"")
            .send().await.unwrap();
        expect_error(stale, 412, "precondition_failed", None).await;
        let ok = cp.request(Method::DELETE, "/api/v1/pools/p/backends/a").header("if-match", backend_etag)
            .send().await.unwrap();
        expect_status(ok, 204).await;
    }
}

on_both_databases! {
    /// PUT with `backends` replaces the whole list; validation covers the new list.
    async fn put_replaces_backends_when_given(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("p", &["a", "b"])).await, 201).await;
        let replaced = cp.send_json(Method::PUT, "/api/v1/pools/p",
            &json!({"name": "p", "backends": [backend_json("c")]})).await;
        let body = expect_status(replaced, 200).await;
        assert_eq!(body["backends"].as_array().unwrap().len(), 1);
        assert_eq!(body["backends"][0]["name"], "c");
        let duplicate = cp.send_json(Method::PUT, "/api/v1/pools/p",
            &json!({"backends": [backend_json("c"), backend_json("c")]})).await;
        expect_error(duplicate, 422, "invalid_field", Some("backends[1].name")).await;
        let renamed = cp.send_json(Method::PUT, "/api/v1/pools/p", &json!({"name": "q"})).await;
        expect_error(renamed, 422, "invalid_field", Some("name")).await;
        let mut backend = backend_json("c");
        backend["weight"] = json!(7);
        let updated = cp.send_json(Method::PUT, "/api/v1/pools/p/backends/c", &backend).await;
        assert_eq!(expect_status(updated, 200).await["weight"], 7);
        let mismatched = cp.send_json(Method::PUT, "/api/v1/pools/p/backends/c", &backend_json("d")).await;
        expect_error(mismatched, 422, "invalid_field", Some("name")).await;
    }
}

on_both_databases! {
    /// Every invalid field is refused with 422 and a path to the field.
    async fn validation_errors_name_the_field(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"name": "Bad Name"}), "name", "1 to 63 characters"),
            (json!({"name": &"a".repeat(64)}), "name", "1 to 63 characters"),
            (json!({"name": "p", "strategy": "random"}), "strategy", "unknown variant"),
            (json!({"name": "p", "colour": "blue"}), "colour", "unknown field"),
            (json!({"name": "p", "retry": {"max_attempts": 11}}), "retry.max_attempts", "between 1 and 10"),
            (json!({"name": "p", "retry": {"max_attempts": 0}}), "retry.max_attempts", "between 1 and 10"),
            (json!({"name": "p", "retry": {"retry_on": [429, 404]}}), "retry.retry_on[1]", "408, 409, 429 and 5xx"),
            (json!({"name": "p", "backends": [{"url": "https://x.example", "kind": "openai", "auth": {"type": "none"}}]}),
                "backends[0].name", "missing field"),
            (json!({"name": "p", "backends": [with(backend_json("a"), "url", json!("ftp://x.example"))]}),
                "backends[0].url", "http or https"),
            (json!({"name": "p", "backends": [with(backend_json("a"), "weight", json!(0))]}),
                "backends[0].weight", "between 1 and 1000"),
            (json!({"name": "p", "backends": [with(backend_json("a"), "weight", json!(1001))]}),
                "backends[0].weight", "between 1 and 1000"),
            (json!({"name": "p", "backends": [with(backend_json("a"), "priority", json!(-1))]}),
                "backends[0].priority", "invalid value"),
            (json!({"name": "p", "backends": [with(backend_json("a"), "auth", json!({"type": "api_key", "secret": "8f3c0e1d2b4a59687766554433221100"}))]}),
                "backends[0].auth.secret", "keyvault://VAULT/NAME"),
            (json!({"name": "p", "backends": [with(backend_json("a"), "kind", json!("openai"))
                .as_object().map(|b| { let mut b = b.clone(); b.insert("auth".into(), json!({"type": "entra_id"})); Value::Object(b) }).unwrap()]}),
                "backends[0].auth.type", "entra_id works only with kind azure_openai"),
            (json!({"name": "p", "backends": [backend_json("a"), backend_json("a")]}),
                "backends[1].name", "unique"),
        ];
        for (body, field, message) in cases {
            let response = cp.post("/api/v1/pools", &body).await;
            let text = expect_error(response, 422, "invalid_field", Some(field)).await;
            assert!(text.contains(message), "{body}: {text}");
            assert!(!text.contains("8f3c0e1d2b4a59687766554433221100"), "a pasted key is never echoed");
        }
        assert_eq!(cp.revision().await, 0, "nothing invalid was stored");
    }
}

on_both_databases! {
    /// Duplicates answer 409, missing resources 404, and neither moves the revision.
    async fn duplicates_conflict_and_missing_resources_are_404(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("p", &["a"])).await, 201).await;
        expect_error(cp.post("/api/v1/pools", &pool_json("p", &[])).await, 409, "already_exists", None).await;
        expect_error(cp.post("/api/v1/pools/p/backends", &backend_json("a")).await, 409, "already_exists", None).await;
        for path in ["/api/v1/pools/nope", "/api/v1/pools/nope/backends", "/api/v1/pools/p/backends/nope",
                     "/api/v1/pools/nope/backends/a", "/api/v1/keys/nope", "/api/v1/pools/NOT%20A%20NAME"] {
            expect_error(cp.get(path).await, 404, "not_found", None).await;
        }
        expect_error(cp.delete("/api/v1/pools/nope").await, 404, "not_found", None).await;
        expect_error(cp.delete("/api/v1/pools/p/backends/nope").await, 404, "not_found", None).await;
        expect_error(cp.delete("/api/v1/keys/nope").await, 404, "not_found", None).await;
        expect_error(cp.post("/api/v1/pools/nope/backends", &backend_json("a")).await, 404, "not_found", None).await;
        expect_error(cp.send_json(Method::PUT, "/api/v1/pools/nope", &json!({})).await, 404, "not_found", None).await;
        expect_error(cp.get("/api/v1/nothing-here").await, 404, "not_found", None).await;
        expect_error(cp.request(Method::PATCH, "/api/v1/pools").send().await.unwrap(), 405, "method_not_allowed", None).await;
        assert_eq!(cp.revision().await, 1);

        expect_status(cp.delete("/api/v1/pools/p").await, 204).await;
        expect_error(cp.get("/api/v1/pools/p/backends").await, 404, "not_found", None).await;
        assert_eq!(cp.revision().await, 2);
    }
}

on_both_databases! {
    /// Oversized, mistyped and malformed bodies get 413, 415 and 400.
    async fn malformed_requests_get_clear_errors(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        let huge = format!("{{\"name\": \"p\", \"pad\": \"{}\"}}", "x".repeat(1024 * 1024));
        let too_large = cp.request(Method::POST, "/api/v1/pools")
            .header("content-type", "application/json").body(huge).send().await.unwrap();
        expect_error(too_large, 413, "payload_too_large", None).await;
        let text = cp.request(Method::POST, "/api/v1/pools")
            .header("content-type", "text/plain").body("{\"name\": \"p\"}").send().await.unwrap();
        expect_error(text, 415, "unsupported_media_type", None).await;
        let untyped = cp.request(Method::POST, "/api/v1/pools").body("{\"name\": \"p\"}").send().await.unwrap();
        expect_error(untyped, 415, "unsupported_media_type", None).await;
        for body in ["{\"name\": ", "not json", "{\"name\": \"p\"} trailing", ""] {
            let response = cp.request(Method::POST, "/api/v1/pools")
                .header("content-type", "application/json").body(body).send().await.unwrap();
            expect_error(response, 400, "invalid_json", None).await;
        }
        let wrong_type = cp.post("/api/v1/pools", &json!(["p"])).await;
        expect_error(wrong_type, 422, "invalid_field", None).await;
        let charset = cp.request(Method::POST, "/api/v1/pools")
            .header("content-type", "application/json; charset=utf-8").body("{\"name\": \"p\"}").send().await.unwrap();
        expect_status(charset, 201).await;
    }
}

on_both_databases! {
    /// /api/v1 needs the admin token; health, readiness, metrics and the document do not.
    async fn admin_api_requires_the_token(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        for path in ["/api/v1/pools", "/api/v1/keys", "/api/v1/config", "/api/v1/proxies", "/api/v1/audit"] {
            let response = cp.anonymous(Method::GET, path).send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            expect_error(response, 401, "unauthorized", None).await;
            let wrong = cp.anonymous(Method::GET, path).bearer_auth("wrong-token-0123456789").send().await.unwrap();
            expect_error(wrong, 401, "unauthorized", None).await;
        }
        let write = cp.anonymous(Method::POST, "/api/v1/pools").json(&pool_json("p", &[])).send().await.unwrap();
        expect_error(write, 401, "unauthorized", None).await;
        assert_eq!(cp.revision().await, 0);
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let response = cp.anonymous(Method::GET, path).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
    }
}

on_both_databases! {
    /// A client key's secret is shown once; only a hash that verifies it is stored.
    async fn client_keys_show_their_secret_once(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("gpt-4o", &["a"])).await, 201).await;
        let created = cp.post("/api/v1/keys", &json!({"id": "team-a", "pools": ["gpt-4o"]})).await;
        assert_eq!(created.headers()["location"], "/api/v1/keys/team-a");
        let created = expect_status(created, 201).await;
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("sk-sluice-") && secret.len() >= 50, "{secret}");
        assert_eq!(created["hint"], secret[secret.len() - 4..]);

        let all = expect_status(cp.post("/api/v1/keys", &json!({"id": "ops"})).await, 201).await;
        assert_eq!(all["pools"], json!([]), "no pools listed means every pool");

        let one = expect_status(cp.get("/api/v1/keys/team-a").await, 200).await;
        assert_eq!(one["pools"], json!(["gpt-4o"]));
        assert!(one.get("secret").is_none() && one.get("hash").is_none(), "{one}");
        let listed = expect_status(cp.get("/api/v1/keys").await, 200).await;
        assert_eq!(listed["keys"].as_array().unwrap().len(), 2);

        let config = expect_status(cp.get("/api/v1/config").await, 200).await;
        let stored: sluice_model::ClientKey =
            serde_json::from_value(config["snapshot"]["client_keys"][1].clone()).unwrap();
        assert_eq!(stored.id.as_str(), "team-a");
        assert!(stored.hash.verify(&secret), "the stored hash verifies the key");
        assert!(!stored.hash.verify("sk-sluice-wrong"));
        for path in ["/api/v1/keys", "/api/v1/keys/team-a", "/api/v1/config", "/api/v1/audit", "/metrics"] {
            let text = cp.request(Method::GET, path).send().await.unwrap().text().await.unwrap();
            assert!(!text.contains(&secret), "{path} leaks the key");
        }

        expect_error(cp.post("/api/v1/keys", &json!({"id": "team-a"})).await, 409, "already_exists", None).await;
        expect_error(cp.post("/api/v1/keys", &json!({"id": "b", "pools": ["gpt-4o", "nope"]})).await,
            422, "invalid_field", Some("pools[1]")).await;
        expect_error(cp.post("/api/v1/keys", &json!({"id": "c", "secret": "mine"})).await,
            422, "invalid_field", Some("secret")).await;
        expect_status(cp.delete("/api/v1/keys/team-a").await, 204).await;
        expect_error(cp.get("/api/v1/keys/team-a").await, 404, "not_found", None).await;
    }
}

on_both_databases! {
    /// Every change is in the audit log with its revision and the admin token's id.
    async fn audit_log_records_every_change(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("p", &["a"])).await, 201).await;
        expect_status(cp.post("/api/v1/pools/p/backends", &backend_json("b")).await, 201).await;
        expect_status(cp.send_json(Method::PUT, "/api/v1/pools/p/backends/b", &backend_json("b")).await, 200).await;
        expect_status(cp.delete("/api/v1/pools/p/backends/b").await, 204).await;
        expect_status(cp.post("/api/v1/keys", &json!({"id": "k"})).await, 201).await;
        expect_status(cp.delete("/api/v1/keys/k").await, 204).await;
        expect_status(cp.delete("/api/v1/pools/p").await, 204).await;

        let log = expect_status(cp.get("/api/v1/audit").await, 200).await;
        let entries = log["entries"].as_array().unwrap();
        let actions: Vec<_> = entries.iter().map(|e| (e["action"].as_str().unwrap(), e["resource"].as_str().unwrap())).collect();
        assert_eq!(actions, [
            ("pool.create", "pools/p"), ("backend.create", "pools/p/backends/b"),
            ("backend.update", "pools/p/backends/b"), ("backend.delete", "pools/p/backends/b"),
            ("key.create", "keys/k"), ("key.delete", "keys/k"), ("pool.delete", "pools/p"),
        ]);
        let revisions: Vec<_> = entries.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
        assert_eq!(revisions, (1..=7).collect::<Vec<_>>());
        let actor = entries[0]["actor"].as_str().unwrap();
        assert!(actor.starts_with("admin:") && !actor.contains(ADMIN_TOKEN), "{actor}");
        assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'));
        assert!(log.get("next_after").is_none());

        let page = expect_status(cp.get("/api/v1/audit?limit=3").await, 200).await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 3);
        let after = page["next_after"].as_i64().unwrap();
        let next = expect_status(cp.get(&format!("/api/v1/audit?after={after}&limit=3")).await, 200).await;
        assert_eq!(next["entries"][0]["action"], "backend.delete");
        for bad in ["limit=0", "limit=1001", "after=-1", "limit=x", "unknown=1"] {
            expect_error(cp.get(&format!("/api/v1/audit?{bad}")).await, 400, "invalid_query", None).await;
        }
    }
}

on_both_databases! {
    /// Concurrent writers each get their own revision; none is lost or repeated.
    async fn concurrent_writes_get_distinct_revisions(db: TestDatabase) {
        let cp = std::sync::Arc::new(TestControlPlane::start(db).await);
        let writers = (0..16).map(|i| {
            let cp = cp.clone();
            tokio::spawn(async move {
                let response = cp.post("/api/v1/pools", &pool_json(&format!("p{i}"), &["a"])).await;
                let tag = etag(&response);
                expect_status(response, 201).await;
                tag.trim_matches('"').parse::<u64>().unwrap()
            })
        });
        let mut revisions = Vec::new();
        for writer in writers {
            revisions.push(writer.await.unwrap());
        }
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=16).collect::<Vec<_>>());
        assert_eq!(cp.revision().await, 16);
        let config = expect_status(cp.get("/api/v1/config").await, 200).await;
        assert_eq!(config["snapshot"]["pools"].as_array().unwrap().len(), 16);
    }
}

on_both_databases! {
    /// The snapshot, proxies list, readiness and metrics reflect the store.
    async fn config_proxies_readiness_and_metrics(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("p", &["a"])).await, 201).await;
        let config = cp.get("/api/v1/config").await;
        assert_eq!(etag(&config), "\"1\"");
        let config = expect_status(config, 200).await;
        assert_eq!(config["revision"], 1);
        assert_eq!(config["snapshot"]["revision"], 1);
        assert_eq!(config["snapshot"]["pools"][0]["backends"][0]["auth"]["secret"], "keyvault://my-vault/aoai-a-key");
        assert_eq!(expect_status(cp.get("/api/v1/proxies").await, 200).await, json!({"proxies": []}));
        assert_eq!(expect_status(cp.get("/readyz").await, 200).await["status"], "ready");
        assert_eq!(expect_status(cp.get("/healthz").await, 200).await["status"], "ok");

        let metrics = cp.get("/metrics").await;
        // The classic Prometheus text unless the scraper asks for OpenMetrics.
        assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        let text = metrics.text().await.unwrap();
        assert!(text.contains("sluice_config_revision 1"), "{text}");
        assert!(text.contains(r#"sluice_admin_requests_total{method="POST",route="/api/v1/pools",status="201"} 1"#), "{text}");
        assert!(text.contains("sluice_admin_request_duration_seconds_bucket"), "{text}");
        assert!(!text.contains("/api/v1/pools/p\""), "raw paths never become labels");

        let prometheus_accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let openmetrics = cp.request(Method::GET, "/metrics").header("accept", prometheus_accept).send().await.unwrap();
        assert!(openmetrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
        assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"));
    }
}

/// Every route the contract names is in `/openapi.json`, and every documented operation is
/// really served (no 404 fallback, no 405).
#[tokio::test]
async fn openapi_documents_every_route() {
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let doc = expect_status(
        cp.anonymous(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            if let Some(operation) = item.get(method) {
                documented.push(format!("{} {path}", method.to_uppercase()));
                let secured = operation.get("security").is_some();
                assert_eq!(
                    secured,
                    path.starts_with("/api/v1"),
                    "{method} {path} security"
                );
            }
        }
    }
    documented.sort();
    let mut expected = vec![
        "GET /api/v1/pools",
        "POST /api/v1/pools",
        "GET /api/v1/pools/{pool}",
        "PUT /api/v1/pools/{pool}",
        "DELETE /api/v1/pools/{pool}",
        "GET /api/v1/pools/{pool}/backends",
        "POST /api/v1/pools/{pool}/backends",
        "GET /api/v1/pools/{pool}/backends/{backend}",
        "PUT /api/v1/pools/{pool}/backends/{backend}",
        "DELETE /api/v1/pools/{pool}/backends/{backend}",
        "GET /api/v1/keys",
        "POST /api/v1/keys",
        "GET /api/v1/keys/{id}",
        "PUT /api/v1/keys/{id}",
        "GET /api/v1/keys/{id}/usage",
        "DELETE /api/v1/keys/{id}",
        "GET /api/v1/config",
        "GET /api/v1/proxies",
        "GET /api/v1/pools/{pool}/status",
        "GET /api/v1/usage",
        "GET /api/v1/audit",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
    ];
    expected.sort();
    assert_eq!(documented, expected);

    for route in &documented {
        let (method, path) = route.split_once(' ').unwrap();
        let concrete = path
            .replace("{pool}", "p")
            .replace("{backend}", "b")
            .replace("{id}", "k");
        let response = cp
            .request(method.parse().unwrap(), &concrete)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{route} is not routed");
        assert!(
            !body.contains("no such endpoint"),
            "{route} is not routed: {body}"
        );
    }
}

fn with(mut object: Value, key: &str, value: Value) -> Value {
    object[key] = value;
    object
}
