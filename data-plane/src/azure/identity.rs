//! The proxy's Azure identity: the first credential that works, in the order Azure's
//! `DefaultAzureCredential` uses (client secret from the environment, workload identity,
//! managed identity, Azure CLI), or exactly one when the operator names it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::certificate::CertificateAssertion;

/// How long one candidate of an automatic chain may take before the next is tried: an
/// unreachable managed-identity endpoint must not stall the credentials after it.
const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CredentialKind {
    /// Try each credential the environment allows, keep the first that works.
    #[default]
    Auto,
    ClientSecret,
    ClientCertificate,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
}

impl CredentialKind {
    pub const NAMES: [&str; 6] = [
        "auto",
        "client-secret",
        "client-certificate",
        "workload-identity",
        "managed-identity",
        "azure-cli",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::ClientSecret => "client-secret",
            Self::ClientCertificate => "client-certificate",
            Self::WorkloadIdentity => "workload-identity",
            Self::ManagedIdentity => "managed-identity",
            Self::AzureCli => "azure-cli",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CredentialKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            Self::Auto,
            Self::ClientSecret,
            Self::ClientCertificate,
            Self::WorkloadIdentity,
            Self::ManagedIdentity,
            Self::AzureCli,
        ]
        .into_iter()
        .find(|kind| kind.name() == text)
        .ok_or_else(|| format!("expected one of {}", Self::NAMES.join(", ")))
    }
}

/// The settings the Azure SDKs read from `AZURE_*` variables, gathered once so tests can
/// give them directly.
#[derive(Clone, Debug, Default)]
pub struct IdentityConfig {
    pub kind: CredentialKind,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// PEM with the certificate and its RSA private key.
    pub client_certificate: Option<PathBuf>,
    pub federated_token_file: Option<PathBuf>,
}

impl IdentityConfig {
    /// Reads `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
    /// `AZURE_CLIENT_CERTIFICATE_PATH` and `AZURE_FEDERATED_TOKEN_FILE` (what AKS workload
    /// identity injects).
    pub fn from_env(kind: CredentialKind) -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            kind,
            tenant_id: var("AZURE_TENANT_ID"),
            client_id: var("AZURE_CLIENT_ID"),
            client_secret: var("AZURE_CLIENT_SECRET").map(SecretString::from),
            client_certificate: var("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
        }
    }

    fn client_secret_parts(&self) -> Option<(&str, &str, &SecretString)> {
        Some((
            self.tenant_id.as_deref()?,
            self.client_id.as_deref()?,
            self.client_secret.as_ref()?,
        ))
    }

    fn client_certificate_parts(&self) -> Option<(&str, &str, &PathBuf)> {
        Some((
            self.tenant_id.as_deref()?,
            self.client_id.as_deref()?,
            self.client_certificate.as_ref()?,
        ))
    }

    fn workload_identity_parts(&self) -> Option<(&str, &str, &PathBuf)> {
        Some((
            self.tenant_id.as_deref()?,
            self.client_id.as_deref()?,
            self.federated_token_file.as_ref()?,
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "--azure-credential {kind} needs {needs}; set them or choose another credential (auto tries each)"
    )]
    Incomplete {
        kind: CredentialKind,
        needs: &'static str,
    },
    #[error("cannot set up the {kind} credential: {message}")]
    Setup {
        kind: CredentialKind,
        message: String,
    },
}

/// Candidates in order; the first to return a token is kept for good.
pub struct CredentialChain {
    candidates: Vec<(CredentialKind, Arc<dyn TokenCredential>)>,
    chosen: OnceLock<usize>,
}

impl fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialChain")
            .field("candidates", &self.names())
            .finish_non_exhaustive()
    }
}

impl CredentialChain {
    pub fn new(config: &IdentityConfig, options: &ClientOptions) -> Result<Self, IdentityError> {
        let kinds: Vec<CredentialKind> = match config.kind {
            CredentialKind::Auto => {
                let mut kinds = Vec::with_capacity(4);
                if config.client_secret_parts().is_some() {
                    kinds.push(CredentialKind::ClientSecret);
                }
                if config.client_certificate_parts().is_some() {
                    kinds.push(CredentialKind::ClientCertificate);
                }
                if config.workload_identity_parts().is_some() {
                    kinds.push(CredentialKind::WorkloadIdentity);
                }
                kinds.extend([CredentialKind::ManagedIdentity, CredentialKind::AzureCli]);
                kinds
            }
            pinned => vec![pinned],
        };
        let automatic = config.kind == CredentialKind::Auto;
        let mut candidates = Vec::with_capacity(kinds.len());
        for kind in kinds {
            match build(kind, config, options) {
                Ok(credential) => candidates.push((kind, credential)),
                // Automatic mode carries on with the rest, as DefaultAzureCredential does; a
                // credential the operator named must work.
                Err(error) if automatic => {
                    tracing::warn!(%error, "skipping an Azure credential the environment half-configures");
                }
                Err(error) => return Err(error),
            }
        }
        let chain = Self {
            candidates,
            chosen: OnceLock::new(),
        };
        tracing::debug!(candidates = ?chain.names(), "Azure credential chain");
        Ok(chain)
    }

    fn names(&self) -> Vec<&'static str> {
        self.candidates
            .iter()
            .map(|(kind, _)| kind.name())
            .collect()
    }

    /// The credential that produced a token, once one did.
    pub fn chosen(&self) -> Option<CredentialKind> {
        self.chosen.get().map(|&index| self.candidates[index].0)
    }
}

#[async_trait::async_trait]
impl TokenCredential for CredentialChain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(&index) = self.chosen.get() {
            return self.candidates[index].1.get_token(scopes, options).await;
        }
        let only_one = self.candidates.len() == 1;
        let mut failures = Vec::with_capacity(self.candidates.len());
        for (index, (kind, credential)) in self.candidates.iter().enumerate() {
            let attempt = credential.get_token(scopes, options.clone());
            let outcome = if only_one {
                attempt.await
            } else {
                tokio::time::timeout(CANDIDATE_TIMEOUT, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(azure_core::Error::with_message(
                            ErrorKind::Credential,
                            format!("no answer within {}s", CANDIDATE_TIMEOUT.as_secs()),
                        ))
                    })
            };
            match outcome {
                Ok(token) => {
                    if self.chosen.set(index).is_ok() {
                        tracing::info!(credential = kind.name(), "Azure identity in use");
                    }
                    return Ok(token);
                }
                Err(error) => failures.push(format!("{kind}: {error}")),
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!("no Azure credential worked ({})", failures.join("; ")),
        ))
    }
}

fn build(
    kind: CredentialKind,
    config: &IdentityConfig,
    options: &ClientOptions,
) -> Result<Arc<dyn TokenCredential>, IdentityError> {
    let setup = |error: azure_core::Error| IdentityError::Setup {
        kind,
        message: error.to_string(),
    };
    let credential: Arc<dyn TokenCredential> =
        match kind {
            CredentialKind::ClientSecret => {
                let (tenant, client, secret) =
                    config
                        .client_secret_parts()
                        .ok_or(IdentityError::Incomplete {
                            kind,
                            needs: "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                        })?;
                ClientSecretCredential::new(
                    tenant,
                    client.to_owned(),
                    Secret::new(secret.expose_secret().to_owned()),
                    Some(ClientSecretCredentialOptions {
                        client_options: options.clone(),
                    }),
                )
                .map_err(setup)?
            }
            CredentialKind::ClientCertificate => {
                let (tenant, client, path) = config.client_certificate_parts().ok_or(
                    IdentityError::Incomplete {
                        kind,
                        needs: "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_CERTIFICATE_PATH",
                    },
                )?;
                let shown = path.display().to_string();
                let pem = std::fs::read(path).map_err(|error| IdentityError::Setup {
                    kind,
                    message: format!("cannot read {shown}: {error}"),
                })?;
                let audience = format!("{}/{tenant}/oauth2/v2.0/token", authority_host(options));
                let assertion =
                    CertificateAssertion::from_pem(&pem, &shown, client.to_owned(), audience)
                        .map_err(|error| IdentityError::Setup {
                            kind,
                            message: error.to_string(),
                        })?;
                ClientAssertionCredential::new(
                    tenant.to_owned(),
                    client.to_owned(),
                    assertion,
                    Some(ClientAssertionCredentialOptions {
                        client_options: options.clone(),
                    }),
                )
                .map_err(setup)?
            }
            CredentialKind::WorkloadIdentity => {
                let (tenant, client, file) = config.workload_identity_parts().ok_or(
                    IdentityError::Incomplete {
                        kind,
                        needs: "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE",
                    },
                )?;
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: options.clone(),
                    },
                    client_id: Some(client.to_owned()),
                    tenant_id: Some(tenant.to_owned()),
                    token_file_path: Some(file.clone()),
                }))
                .map_err(setup)?
            }
            CredentialKind::ManagedIdentity => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    // As DefaultAzureCredential does: AZURE_CLIENT_ID picks a user-assigned identity.
                    user_assigned_id: config.client_id.clone().map(UserAssignedId::ClientId),
                    client_options: options.clone(),
                }))
                .map_err(setup)?
            }
            CredentialKind::AzureCli => AzureCliCredential::new(None).map_err(setup)?,
            // `auto` is a chain of the others, expanded by the caller.
            CredentialKind::Auto => {
                return Err(IdentityError::Setup {
                    kind,
                    message: "auto names no single credential".into(),
                });
            }
        };
    Ok(credential)
}

/// The Entra ID host the SDK's credentials use: the configured cloud's, else
/// `AZURE_AUTHORITY_HOST`, else public Azure.
fn authority_host(options: &ClientOptions) -> String {
    let host = match options.cloud.as_deref() {
        Some(CloudConfiguration::Custom(custom)) => custom.authority_host.clone(),
        Some(CloudConfiguration::AzureGovernment) => "https://login.microsoftonline.us".into(),
        Some(CloudConfiguration::AzureChina) => "https://login.chinacloudapi.cn".into(),
        _ => std::env::var("AZURE_AUTHORITY_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "https://login.microsoftonline.com".into()),
    };
    host.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for name in CredentialKind::NAMES {
            assert_eq!(name.parse::<CredentialKind>().unwrap().name(), name);
        }
        let error = "vault".parse::<CredentialKind>().unwrap_err();
        assert!(error.contains("workload-identity"), "{error}");
    }

    #[test]
    fn auto_tries_what_the_environment_allows_in_azure_order() {
        let options = ClientOptions::default();
        let bare = CredentialChain::new(&IdentityConfig::default(), &options).unwrap();
        assert_eq!(bare.names(), ["managed-identity", "azure-cli"]);
        // The SDK reads the service-account token when the credential is built.
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("azure-identity-token");
        std::fs::write(&token_file, "header.payload.signature").unwrap();
        let workload = IdentityConfig {
            tenant_id: Some("tenant".into()),
            client_id: Some("client".into()),
            federated_token_file: Some(token_file),
            ..IdentityConfig::default()
        };
        let chain = CredentialChain::new(&workload, &options).unwrap();
        assert_eq!(
            chain.names(),
            ["workload-identity", "managed-identity", "azure-cli"]
        );
        assert_eq!(chain.chosen(), None);
    }

    #[test]
    fn a_pinned_credential_missing_its_settings_is_refused_at_start() {
        let config = IdentityConfig {
            kind: CredentialKind::WorkloadIdentity,
            tenant_id: Some("tenant".into()),
            ..IdentityConfig::default()
        };
        let error = CredentialChain::new(&config, &ClientOptions::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("AZURE_FEDERATED_TOKEN_FILE"), "{error}");
    }

    #[test]
    fn debug_output_never_shows_the_client_secret() {
        let config = IdentityConfig {
            kind: CredentialKind::ClientSecret,
            tenant_id: Some("tenant".into()),
            client_id: Some("client".into()),
            client_secret: Some(SecretString::from("very-secret-value")),
            ..IdentityConfig::default()
        };
        assert!(!format!("{config:?}").contains("very-secret-value"));
        let chain = CredentialChain::new(&config, &ClientOptions::default()).unwrap();
        assert!(!format!("{chain:?}").contains("very-secret-value"));
    }
}
