//! Quotas in the admin API: client-key limits and pool prices over HTTP, on SQLite and on
//! Postgres, as far as the snapshot proxies receive on the config stream.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use sluice_model::{Limits, Price, Snapshot};
use support::{TestControlPlane, etag, expect_error, expect_status, pool_json};

fn price() -> Value {
    json!({"input_per_1m_usd": 2.5, "output_per_1m_usd": 10, "cached_input_per_1m_usd": 1.25})
}

fn priced_pool(name: &str, backends: &[&str]) -> Value {
    let mut pool = pool_json(name, backends);
    pool["price"] = price();
    pool
}

/// The limits from the example.
fn contract_limits() -> Value {
    json!({
        "requests_per_minute": 600, "tokens_per_minute": 200000,
        "token_quota": {"tokens": 50000000, "period": "month"},
        "budget": {"usd": 500, "period": "month"},
        "pools": {"gpt-4o": {"tokens_per_minute": 100000}}
    })
}

/// Limits as the model reads them, so `500` and `500.0` compare equal.
fn limits(value: &Value) -> Limits {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn key_path(id: &str) -> String {
    format!("/api/v1/keys/{id}")
}

async fn put(
    cp: &TestControlPlane,
    path: &str,
    if_match: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = cp.request(Method::PUT, path).json(body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.unwrap()
}

on_both_databases! {
    /// A key created with limits shows them on creation, on GET (with its ETag) and in the list.
    async fn a_key_created_with_limits_reads_them_back(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("gpt-4o", &["a"])).await, 201).await;
        let created = cp.post("/api/v1/keys", &json!({"id": "team-a", "pools": ["gpt-4o"], "limits": contract_limits()})).await;
        assert_eq!(etag(&created), "\"2\"");
        let created = expect_status(created, 201).await;
        assert_eq!(limits(&created["limits"]), limits(&contract_limits()));
        assert_eq!(created["limits"]["budget"]["usd"], 500.0);

        let read = cp.get(&key_path("team-a")).await;
        assert_eq!(etag(&read), "\"2\"", "a key's ETag is the revision of its last change");
        let read = expect_status(read, 200).await;
        assert_eq!(limits(&read["limits"]), limits(&contract_limits()));
        assert!(read.get("secret").is_none() && read.get("hash").is_none(), "{read}");

        let plain = expect_status(cp.post("/api/v1/keys", &json!({"id": "plain"})).await, 201).await;
        assert_eq!(plain["limits"], json!({}), "no limits: an empty object");
        let listed = expect_status(cp.get("/api/v1/keys").await, 200).await;
        assert_eq!(listed["keys"][0]["limits"], json!({}));
        assert_eq!(limits(&listed["keys"][1]["limits"]), limits(&contract_limits()));
    }
}

on_both_databases! {
    /// PUT replaces a key's pools and limits under If-Match: the key itself keeps working, the
    /// revision and ETag move, and the change is audited.
    async fn put_replaces_pools_and_limits_and_keeps_the_key(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("a", &["x"])).await, 201).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("b", &["y"])).await, 201).await;
        let created = expect_status(cp.post("/api/v1/keys",
            &json!({"id": "k", "pools": ["a"], "limits": {"requests_per_minute": 10}})).await, 201).await;
        let secret = created["secret"].as_str().unwrap().to_owned();
        let seen = etag(&cp.get(&key_path("k")).await);
        assert_eq!(seen, "\"3\"");

        let change = json!({"pools": ["a", "b"], "limits": {
            "budget": {"usd": 25.5, "period": "week"},
            "pools": {"b": {"requests_per_minute": 5, "token_quota": {"tokens": 1000, "period": "hour"}}}}});
        let updated = put(&cp, &key_path("k"), Some(&seen), &change).await;
        assert_eq!(etag(&updated), "\"4\"");
        let updated = expect_status(updated, 200).await;
        assert_eq!(updated["pools"], json!(["a", "b"]));
        assert_eq!(limits(&updated["limits"]), limits(&change["limits"]));
        assert_eq!((&updated["hint"], &updated["created_at"]), (&created["hint"], &created["created_at"]));
        assert!(updated.get("secret").is_none() && updated.get("hash").is_none(), "{updated}");
        assert_eq!(cp.revision().await, 4);
        let read = cp.get(&key_path("k")).await;
        assert_eq!(etag(&read), "\"4\"");
        assert_eq!(expect_status(read, 200).await, updated, "PUT answers what GET shows");

        let audit = expect_status(cp.get("/api/v1/audit").await, 200).await;
        let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["revision"].as_u64(), last["action"].as_str(), last["resource"].as_str()),
            (Some(4), Some("key.update"), Some("keys/k")));

        let config = expect_status(cp.get("/api/v1/config").await, 200).await;
        let key: sluice_model::ClientKey = serde_json::from_value(config["snapshot"]["client_keys"][0].clone()).unwrap();
        assert!(key.hash.verify(&secret), "the key issued at creation still authenticates");
        assert_eq!(key.limits, limits(&change["limits"]));
        for path in ["/api/v1/keys", "/api/v1/keys/k", "/api/v1/config", "/api/v1/audit"] {
            assert!(!cp.get(path).await.text().await.unwrap().contains(&secret), "{path} leaks the key");
        }

        // A stale ETag changes nothing; `*` and the current ETag do.
        let stale = put(&cp, &key_path("k"), Some(&seen), &json!({"pools": [], "limits": {}})).await;
        let message = expect_error(stale, 412, "precondition_failed", None).await;
        assert!(message.contains("client key 'k'") && message.contains("ETag"), "{message}");
        assert_eq!(cp.revision().await, 4);
        assert_eq!(expect_status(cp.get(&key_path("k")).await, 200).await, updated);
        let any = put(&cp, &key_path("k"), Some("*"), &json!({"id": "k", "pools": ["a"], "limits": {}})).await;
        assert_eq!(expect_status(any, 200).await["limits"], json!({}));
        let malformed = put(&cp, &key_path("k"), Some("5"), &json!({"pools": [], "limits": {}})).await;
        expect_error(malformed, 400, "invalid_header", Some("If-Match")).await;

        // Unknown keys are 404, whatever the condition; keys cannot be renamed.
        for (path, tag) in [("nope", None), ("nope", Some("*")), ("NOT%20A%20NAME", None)] {
            let missing = put(&cp, &key_path(path), tag, &json!({"pools": [], "limits": {}})).await;
            expect_error(missing, 404, "not_found", None).await;
        }
        let renamed = put(&cp, &key_path("k"), None, &json!({"id": "other", "pools": [], "limits": {}})).await;
        expect_error(renamed, 422, "invalid_field", Some("id")).await;

        // DELETE honours If-Match too.
        let current = etag(&cp.get(&key_path("k")).await);
        let stale = cp.request(Method::DELETE, &key_path("k")).header("if-match", &seen).send().await.unwrap();
        expect_error(stale, 412, "precondition_failed", None).await;
        let deleted = cp.request(Method::DELETE, &key_path("k")).header("if-match", &current).send().await.unwrap();
        expect_status(deleted, 204).await;
        assert_eq!(cp.revision().await, 6);
    }
}

on_both_databases! {
    /// Every bad limit is a 422 naming the field, on create and on update alike, and stores
    /// nothing.
    async fn bad_limits_are_refused_with_the_field(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("p", &[])).await, 201).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("q", &[])).await, 201).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("free", &[])).await, 201).await;
        let key = expect_status(cp.post("/api/v1/keys", &json!({"id": "k", "pools": ["p"]})).await, 201).await;
        let revision = cp.revision().await;

        let only_p = json!(["p"]);
        let cases: Vec<(Value, Value, &str, &str)> = vec![
            (only_p.clone(), json!({"requests_per_minute": 0}), "limits.requests_per_minute", "between 1 and 100000000"),
            (only_p.clone(), json!({"requests_per_minute": -1}), "limits.requests_per_minute", "invalid value"),
            (only_p.clone(), json!({"requests_per_minute": 100_000_001}), "limits.requests_per_minute", "between 1 and 100000000"),
            (only_p.clone(), json!({"requests_per_minute": 1.5}), "limits.requests_per_minute", "invalid type"),
            (only_p.clone(), json!({"tokens_per_minute": 100_000_000_000_000u64}), "limits.tokens_per_minute", "between 1 and"),
            (only_p.clone(), json!({"token_quota": {"tokens": 0, "period": "day"}}), "limits.token_quota.tokens", "between 1 and"),
            (only_p.clone(), json!({"token_quota": {"tokens": 5, "period": "fortnight"}}), "limits.token_quota.period", "unknown variant"),
            (only_p.clone(), json!({"token_quota": {"tokens": 5}}), "limits.token_quota.period", "missing field"),
            (only_p.clone(), json!({"budget": {"usd": -5, "period": "day"}}), "limits.budget.usd", "between 0 and"),
            (only_p.clone(), json!({"budget": {"usd": 2e9, "period": "day"}}), "limits.budget.usd", "between 0 and"),
            (only_p.clone(), json!({"budget": {"usd": 0.0000001, "period": "day"}}), "limits.budget.usd", "six decimals"),
            (only_p.clone(), json!({"budget": {"usd": 0, "period": "day"}}), "limits.budget.usd", "above zero"),
            (only_p.clone(), json!({"budget": {"usd": 5, "period": "year"}}), "limits.budget.period", "unknown variant"),
            (only_p.clone(), json!({"request_per_minute": 5}), "limits.request_per_minute", "unknown field"),
            (only_p.clone(), json!({"pools": {"p": {}}}), "limits.pools.p", "at least one limit"),
            (only_p.clone(), json!({"pools": {"p": {"requests_per_minute": 0}}}), "limits.pools.p.requests_per_minute", "between 1 and"),
            (only_p.clone(), json!({"pools": {"p": {"budget": {"usd": 0, "period": "day"}}}}), "limits.pools.p.budget.usd", "above zero"),
            (only_p.clone(), json!({"pools": {"p": {"pools": {}}}}), "limits.pools.p.pools", "unknown field"),
            (only_p.clone(), json!({"pools": {"q": {"requests_per_minute": 5}}}), "limits.pools.q", "a pool the key may not use"),
            (json!([]), json!({"pools": {"Bad Name": {"requests_per_minute": 5}}}), "limits.pools.Bad Name", "1 to 63 characters"),
            (json!([]), json!({"pools": {"nope": {"requests_per_minute": 5}}}), "limits.pools.nope", "pool 'nope' does not exist"),
            (json!([]), json!({"budget": {"usd": 5, "period": "day"}}), "limits.budget", "may use pool 'free', which has no price"),
            (json!([]), json!({"pools": {"free": {"budget": {"usd": 5, "period": "day"}}}}), "limits.budget", "pool 'free'"),
            (json!(["p", "nope"]), json!({}), "pools[1]", "pool 'nope' does not exist"),
        ];
        for (pools, limits, field, expected) in cases {
            let create = cp.post("/api/v1/keys", &json!({"id": "new", "pools": pools, "limits": limits})).await;
            let text = expect_error(create, 422, "invalid_field", Some(field)).await;
            assert!(text.contains(expected), "POST {limits}: {text}");
            let update = put(&cp, &key_path("k"), None, &json!({"pools": pools, "limits": limits})).await;
            let text = expect_error(update, 422, "invalid_field", Some(field)).await;
            assert!(text.contains(expected), "PUT {limits}: {text}");
        }
        for (body, field, expected) in [
            (json!({"pools": []}), "limits", "missing field"),
            (json!({"limits": {}}), "pools", "missing field"),
            (json!({"pools": [], "limits": {}, "secret": "sk-sluice-mine"}), "secret", "unknown field"),
            (json!({"pools": [], "limits": "none"}), "limits", "invalid type"),
        ] {
            let update = put(&cp, &key_path("k"), None, &body).await;
            let text = expect_error(update, 422, "invalid_field", Some(field)).await;
            assert!(text.contains(expected), "PUT {body}: {text}");
        }
        let create = cp.post("/api/v1/keys", &json!({"id": "new", "limit": {}})).await;
        expect_error(create, 422, "invalid_field", Some("limit")).await;

        assert_eq!(cp.revision().await, revision, "nothing invalid was stored");
        let unchanged = expect_status(cp.get(&key_path("k")).await, 200).await;
        assert_eq!(unchanged["limits"], json!({}));
        assert_eq!(unchanged["pools"], key["pools"]);
        expect_error(cp.get(&key_path("new")).await, 404, "not_found", None).await;
    }
}

on_both_databases! {
    /// A pool's price is created, read, replaced and removed like its other settings, and
    /// bad prices are 422 naming the field.
    async fn pool_prices_round_trip(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        let created = expect_status(cp.post("/api/v1/pools", &priced_pool("p", &["a"])).await, 201).await;
        let read = expect_status(cp.get("/api/v1/pools/p").await, 200).await;
        assert_eq!(read, created);
        let parsed: Price = serde_json::from_value(read["price"].clone()).unwrap();
        assert_eq!((parsed.input_per_1m_usd.micros(), parsed.output_per_1m_usd.micros()), (2_500_000, 10_000_000));
        assert_eq!(parsed.cached_input_per_1m_usd.map(|p| p.micros()), Some(1_250_000));

        let cheaper = json!({"input_per_1m_usd": 0.15, "output_per_1m_usd": 0.6});
        let replaced = expect_status(put(&cp, "/api/v1/pools/p", None, &json!({"price": cheaper})).await, 200).await;
        assert_eq!(replaced["price"], cheaper);
        assert_eq!(replaced["backends"][0]["name"], "a", "backends stay without `backends`");
        assert_eq!(expect_status(cp.get("/api/v1/pools/p").await, 200).await["price"], cheaper);
        let unpriced = expect_status(put(&cp, "/api/v1/pools/p", None, &json!({})).await, 200).await;
        assert!(unpriced.get("price").is_none(), "PUT without a price leaves none: {unpriced}");
        assert!(expect_status(cp.get("/api/v1/pools/p").await, 200).await.get("price").is_none());
        let revision = cp.revision().await;

        for (price, field, expected) in [
            (json!({"input_per_1m_usd": -1, "output_per_1m_usd": 1}), "price.input_per_1m_usd", "between 0 and"),
            (json!({"input_per_1m_usd": 1, "output_per_1m_usd": 2e9}), "price.output_per_1m_usd", "between 0 and"),
            (json!({"input_per_1m_usd": 1, "output_per_1m_usd": 0.1234567}), "price.output_per_1m_usd", "six decimals"),
            (json!({"input_per_1m_usd": 1}), "price.output_per_1m_usd", "missing field"),
            (json!({"input_per_1m_usd": 1, "output_per_1m_usd": 1, "currency": "eur"}), "price.currency", "unknown field"),
            (json!({"input_per_1m_usd": "1", "output_per_1m_usd": 1}), "price.input_per_1m_usd", "invalid type"),
        ] {
            let mut body = pool_json("q", &[]);
            body["price"] = price.clone();
            let text = expect_error(cp.post("/api/v1/pools", &body).await, 422, "invalid_field", Some(field)).await;
            assert!(text.contains(expected), "POST {price}: {text}");
            let text = expect_error(put(&cp, "/api/v1/pools/p", None, &json!({"price": price})).await,
                422, "invalid_field", Some(field)).await;
            assert!(text.contains(expected), "PUT {price}: {text}");
        }
        assert_eq!(cp.revision().await, revision, "nothing invalid was stored");
    }
}

on_both_databases! {
    /// A pool write that would leave a budgeted key covering a pool without a price is refused,
    /// naming the key; once the key no longer covers it, the same write goes through.
    async fn pool_writes_cannot_leave_a_budget_without_a_price(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("p", &["a"])).await, 201).await;
        expect_status(cp.post("/api/v1/keys", &json!({"id": "capped",
            "limits": {"budget": {"usd": 100, "period": "month"}}})).await, 201).await;
        let revision = cp.revision().await;

        let text = expect_error(cp.post("/api/v1/pools", &pool_json("free", &[])).await,
            422, "invalid_field", Some("price")).await;
        assert!(text.contains("key 'capped'") && text.contains("pool 'free'"), "{text}");
        let tag = etag(&cp.get("/api/v1/pools/p").await);
        let text = expect_error(put(&cp, "/api/v1/pools/p", Some(&tag), &json!({"strategy": "weighted"})).await,
            422, "invalid_field", Some("price")).await;
        assert!(text.contains("key 'capped'") && text.contains("pool 'p'"), "{text}");
        assert_eq!(cp.revision().await, revision, "refused pool writes change nothing");
        assert!(expect_status(cp.get("/api/v1/pools/p").await, 200).await.get("price").is_some());

        // Priced pools are fine; so is changing a price.
        expect_status(cp.post("/api/v1/pools", &priced_pool("paid", &[])).await, 201).await;
        let repriced = put(&cp, "/api/v1/pools/p", Some(&tag),
            &json!({"price": {"input_per_1m_usd": 5, "output_per_1m_usd": 15}})).await;
        expect_status(repriced, 200).await;

        // A per-pool budget covers only its pool.
        expect_status(put(&cp, &key_path("capped"), None,
            &json!({"pools": [], "limits": {"pools": {"paid": {"budget": {"usd": 1, "period": "day"}}}}})).await, 200).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("free", &[])).await, 201).await;
        expect_status(put(&cp, "/api/v1/pools/p", None, &json!({})).await, 200).await;
        let text = expect_error(put(&cp, "/api/v1/pools/paid", None, &json!({})).await,
            422, "invalid_field", Some("price")).await;
        assert!(text.contains("key 'capped'") && text.contains("pool 'paid'"), "{text}");
        let config = expect_status(cp.get("/api/v1/config").await, 200).await;
        let snapshot: Snapshot = serde_json::from_value(config["snapshot"].clone()).unwrap();
        snapshot.validate().unwrap();
    }
}

on_both_databases! {
    /// Deleting a pool that a key's limits name is allowed, as for the key's `pools`: the key
    /// keeps the name until it is next changed, when the name must be gone or the pool back.
    async fn deleting_a_pool_named_by_limits(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        expect_status(cp.post("/api/v1/pools", &priced_pool("p", &[])).await, 201).await;
        let per_pool = json!({"pools": {"p": {"requests_per_minute": 5}}});
        expect_status(cp.post("/api/v1/keys", &json!({"id": "k", "limits": per_pool})).await, 201).await;
        expect_status(cp.delete("/api/v1/pools/p").await, 204).await;
        assert_eq!(expect_status(cp.get(&key_path("k")).await, 200).await["limits"], per_pool);
        let config = expect_status(cp.get("/api/v1/config").await, 200).await;
        serde_json::from_value::<Snapshot>(config["snapshot"].clone()).unwrap().validate().unwrap();
        let text = expect_error(put(&cp, &key_path("k"), None, &json!({"pools": [], "limits": per_pool})).await,
            422, "invalid_field", Some("limits.pools.p")).await;
        assert!(text.contains("does not exist"), "{text}");
        expect_status(cp.post("/api/v1/pools", &pool_json("p", &[])).await, 201).await;
        expect_status(put(&cp, &key_path("k"), None, &json!({"pools": [], "limits": per_pool})).await, 200).await;
    }
}

on_both_databases! {
    /// What `/api/v1/config` shows and what a proxy receives on the config stream carry the
    /// keys' limits and the pools' prices.
    async fn snapshots_carry_limits_and_prices(db: TestDatabase) {
        let cp = TestControlPlane::start(db).await;
        let mut gpt = priced_pool("gpt-4o", &["a"]);
        gpt["strategy"] = json!("weighted");
        expect_status(cp.post("/api/v1/pools", &gpt).await, 201).await;
        expect_status(cp.post("/api/v1/pools", &pool_json("free", &["b"])).await, 201).await;
        expect_status(cp.post("/api/v1/keys", &json!({"id": "team-a", "pools": ["gpt-4o"], "limits": contract_limits()})).await, 201).await;
        expect_status(cp.post("/api/v1/keys", &json!({"id": "team-b"})).await, 201).await;

        let config = expect_status(cp.get("/api/v1/config").await, 200).await;
        let snapshot: Snapshot = serde_json::from_value(config["snapshot"].clone()).unwrap();
        snapshot.validate().unwrap();
        let price: Price = serde_json::from_value(price()).unwrap();
        assert_eq!(snapshot.pools[1].name.as_str(), "gpt-4o");
        assert_eq!(snapshot.pools[1].price, Some(price));
        assert_eq!(snapshot.pools[0].price, None);
        assert_eq!(snapshot.client_keys[0].limits, limits(&contract_limits()));
        assert!(snapshot.client_keys[1].limits.is_empty());
        assert_eq!(config["snapshot"]["client_keys"][0]["limits"]["budget"]["usd"], 500.0);

        let streamed = streamed_snapshot(&cp, snapshot.revision).await;
        assert_eq!(streamed, snapshot, "the stream carries the same limits and prices");
    }
}

/// The snapshot of `revision` as a proxy saying hello at revision 0 receives it (the control
/// plane may first send an older one it has not caught up from yet; those are acknowledged).
async fn streamed_snapshot(cp: &TestControlPlane, revision: u64) -> Snapshot {
    use sluice_model::proto::Ack;
    use sluice_model::proto::proxy_message::Kind;

    let mut peer = support::wire::WirePeer::connect(cp, "limits-check", "x").await;
    loop {
        let update = peer.next_update().await;
        let snapshot = Snapshot::try_from(update.snapshot.unwrap()).unwrap();
        if snapshot.revision >= revision {
            return snapshot;
        }
        peer.send(Kind::Ack(Ack {
            revision: snapshot.revision,
            nonce: update.nonce,
        }));
    }
}
