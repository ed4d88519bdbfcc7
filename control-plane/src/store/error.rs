use std::fmt;
use std::time::Duration;

/// What a store operation is about, for error messages: `pool 'gpt-4o'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Pool(String),
    Backend { pool: String, name: String },
    ClientKey(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pool(name) => write!(f, "pool '{name}'"),
            Self::Backend { pool, name } => write!(f, "backend '{name}' in pool '{pool}'"),
            Self::ClientKey(id) => write!(f, "client key '{id}'"),
        }
    }
}

impl Resource {
    /// The resource's path under `/api/v1`, as recorded in the audit log.
    pub fn path(&self) -> String {
        match self {
            Self::Pool(name) => format!("pools/{name}"),
            Self::Backend { pool, name } => format!("pools/{pool}/backends/{name}"),
            Self::ClientKey(id) => format!("keys/{id}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} does not exist")]
    NotFound(Resource),
    #[error("{0} already exists")]
    AlreadyExists(Resource),
    #[error("{resource} changed since you read it: it is at revision {current}")]
    PreconditionFailed { resource: Resource, current: u64 },
    #[error("{message}")]
    InvalidReference { field: String, message: String },
    /// The change would break a rule that spans resources, e.g. a key's budget covering a
    /// pool without a price; `field` is in the request's terms.
    #[error("{0}")]
    Invalid(sluice_model::FieldError),
    #[error("the config database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the config database is unreachable")]
    Unavailable(#[source] sqlx::Error),
    #[error("stored {what} could not be read back")]
    Corrupt {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("config database error")]
    Database(#[source] sqlx::Error),
    #[error(
        "the database's migrations do not match this build of Sluice (migration drift); \
         refusing to start"
    )]
    MigrationDrift(#[source] sqlx::migrate::MigrateError),
    #[error("could not apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// Whether the database could not be reached at all, as opposed to refusing a request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unavailable(_))
    }

    pub(crate) fn corrupt(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Corrupt {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let connection_lost = match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 is "connection exception"; 57P0x are server shutdowns.
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
            _ => false,
        };
        if connection_lost {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}
