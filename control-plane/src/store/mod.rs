//! The config store: pools, backends, client keys and the audit log, on Postgres or SQLite.
//!
//! Both databases run the same SQL through sqlx's `Any` driver (placeholders are `$N`, types
//! are limited to integers, text and bytes). Every write runs in one transaction that first
//! bumps the single config revision row: that row lock serialises writers, so revisions are
//! committed in order and each change is visible under exactly one revision.

mod audit;
mod backends;
mod error;
mod fleet;
mod keys;
mod pools;
mod sessions;
mod snapshot;
mod write;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use tokio::sync::watch;

pub use audit::AuditEntry;
pub use error::{Resource, StoreError};
pub use fleet::{
    BackendSeen, BackendState, Disconnect, FleetBatch, NackRecord, ProxyRecord, Pruned, TrafficRow,
    UsageCounts, UsageFilter, UsageRow,
};
pub use keys::{ClientKeyRecord, CreatedClientKey, KeyUpdate, NewClientKey};
pub use pools::{PoolReplacement, Stored};
pub use sessions::ConsoleSession;
pub use write::NOTIFY_CHANNEL;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Which database a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    Sqlite,
}

impl DatabaseKind {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(StoreError::UnsupportedUrl(
                "expected postgres://… or sqlite://…".into(),
            ))
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Postgres => &POSTGRES_MIGRATIONS,
            Self::Sqlite => &SQLITE_MIGRATIONS,
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Upper bound for any one store operation, connection acquisition included.
    pub timeout: Duration,
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1500),
            max_connections: 8,
        }
    }
}

/// An identity recorded in the audit log: an admin token id, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

/// An `If-Match` condition for a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: *`: the resource must exist.
    Exists,
    /// The resource must still be at one of these revisions (its ETags).
    AtRevision(Vec<u64>),
}

/// The resource must exist (at `current`) and satisfy the precondition, if one was given.
pub(crate) fn require(
    precondition: Option<&Precondition>,
    resource: &Resource,
    current: Option<u64>,
) -> Result<(), StoreError> {
    let current = current.ok_or_else(|| StoreError::NotFound(resource.clone()))?;
    precondition.map_or(Ok(()), |p| p.check(resource, current))
}

impl Precondition {
    fn check(&self, resource: &Resource, current: u64) -> Result<(), StoreError> {
        match self {
            Self::AtRevision(revisions) if !revisions.contains(&current) => {
                Err(StoreError::PreconditionFailed {
                    resource: resource.clone(),
                    current,
                })
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: AnyPool,
    kind: DatabaseKind,
    /// Kept for the Postgres `LISTEN` connection; never logged (it may hold a password).
    url: std::sync::Arc<str>,
    timeout: Duration,
    revision: watch::Sender<u64>,
}

impl Store {
    /// Connects, applies pending migrations and refuses to start on migration drift.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = DatabaseKind::of_url(url)?;
        let url = match kind {
            DatabaseKind::Postgres => url.to_owned(),
            DatabaseKind::Sqlite => prepare_sqlite_url(url)?,
        };
        // Every connection is opened up front and kept: opening one (a TLS handshake with
        // Postgres) on the way to publishing a change held a whole replica's proxies back
        // by about 100 ms whenever a burst of fleet writes and snapshot reads grew the pool.
        let db = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.max_connections)
            .acquire_timeout(options.timeout)
            .connect(&url)
            .await?;
        // Postgres takes an advisory lock here, so replicas starting together don't race.
        kind.migrator().run(&db).await.map_err(|e| match e {
            MigrateError::VersionMissing(_) | MigrateError::VersionMismatch(_) => {
                StoreError::MigrationDrift(e)
            }
            other => StoreError::Migrate(other),
        })?;
        let store = Self {
            db,
            kind,
            url: url.into(),
            timeout: options.timeout,
            revision: watch::Sender::new(0),
        };
        store.revision.send_replace(store.revision().await?);
        Ok(store)
    }

    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The latest revision this store committed or read; changes are pushed to subscribers.
    pub fn watch_revision(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The latest revision this store committed or read, without asking the database.
    pub fn last_known_revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// The database URL, for connections outside the pool (Postgres `LISTEN`).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Notes a revision committed elsewhere (another replica); subscribers hear of it if it
    /// is newer than what this store knew.
    pub fn observe_revision(&self, revision: u64) {
        self.revision.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    }

    /// Reads the revision from the database and notes it: catches up after missed
    /// notifications.
    pub async fn refresh_revision(&self) -> Result<u64, StoreError> {
        let revision = self.revision().await?;
        self.observe_revision(revision);
        Ok(revision)
    }

    /// The current revision, read from the database.
    pub async fn revision(&self) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut conn = self.db.acquire().await?;
            write::read_revision(&mut conn).await
        })
        .await
    }

    /// Round-trips to the database; used by readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            sqlx::query("SELECT 1").execute(&self.db).await?;
            Ok(())
        })
        .await
    }

    /// Bounds an operation so a database that stopped answering turns into a prompt error.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)))
    }

    /// Runs `read` until the revision is the same before and after it, so the data it
    /// returns belongs to exactly that revision even under READ COMMITTED isolation.
    async fn consistent_read<T, F, Fut>(&self, read: F) -> Result<(u64, T), StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        const ATTEMPTS: usize = 5;
        self.bounded(async {
            let mut before = self.revision().await?;
            for _ in 1..ATTEMPTS {
                let value = read().await?;
                let after = self.revision().await?;
                if after == before {
                    return Ok((after, value));
                }
                before = after;
            }
            // Writes kept landing; the last read is still a valid state of the data.
            Ok((before, read().await?))
        })
        .await
    }
}

/// Makes `sqlite://path` create its file (and folder) on first start.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path.contains(":memory:") {
        return Err(StoreError::UnsupportedUrl(
            "SQLite needs a file path, as in sqlite://./.sluice/sluice.db".into(),
        ));
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::UnsupportedUrl(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let query = if query.split('&').any(|kv| kv.starts_with("mode=")) {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Revisions are `BIGINT` columns; they never go negative.
pub(crate) fn to_revision(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_their_file() {
        let dir = std::env::temp_dir().join(format!("sluice-url-{}", std::process::id()));
        let url = format!("sqlite://{}/sub/x.db", dir.display());
        assert_eq!(
            prepare_sqlite_url(&url).unwrap(),
            format!("sqlite://{}/sub/x.db?mode=rwc", dir.display())
        );
        assert!(dir.join("sub").is_dir());
        assert!(
            prepare_sqlite_url("sqlite://x.db?mode=ro")
                .unwrap()
                .ends_with("?mode=ro")
        );
        assert!(prepare_sqlite_url("sqlite::memory:").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_postgres_and_sqlite_urls_are_accepted() {
        assert_eq!(
            DatabaseKind::of_url("postgres://x/y").unwrap(),
            DatabaseKind::Postgres
        );
        assert_eq!(
            DatabaseKind::of_url("sqlite://x.db").unwrap(),
            DatabaseKind::Sqlite
        );
        assert!(DatabaseKind::of_url("mysql://x/y").is_err());
    }

    #[test]
    fn preconditions_compare_revisions() {
        let pool = Resource::Pool("p".into());
        assert!(Precondition::Exists.check(&pool, 4).is_ok());
        assert!(Precondition::AtRevision(vec![3, 4]).check(&pool, 4).is_ok());
        assert!(matches!(
            Precondition::AtRevision(vec![3]).check(&pool, 4),
            Err(StoreError::PreconditionFailed { current: 4, .. })
        ));
    }
}
