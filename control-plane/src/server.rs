//! Assembles the control plane: config store, admin API, listeners.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::admin::{self, AdminAuth, AdminAuthError, AdminMetrics, AdminState};
use crate::proxies::ProxyRegistry;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    pub admin_addr: SocketAddr,
    /// Accepted admin bearer tokens; more than one during a rotation.
    pub admin_tokens: Vec<String>,
    /// Serve the admin API without authentication (loopback addresses only).
    pub insecure_no_admin_auth: bool,
    pub store: StoreOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    AdminAuth(#[from] AdminAuthError),
    #[error(
        "--insecure-no-admin-auth is allowed only on a loopback --admin-addr, not {0}; \
         configure SLUICE_ADMIN_TOKEN instead"
    )]
    InsecureOffLoopback(SocketAddr),
    #[error("cannot open the config store")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A control plane with its store open and its listener bound, ready to serve.
pub struct ControlPlane {
    store: Store,
    admin_listener: TcpListener,
    admin_router: Router,
}

impl ControlPlane {
    pub async fn bind(config: ControlPlaneConfig) -> Result<Self, StartError> {
        // Refuse bad auth settings before touching the database.
        let auth = if config.insecure_no_admin_auth {
            if !config.admin_addr.ip().is_loopback() {
                return Err(StartError::InsecureOffLoopback(config.admin_addr));
            }
            tracing::warn!("admin API authentication is OFF (--insecure-no-admin-auth)");
            AdminAuth::disabled()
        } else {
            AdminAuth::with_tokens(&config.admin_tokens)?
        };
        let store = Store::connect(&config.database_url, config.store.clone()).await?;
        let admin_listener = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.admin_addr,
                source,
            })?;
        let state = AdminState {
            store: store.clone(),
            proxies: ProxyRegistry::default(),
            metrics: std::sync::Arc::new(AdminMetrics::new()),
        };
        Ok(Self {
            store,
            admin_listener,
            admin_router: admin::router(state, auth),
        })
    }

    /// The bound admin address (useful with port 0).
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        tracing::info!(
            admin.addr = %self.admin_addr()?,
            database = ?self.store.kind(),
            revision = self.store.last_known_revision(),
            "control plane serving"
        );
        axum::serve(self.admin_listener, self.admin_router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
