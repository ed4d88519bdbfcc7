//! The config store's contract, run against SQLite and a fresh Postgres database alike.

mod support;

use sluice_control_plane::store::{
    Actor, NewClientKey, PoolReplacement, Precondition, Store, StoreError, StoreOptions,
};
use sluice_model::{Backend, Name, Pool, Strategy};
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
        store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![] }).await.unwrap();
        store.delete_key(&operator(), &name("k")).await.unwrap();
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
            strategy: Strategy::Weighted, retry: Default::default(), backends: None,
        }, None).await.unwrap();
        assert_eq!(kept.value.strategy, Strategy::Weighted);
        assert_eq!(kept.value.backends.len(), 2);
        let replaced = store.replace_pool(&operator(), &name("p"), PoolReplacement {
            strategy: Strategy::Weighted, retry: Default::default(), backends: Some(vec![backend("z")]),
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
        let key = store.create_key(&operator(), NewClientKey { id: name("team"), pools: vec![name("a-pool")] }).await.unwrap();
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
        let refused = store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![name("p"), name("q")] }).await;
        assert!(matches!(refused, Err(StoreError::InvalidReference { ref field, .. }) if field == "pools[1]"));
        let created = store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![name("p")] }).await.unwrap();
        let record = store.get_key(&name("k")).await.unwrap();
        assert_eq!(record, created.record);
        assert!(!format!("{record:?}").contains(&created.secret));
        assert!(matches!(store.create_key(&operator(), NewClientKey { id: name("k"), pools: vec![] }).await,
            Err(StoreError::AlreadyExists(_))));
    }
}

on_both_databases! {
    /// A database whose applied migrations differ from this build's is refused at start.
    async fn refuses_to_start_on_migration_drift(db: TestDatabase) {
        drop(open(&db).await);
        let mut conn = db.connect().await;
        let original: Vec<u8> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let expect_drift = |outcome: Result<Store, StoreError>| {
            let error = outcome.err().expect("drift is refused");
            assert!(matches!(error, StoreError::MigrationDrift(_)), "{error:?}");
            assert!(error.to_string().contains("migration drift"), "{error}");
        };

        // An applied migration was edited after the fact.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1")
            .bind(vec![0u8; 48])
            .execute(&mut conn)
            .await
            .unwrap();
        expect_drift(Store::connect(db.url(), StoreOptions::default()).await);

        // The database was migrated by a newer build than this one.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1")
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
