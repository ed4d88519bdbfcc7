//! [`FakeKeyVault`]: the Key Vault secrets REST subset the real `SecretClient` uses, for many
//! vaults on one HTTPS server (told apart by `Host`), with Key Vault's challenge-based auth
//! against [`super::FakeIdentity`]'s tokens. The HTTP side is in [`super::vault_endpoint`],
//! the data in [`super::vault_store`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::FakeAzureError;
use super::https::HttpsServer;
use super::identity::{FakeIdentity, IdentityShared};
use super::tls::TestCa;
use super::vault_endpoint;
use super::vault_store::{KeyVaultError, VaultStore};

/// The scope a Key Vault token must be issued for.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// The resource named in Key Vault's `WWW-Authenticate` challenge.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Vault hosts are `{vault}.` + this.
pub const VAULT_DOMAIN: &str = "vault.azure.net";
/// `api-version`s the fake accepts: the SDK's (`azure_security_keyvault_secrets` 1.0.1 sends
/// `2025-07-01`) and the 7.x versions other clients still send. Others get 400
/// `BadParameter`, as from the real service.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-07-01"];
/// How many requests [`FakeKeyVault::requests`] remembers.
pub const RECORDED_VAULT_REQUESTS: usize = 1000;

/// One request as the fake Key Vault saw it. Never holds a secret value or a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The vault the `Host` named, if it named one.
    pub vault: Option<String>,
    /// Whether an `Authorization: Bearer …` header came with it (valid or not).
    pub bearer_token: bool,
    /// The status the fake answered.
    pub status: u16,
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    count: AtomicU64,
    recent: Mutex<VecDeque<VaultRequest>>,
}

impl RequestLog {
    pub fn record(&self, request: VaultRequest) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.lock();
        if recent.len() == RECORDED_VAULT_REQUESTS {
            recent.pop_front();
        }
        recent.push_back(request);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<VaultRequest>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// State shared by the endpoint and the handle.
#[derive(Debug)]
pub(crate) struct VaultShared {
    pub store: VaultStore,
    pub identity: Arc<IdentityShared>,
    pub down: AtomicBool,
    pub log: RequestLog,
}

/// A running fake Key Vault. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeKeyVault {
    server: HttpsServer,
    shared: Arc<VaultShared>,
}

impl FakeKeyVault {
    /// Serves every `*.vault.azure.net` vault on one ephemeral loopback port, accepting the
    /// tokens `identity` issues for [`VAULT_SCOPE`].
    pub async fn start(ca: &TestCa, identity: &FakeIdentity) -> Result<Self, FakeAzureError> {
        let tls = ca.server_config(&[&format!("*.{VAULT_DOMAIN}")])?;
        let shared = Arc::new(VaultShared {
            store: VaultStore::default(),
            identity: identity.shared(),
            down: AtomicBool::new(false),
            log: RequestLog::default(),
        });
        let server = HttpsServer::start(tls, vault_endpoint::router(Arc::clone(&shared))).await?;
        Ok(Self { server, shared })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `https://{vault}.vault.azure.net:PORT`, the endpoint to give `SecretClient::new`.
    pub fn vault_url(&self, vault: &str) -> String {
        format!("https://{vault}.{VAULT_DOMAIN}:{}", self.port())
    }

    /// `https://{vault}.vault.azure.net:PORT` with `{vault}` left in, for configs that take
    /// a URL template.
    pub fn url_template(&self) -> String {
        self.vault_url("{vault}")
    }

    /// Creates an empty vault (a no-op if it exists), so lookups in it answer
    /// `SecretNotFound` rather than an unknown-vault 404.
    pub fn create_vault(&self, vault: &str) -> Result<(), KeyVaultError> {
        self.shared.store.create_vault(vault).map(drop)
    }

    /// Stores `value` as a new version that becomes the latest (creating the vault and the
    /// secret as needed) and returns the version id. Calling it again is how tests rotate.
    pub fn set_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
    ) -> Result<String, KeyVaultError> {
        self.shared.store.set_secret(vault, name, value)
    }

    /// Disables one version: reading it (or "latest", if it is the latest) gets 403
    /// `Forbidden` / `SecretDisabled`, as in Key Vault.
    pub fn disable_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<(), KeyVaultError> {
        self.shared.store.set_enabled(vault, name, version, false)
    }

    pub fn enable_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<(), KeyVaultError> {
        self.shared.store.set_enabled(vault, name, version, true)
    }

    /// While down, every request gets 503 with a Key Vault JSON error (an outage).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Requests received since start or [`FakeKeyVault::reset_requests`].
    pub fn request_count(&self) -> u64 {
        self.shared.log.count.load(Ordering::Relaxed)
    }

    /// The most recent requests (up to [`RECORDED_VAULT_REQUESTS`]), oldest first.
    pub fn requests(&self) -> Vec<VaultRequest> {
        self.shared.log.lock().iter().cloned().collect()
    }

    /// Forgets recorded requests and zeroes the counter.
    pub fn reset_requests(&self) {
        let mut recent = self.shared.log.lock();
        recent.clear();
        self.shared.log.count.store(0, Ordering::Relaxed);
    }
}
