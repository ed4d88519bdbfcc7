//! A fake Azure for tests: Entra ID's token endpoint and Key Vault secrets, over real HTTPS,
//! driven by the *real* Azure SDK clients.
//!
//! [`FakeAzure`] starts one of each on ephemeral loopback ports, behind a test CA. Its
//! [`FakeAzure::client_options`] route any SDK client to them while keeping real host names,
//! so the SDK's HTTPS-only rule, Key Vault's auth challenge and its resource check all run
//! exactly as against Azure:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use azure_core::credentials::Secret;
//! use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
//! use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
//! use sluice_testkit::azure::FakeAzure;
//!
//! let fake = FakeAzure::start().await?;
//! fake.key_vault().set_secret("myvault", "api-key", "k1")?;
//! let credential = ClientSecretCredential::new(
//!     &fake.tenant_id(),
//!     fake.client_id(),
//!     Secret::new(fake.client_secret()),
//!     Some(ClientSecretCredentialOptions { client_options: fake.client_options() }),
//! )?;
//! let client = SecretClient::new(
//!     &fake.vault_url("myvault"),
//!     credential,
//!     Some(SecretClientOptions { client_options: fake.client_options(), ..Default::default() }),
//! )?;
//! let secret = client.get_secret("api-key", None).await?.into_model()?;
//! assert_eq!(secret.value.as_deref(), Some("k1"));
//! # Ok(())
//! # }
//! ```

mod https;
mod identity;
mod keyvault;
mod random;
mod tls;
mod token_endpoint;
mod tokens;
mod transport;
mod vault_endpoint;
mod vault_store;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use azure_core::http::{ClientOptions, Transport};
use thiserror::Error;

pub use https::HttpsServer;
pub use identity::{
    FAKE_AUTHORITY_HOST_NAME, FakeIdentity, IdentityError, IdentitySettings, MAX_TOKEN_LIFETIME,
};
pub use keyvault::{
    FakeKeyVault, RECORDED_VAULT_REQUESTS, SUPPORTED_API_VERSIONS, VAULT_DOMAIN, VAULT_RESOURCE,
    VAULT_SCOPE, VaultRequest,
};
pub use tls::{ServerPem, TestCa, TlsError};
pub use tokens::IssuedToken;
pub use transport::{LoopbackResolver, fake_client_options, loopback_client};
pub use vault_store::KeyVaultError;

/// What [`FakeAzure::write_federated_token_file`] writes: shaped like a Kubernetes service
/// account token (header, claims for `api://AzureADTokenExchange`, signature), signed by
/// nobody. The fake identity only requires a non-empty assertion.
pub const FAKE_FEDERATED_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2Utb2lkYy1rZXkiLCJ0eXAiOiJKV1QifQ.\
eyJhdWQiOlsiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UiXSwiaXNzIjoiaHR0cHM6Ly9vaWRjLmZha2UudGVzdC8iLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2x1aWNlOnNsdWljZSJ9.\
ZmFrZS1zaWduYXR1cmU";

/// The file name AKS's workload identity webhook mounts the token as.
pub const FEDERATED_TOKEN_FILE_NAME: &str = "azure-identity-token";

/// A fake could not be started.
#[derive(Debug, Error)]
pub enum FakeAzureError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("binding or serving a fake Azure server failed: {0}")]
    Io(#[from] io::Error),
    #[error("building the loopback HTTP client failed: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// One test CA, one [`FakeIdentity`] and one [`FakeKeyVault`] that accepts the identity's
/// tokens, plus the client plumbing to reach them. Dropping it stops both servers.
#[derive(Debug)]
pub struct FakeAzure {
    ca: TestCa,
    identity: FakeIdentity,
    key_vault: FakeKeyVault,
    http: reqwest::Client,
}

impl FakeAzure {
    /// Starts with [`IdentitySettings::default`].
    pub async fn start() -> Result<Self, FakeAzureError> {
        Self::start_with(IdentitySettings::default()).await
    }

    pub async fn start_with(settings: IdentitySettings) -> Result<Self, FakeAzureError> {
        let ca = TestCa::new()?;
        let identity = FakeIdentity::start(&ca, settings).await?;
        let key_vault = FakeKeyVault::start(&ca, &identity).await?;
        let http = loopback_client(&ca)?;
        Ok(Self {
            ca,
            identity,
            key_vault,
            http,
        })
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn identity(&self) -> &FakeIdentity {
        &self.identity
    }

    pub fn key_vault(&self) -> &FakeKeyVault {
        &self.key_vault
    }

    /// A client for raw requests to the fakes (same trust and resolver as [`Self::transport`]).
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// The SDK transport: [`Self::http_client`] behind azure_core's `HttpClient`.
    pub fn transport(&self) -> Transport {
        Transport::new(std::sync::Arc::new(self.http.clone()))
    }

    /// Options for any SDK client or credential: the fake transport, no retries, and the
    /// fake identity as the cloud's authority host.
    pub fn client_options(&self) -> ClientOptions {
        fake_client_options(self.transport(), &self.authority_host())
    }

    /// `https://login.fake.test:PORT`.
    pub fn authority_host(&self) -> String {
        self.identity.authority_host()
    }

    pub fn tenant_id(&self) -> String {
        self.identity.tenant_id()
    }

    pub fn client_id(&self) -> String {
        self.identity.client_id()
    }

    pub fn client_secret(&self) -> String {
        self.identity.client_secret()
    }

    /// `https://{vault}.vault.azure.net:PORT`.
    pub fn vault_url(&self, vault: &str) -> String {
        self.key_vault.vault_url(vault)
    }

    /// `https://{vault}.vault.azure.net:PORT` with `{vault}` left in.
    pub fn url_template(&self) -> String {
        self.key_vault.url_template()
    }

    /// Writes [`FAKE_FEDERATED_TOKEN`] to `dir/azure-identity-token` (creating `dir`) and
    /// returns the path, for `WorkloadIdentityCredentialOptions::token_file_path` or
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub fn write_federated_token_file(&self, dir: &Path) -> io::Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FEDERATED_TOKEN_FILE_NAME);
        fs::write(&path, FAKE_FEDERATED_TOKEN)?;
        Ok(path)
    }
}
