//! The proxy's Azure identity and what it is used for: reading `keyvault://` secrets and
//! obtaining Entra ID tokens for `entra_id` backends. Values never leave this module
//! unwrapped except as the header a backend needs.

mod certificate;
mod identity;
mod keyvault;
mod template;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use secrecy::SecretString;

pub use certificate::{CertificateAssertion, CertificateError};
pub use identity::{CredentialChain, CredentialKind, IdentityConfig, IdentityError};
pub use keyvault::KeyVault;
pub use template::{TemplateError, VaultUrlTemplate};

/// Scope of the tokens Azure OpenAI accepts.
pub const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// How this proxy reaches Azure.
#[derive(Clone, Debug)]
pub struct AzureOptions {
    pub vault_url_template: VaultUrlTemplate,
    pub identity: IdentityConfig,
    /// Transport, retries and cloud (authority host) for every Azure client; tests point
    /// these at the fakes, production keeps the SDK defaults.
    pub client_options: ClientOptions,
    /// Upper bound for one secret or token request, retries included.
    pub request_timeout: Duration,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            vault_url_template: VaultUrlTemplate::default(),
            identity: IdentityConfig::default(),
            client_options: ClientOptions::default(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A bearer token and when it stops being accepted.
pub struct BearerToken {
    pub value: SecretString,
    pub expires_at: SystemTime,
}

/// The proxy's Azure identity with a Key Vault client on top.
pub struct Azure {
    credential: Arc<CredentialChain>,
    keyvault: KeyVault,
    request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("{what} took longer than {seconds}s")]
    Timeout { what: &'static str, seconds: u64 },
    #[error("{0}")]
    Sdk(String),
}

impl Azure {
    pub fn new(options: AzureOptions) -> Result<Self, IdentityError> {
        let credential = Arc::new(CredentialChain::new(
            &options.identity,
            &options.client_options,
        )?);
        let keyvault = KeyVault::new(
            options.vault_url_template,
            credential.clone() as Arc<dyn TokenCredential>,
            options.client_options,
        );
        Ok(Self {
            credential,
            keyvault,
            request_timeout: options.request_timeout,
        })
    }

    /// Reads one secret: the latest version, or `version` when given.
    pub async fn secret(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretString, AzureError> {
        self.bounded(
            "reading the secret",
            self.keyvault.get(vault, name, version),
        )
        .await
    }

    /// A token for Azure OpenAI from the proxy's identity.
    pub async fn cognitive_services_token(&self) -> Result<BearerToken, AzureError> {
        let token = self
            .bounded("getting an Entra ID token", async {
                self.credential
                    .get_token(&[COGNITIVE_SERVICES_SCOPE], None)
                    .await
                    .map_err(|error| AzureError::Sdk(error.to_string()))
            })
            .await?;
        Ok(BearerToken {
            value: SecretString::from(token.token.secret().to_owned()),
            expires_at: token.expires_on.into(),
        })
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T, AzureError>>,
    ) -> Result<T, AzureError> {
        tokio::time::timeout(self.request_timeout, work)
            .await
            .map_err(|_| AzureError::Timeout {
                what,
                seconds: self.request_timeout.as_secs().max(1),
            })?
    }
}
