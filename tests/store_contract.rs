//! The config store's contract, run against SQLite and a fresh Postgres database alike.

mod support;

use sluice_control_plane::store::{
    Actor, KeyUpdate, NewClientKey, PoolReplacement, Precondition, Store, StoreError, StoreOptions,
};
use sluice_model::{Backend, KeyHash, Limits, Name, Pool, Price, RetryPolicy, Strategy};
use support::{TestDatabase, backend_json, pool_json};

fn pool(name: &str, backends: &[&str]) -> Pool {
    serde_json::from_value(pool_json(name, backends)).unwrap()
}

fn backend(name: &str) -> Backend {
    serde_json::from_value(backend_json(name)).unwrap()
}

fn name(raw: &str) -> Name {
    raw.parse().unwrap()
}

fn priced(name: &str, backends: &[&str]) -> Pool {
    let mut json = pool_json(name, backends);
    json["price"] = serde_json::json!({"input_per_1m_usd": 2.5, "output_per_1m_usd": 10});
    serde_json::from_value(json).unwrap()
}

fn limits(json: serde_json::Value) -> Limits {
    serde_json::from_value(json).unwrap()
}

fn new_key(id: &str, pools: &[&str], limits: Limits) -> NewClientKey {
    NewClientKey {
        id: name(id),
        pools: pools.iter().map(|p| name(p)).collect(),
        limits,
    }
}

fn operator() -> Actor {
    Actor("admin:test".into())
}

async fn open(db: &TestDatabase) -> Store {
    Store::connect(db.url(), StoreOptions::default())
        .await
        .unwrap()
}

on_both_databases! {
    /// Each committed change bumps the revision by exactly one; refused changes do not.
    async fn every_change_bumps_the_revision_once(db: TestDatabase) {
        let store = open(&db).await;
        let mut changes = store.watch_revision();
        assert_eq!(store.revision().await.unwrap(), 0);
        let created = store.create_pool(&operator(), &pool("p", &["a"])).await.unwrap();
        assert_eq!(created.revision, 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 1);

        assert!(matches!(store.create_pool(&operator(), &pool("p", &[])).await, Err(StoreError::AlreadyExists(_))));
        assert!(matches!(store.create_backend(&operator(), &name("p"), &backend("a")).await, Err(StoreError::AlreadyExists(_))));
        assert!(matches!(store.delete_pool(&operator(), &name("q"), None).await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.delete_backend(&operator(), &name("p"), &name("a"), Some(&Precondition::AtRevision(vec![0]))).await,
            Err(StoreError::PreconditionFailed { current: 1, .. })
        ));
        assert_eq!(store.revision().await.unwrap(), 1, "refused writes leave the revision alone");
        assert!(!changes.has_changed().unwrap());

        store.create_backend(&operator(), &name("p"), &backend("b")).await.unwrap();
        store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![], limits: Limits::default() }).await.unwrap();
        store.delete_key(&operator(), &name("k"), None).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 4);
        assert_eq!(store.audit_log(0, 100).await.unwrap().len(), 4);
    }
}

on_both_databases! {
    /// Backends keep the order they were given and appended in; a pool's revision follows
    /// changes to its backends.
    async fn backends_keep_their_order_and_touch_their_pool(db: TestDatabase) {
        let store = open(&db).await;
        store.create_pool(&operator(), &pool("p", &["c", "a"])).await.unwrap();
        let added = store.create_backend(&operator(), &name("p"), &backend("b")).await.unwrap();
        let read = store.get_pool(&name("p")).await.unwrap();
        let order: Vec<_> = read.value.backends.iter().map(|b| b.name.to_string()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        assert_eq!(read.revision, added.revision);
        let listed = store.list_backends(&name("p")).await.unwrap();
        assert_eq!(listed.iter().map(|b| b.revision).collect::<Vec<_>>(), [1, 1, 2]);
    }
}

on_both_databases! {
    /// Replacing a pool keeps its backends unless a new list is given.
    async fn replace_pool_keeps_or_replaces_backends(db: TestDatabase) {
        let store = open(&db).await;
        store.create_pool(&operator(), &pool("p", &["a", "b"])).await.unwrap();
        let kept = store.replace_pool(&operator(), &name("p"), PoolReplacement {
            strategy: Strategy::Weighted, retry: Default::default(), backends: None, price: None,
        }, None).await.unwrap();
        assert_eq!(kept.value.strategy, Strategy::Weighted);
        assert_eq!(kept.value.backends.len(), 2);
        let replaced = store.replace_pool(&operator(), &name("p"), PoolReplacement {
            strategy: Strategy::Weighted, retry: Default::default(), backends: Some(vec![backend("z")]), price: None,
        }, Some(&Precondition::AtRevision(vec![kept.revision]))).await.unwrap();
        assert_eq!(replaced.value.backends, vec![backend("z")]);
        assert_eq!(store.get_pool(&name("p")).await.unwrap(), replaced);
    }
}

on_both_databases! {
    /// The snapshot holds everything as of one revision, and survives a reconnect.
    async fn snapshot_reflects_the_store_and_persists(db: TestDatabase) {
        let store = open(&db).await;
        store.create_pool(&operator(), &pool("b-pool", &["x"])).await.unwrap();
        store.create_pool(&operator(), &pool("a-pool", &[])).await.unwrap();
        let key = store.create_key(&operator(), NewClientKey { id: name("team"), pools: vec![name("a-pool")], limits: Limits::default() }).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, 3);
        assert_eq!(snapshot.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a-pool", "b-pool"]);
        assert_eq!(snapshot.client_keys.len(), 1);
        assert!(snapshot.client_keys[0].hash.verify(&key.secret));
        snapshot.validate().unwrap();
        drop(store);

        let reopened = open(&db).await;
        assert_eq!(reopened.last_known_revision(), 3, "the revision is read at start");
        assert_eq!(reopened.snapshot().await.unwrap(), snapshot, "restarting re-applies no migration and loses nothing");
    }
}

on_both_databases! {
    /// Client keys: unknown pools are refused; the stored record never holds the key.
    async fn client_keys_reference_existing_pools(db: TestDatabase) {
        let store = open(&db).await;
        store.create_pool(&operator(), &pool("p", &[])).await.unwrap();
        let refused = store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![name("p"), name("q")], limits: Limits::default() }).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { ref field, .. }) if field == "pools[1]"));
        let created = store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![name("p")], limits: Limits::default() }).await.unwrap();
        let record = store.get_key(&name("k")).await.unwrap();
        assert_eq!(record, created.record);
        assert!(!format!("{record:?}").contains(&created.secret));
        assert!(matches!(store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![], limits: Limits::default() }).await,
            Err(StoreError::AlreadyExists(_))));
    }
}

on_both_databases! {
    /// A database whose applied migrations differ from this build's is refused at start.
    async fn refuses_to_start_on_migration_drift(db: TestDatabase) {
        drop(open(&db).await);
        let mut conn = db.connect().await;
        // The first migration stands for all of them.
        let original: Vec<u8> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 20261125000000")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let expect_drift = |outcome: Result<Store, StoreError>| {
            let error = outcome.err().expect("drift is refused");
            assert!(matches!(error, StoreError::MigrationDrift(_)), "{error:?}");
            assert!(error.to_string().contains("migration drift"), "{error}");
        };

        // An applied migration was edited after the fact.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 20261125000000")
            .bind(vec![0u8; 48])
            .execute(&mut conn)
            .await
            .unwrap();
        expect_drift(Store::connect(db.url(), StoreOptions::default()).await);

        // The database was migrated by a newer build than this one.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 20261125000000")
            .bind(original)
            .execute(&mut conn)
            .await
            .unwrap();
        open(&db).await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from a newer build', TRUE, $1, 0)",
        )
        .bind(vec![0u8; 48])
        .execute(&mut conn)
        .await
        .unwrap();
        expect_drift(Store::connect(db.url(), StoreOptions::default()).await);
    }
}

/// Two stores on one Postgres database (two control-plane replicas) see each other's writes
/// and never hand out a revision twice.
#[tokio::test]
async fn replicas_on_one_postgres_share_revisions() {
    let db = TestDatabase::postgres().await;
    let (a, b) = tokio::join!(open(&db), open(&db));
    let writes = (0..10).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            store
                .create_pool(&operator(), &pool(&format!("p{i}"), &["x"]))
                .await
                .unwrap()
                .revision
        })
    });
    let mut revisions = Vec::new();
    for write in writes {
        revisions.push(write.await.unwrap());
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=10).collect::<Vec<_>>());
    assert_eq!(a.snapshot().await.unwrap(), b.snapshot().await.unwrap());
}

on_both_databases! {
    /// Prices and limits are stored, read back and put in the snapshot; updating a key's pools
    /// and limits keeps its secret, moves its ETag and is audited.
    async fn limits_and_prices_round_trip_and_keys_update_in_place(db: TestDatabase) {
        let store = open(&db).await;
        let price: Price = serde_json::from_value(serde_json::json!(
            {"input_per_1m_usd": 2.5, "output_per_1m_usd": 10, "cached_input_per_1m_usd": 1.25})).unwrap();
        let mut gpt = pool("gpt-4o", &["a"]);
        gpt.price = Some(price);
        assert_eq!(store.create_pool(&operator(), &gpt).await.unwrap().value, gpt);
        assert_eq!(store.get_pool(&name("gpt-4o")).await.unwrap().value.price, Some(price));
        store.create_pool(&operator(), &priced("mini", &[])).await.unwrap();

        let wanted = limits(serde_json::json!({
            "requests_per_minute": 600, "token_quota": {"tokens": 50_000_000, "period": "month"},
            "budget": {"usd": 500.25, "period": "month"},
            "pools": {"gpt-4o": {"tokens_per_minute": 100_000}}}));
        let created = store.create_key(&operator(), new_key("team", &[], wanted.clone())).await.unwrap();
        assert_eq!(created.revision, 3);
        assert_eq!(created.record.revision, 3);
        let read = store.get_key(&name("team")).await.unwrap();
        assert_eq!(read, created.record);
        assert_eq!(read.key.limits, wanted);
        assert_eq!(read.key.limits.budget.unwrap().usd.micros(), 500_250_000);

        let changed = limits(serde_json::json!({"pools": {"mini": {"budget": {"usd": 1, "period": "day"}}}}));
        let update = KeyUpdate { pools: vec![name("mini")], limits: changed.clone() };
        let stale = Precondition::AtRevision(vec![2]);
        assert!(matches!(
            store.update_key(&operator(), &name("team"), update.clone(), Some(&stale)).await,
            Err(StoreError::PreconditionFailed { current: 3, .. })
        ));
        assert!(matches!(
            store.update_key(&operator(), &name("nope"), update.clone(), None).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.revision().await.unwrap(), 3, "refused updates change nothing");
        let updated = store
            .update_key(&operator(), &name("team"), update, Some(&Precondition::AtRevision(vec![3])))
            .await
            .unwrap();
        assert_eq!(updated.revision, 4);
        assert_eq!(updated.key.pools, [name("mini")]);
        assert_eq!(updated.key.limits, changed);
        assert_eq!(updated.key.hash, created.record.key.hash, "the secret never changes");
        assert_eq!((updated.hint.as_str(), updated.created_at_unix_ms), (created.record.hint.as_str(), created.record.created_at_unix_ms));
        assert_eq!(store.get_key(&name("team")).await.unwrap(), updated);
        let audit = store.audit_log(0, 100).await.unwrap();
        let last = audit.last().unwrap();
        assert_eq!((last.revision, last.action.as_str(), last.resource.as_str()), (4, "key.update", "keys/team"));

        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, 4);
        assert_eq!(snapshot.pools[0].price, Some(price));
        assert_eq!(snapshot.client_keys[0].limits, changed);
        assert!(snapshot.client_keys[0].hash.verify(&created.secret));
        snapshot.validate().unwrap();
        drop(store);
        assert_eq!(open(&db).await.snapshot().await.unwrap(), snapshot, "limits and prices persist");
    }
}

on_both_databases! {
    /// A budget needs a price on every pool it covers, checked against the pools as they are
    /// inside the write: key writes and pool writes that would break it are refused.
    async fn budgets_need_priced_pools_whichever_side_changes(db: TestDatabase) {
        let store = open(&db).await;
        store.create_pool(&operator(), &priced("paid", &[])).await.unwrap();
        store.create_pool(&operator(), &pool("free", &[])).await.unwrap();
        let budget = || limits(serde_json::json!({"budget": {"usd": 5, "period": "day"}}));

        let refused = store.create_key(&operator(), new_key("everywhere", &[], budget())).await;
        assert!(matches!(refused, Err(StoreError::Invalid(ref e))
            if e.field == "limits.budget" && e.message.contains("pool 'free'")), "{refused:?}");
        let unknown = store.create_key(&operator(), new_key("k", &[],
            limits(serde_json::json!({"pools": {"gone": {"requests_per_minute": 5}}})))).await;
        assert!(matches!(unknown, Err(StoreError::InvalidReference { ref field, .. }) if field == "limits.pools.gone"), "{unknown:?}");
        let other = store.create_key(&operator(), new_key("k", &["paid"],
            limits(serde_json::json!({"pools": {"free": {"requests_per_minute": 5}}})))).await;
        assert!(matches!(other, Err(StoreError::Invalid(ref e)) if e.field == "limits.pools.free"), "{other:?}");
        assert_eq!(store.revision().await.unwrap(), 2);

        store.create_key(&operator(), new_key("paid-only", &["paid"], budget())).await.unwrap();
        // Taking the price away from the pool the budget covers is refused, naming the key.
        let unpriced = PoolReplacement { strategy: Strategy::RoundRobin, retry: RetryPolicy::default(), backends: None, price: None };
        let refused = store.replace_pool(&operator(), &name("paid"), unpriced.clone(), None).await;
        assert!(matches!(refused, Err(StoreError::Invalid(ref e))
            if e.field == "price" && e.message.contains("key 'paid-only'")), "{refused:?}");
        // Unpriced pools the key may not use are fine.
        store.replace_pool(&operator(), &name("free"), unpriced.clone(), None).await.unwrap();
        store.create_pool(&operator(), &pool("new-free", &[])).await.unwrap();

        // A key-wide budget on every pool: no unpriced pool may appear.
        store.delete_pool(&operator(), &name("free"), None).await.unwrap();
        store.delete_pool(&operator(), &name("new-free"), None).await.unwrap();
        store.create_key(&operator(), new_key("everywhere", &[], budget())).await.unwrap();
        let refused = store.create_pool(&operator(), &pool("free", &[])).await;
        assert!(matches!(refused, Err(StoreError::Invalid(ref e))
            if e.field == "price" && e.message.contains("key 'everywhere'")), "{refused:?}");
        store.create_pool(&operator(), &priced("free", &[])).await.unwrap();
        let revision = store.revision().await.unwrap();
        assert!(store.get_pool(&name("free")).await.unwrap().value.price.is_some());
        store.snapshot().await.unwrap().validate().unwrap();
        assert_eq!(revision, 9);
    }
}

on_both_databases! {
    /// Deleting a pool that a key's `limits.pools` names is allowed, as for `pools`: the key
    /// keeps the name (the snapshot stays valid) until an operator changes the key.
    async fn deleting_a_pool_leaves_key_references_as_they_are(db: TestDatabase) {
        let store = open(&db).await;
        store.create_pool(&operator(), &pool("p", &[])).await.unwrap();
        let per_pool = limits(serde_json::json!({"pools": {"p": {"requests_per_minute": 5}}}));
        store.create_key(&operator(), new_key("k", &["p"], per_pool.clone())).await.unwrap();
        store.delete_pool(&operator(), &name("p"), None).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.client_keys[0].limits, per_pool);
        snapshot.validate().unwrap();
        let again = store.update_key(&operator(), &name("k"), KeyUpdate { pools: vec![], limits: per_pool }, None).await;
        assert!(matches!(again, Err(StoreError::InvalidReference { ref field, .. }) if field == "limits.pools.p"), "{again:?}");
        let cleared = store.update_key(&operator(), &name("k"), KeyUpdate { pools: vec![], limits: Limits::default() }, None).await.unwrap();
        assert!(cleared.key.limits.is_empty());
        store.delete_key(&operator(), &name("k"), Some(&Precondition::AtRevision(vec![cleared.revision]))).await.unwrap();
    }
}

on_both_databases! {
    /// A database made before the quotas migration, with a pool and a key in it, is migrated at
    /// start and still loads: no price, no limits, the key's ETag is the revision that made it,
    /// and its secret still verifies.
    async fn rows_from_before_the_quotas_migration_still_load(db: TestDatabase) {
        let folder = if db.is_postgres() { "migrations/postgres" } else { "migrations/sqlite" };
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let migrator = sqlx::migrate::Migrator::new(migrations).await.unwrap();
        // SQLite makes the file only when asked to.
        sqlx::any::install_default_drivers();
        let url = if db.is_postgres() { db.url().to_owned() } else { format!("{}?mode=rwc", db.url()) };
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
        migrator.run_to(20261125000000, &mut conn).await.unwrap();
        let hash = KeyHash::new("sk-sluice-old");
        for (statement, binds) in [
            ("UPDATE config_revision SET revision = 2 WHERE id = 1", vec![]),
            ("INSERT INTO pools (name, strategy, retry, updated_revision) VALUES ('old', 'weighted', $1, 1)",
                vec![serde_json::to_string(&RetryPolicy::default()).unwrap()]),
            ("INSERT INTO backends (pool, name, position, spec, updated_revision) VALUES ('old', 'a', 0, $1, 1)",
                vec![backend_json("a").to_string()]),
        ] {
            let mut query = sqlx::query(statement);
            for bind in binds {
                query = query.bind(bind);
            }
            query.execute(&mut conn).await.unwrap();
        }
        sqlx::query("INSERT INTO client_keys (id, pools, salt, digest, hint, created_at, created_revision) \
                     VALUES ('old-key', '[\"old\"]', $1, $2, 'abcd', 0, 2)")
            .bind(hash.salt().to_vec())
            .bind(hash.digest().to_vec())
            .execute(&mut conn)
            .await
            .unwrap();
        drop(conn);

        let store = open(&db).await;
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, 2);
        assert_eq!(snapshot.pools[0].strategy, Strategy::Weighted);
        assert_eq!(snapshot.pools[0].price, None);
        assert_eq!(snapshot.pools[0].backends, [backend("a")]);
        assert!(snapshot.client_keys[0].limits.is_empty());
        assert!(snapshot.client_keys[0].hash.verify("sk-sluice-old"));
        snapshot.validate().unwrap();
        assert_eq!(store.get_key(&name("old-key")).await.unwrap().revision, 2);
        let updated = store.update_key(&operator(), &name("old-key"),
            KeyUpdate { pools: vec![name("old")], limits: limits(serde_json::json!({"requests_per_minute": 5})) },
            Some(&Precondition::AtRevision(vec![2]))).await.unwrap();
        assert_eq!(updated.revision, 3);
    }
}
