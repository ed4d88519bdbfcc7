//! A fresh database per test: a temporary SQLite file, or a new Postgres database that is
//! dropped when the test ends.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;

/// Where tests find Postgres; the test script starts one on 127.0.0.1:5432 when needed.
pub fn postgres_server_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub enum TestDatabase {
    Sqlite { dir: TempDir, url: String },
    Postgres { name: String, url: String },
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sluice.db", dir.path().display());
        Self::Sqlite { dir, url }
    }

    pub async fn postgres() -> Self {
        let name = format!("sluice_test_{}", random_suffix());
        let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_server_url()))
            .await
            .expect("Postgres is reachable (run the README's test command, which starts it)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("{}/{name}", postgres_server_url());
        Self::Postgres { name, url }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }

    /// The same database under a different URL, e.g. through a [`super::relay::TcpRelay`].
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        match self {
            Self::Postgres { name, .. } => format!("postgres://postgres@{addr}/{name}"),
            Self::Sqlite { url, .. } => url.clone(),
        }
    }

    /// A plain connection for tests that inspect or tamper with the database directly.
    pub async fn connect(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(self.url()).await.unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Self::Postgres { name, .. } = self else {
            return;
        };
        let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        // Drop runs outside any async context we can rely on; use a private runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin =
                    PgConnection::connect(&format!("{}/postgres", postgres_server_url()))
                        .await
                        .ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop test database {name}");
        }
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:016x}",
        RandomState::new().hash_one((nanos, std::process::id()))
    )
}
