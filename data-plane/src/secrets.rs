//! Resolving secret references to values. The config only ever holds references; each proxy
//! resolves them itself, and values live in memory wrapped so they cannot be printed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use secrecy::SecretString;
use sluice_model::SecretRef;

use crate::azure::{Azure, BearerToken};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {var} is not set or not valid UTF-8")]
    EnvNotSet { var: String },
    #[error("cannot read secret file {path}")]
    FileUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {reference} is empty")]
    Empty { reference: String },
    #[error("{reference} needs a resolver for {scheme} references, which this proxy does not have")]
    Unsupported {
        reference: String,
        scheme: &'static str,
    },
    #[error("cannot read {reference} from Key Vault: {message}")]
    KeyVault { reference: String, message: String },
    #[error("no Entra ID token for Azure OpenAI: {0}")]
    Entra(String),
}

pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretString, SecretError>> + Send + 'a>>;
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BearerToken, SecretError>> + Send + 'a>>;

/// Turns references into current values, and obtains the proxy's own Entra ID tokens.
/// Implementations must never log values.
pub trait SecretResolver: Send + Sync + 'static {
    fn resolve<'a>(&'a self, reference: &'a SecretRef) -> ResolveFuture<'a>;

    /// A token for `https://cognitiveservices.azure.com/.default`, for `entra_id` backends.
    fn entra_token(&self) -> TokenFuture<'_>;
}

/// What a running proxy uses: local references directly, the rest through its Azure identity.
pub struct Secrets {
    azure: Arc<Azure>,
}

impl Secrets {
    pub fn new(azure: Arc<Azure>) -> Self {
        Self { azure }
    }
}

impl SecretResolver for Secrets {
    fn resolve<'a>(&'a self, reference: &'a SecretRef) -> ResolveFuture<'a> {
        Box::pin(async move {
            let SecretRef::KeyVault {
                vault,
                name,
                version,
            } = reference
            else {
                return resolve_local(reference).await;
            };
            let value = self
                .azure
                .secret(vault, name, version.as_deref())
                .await
                .map_err(|error| SecretError::KeyVault {
                    reference: reference.to_string(),
                    message: error.to_string(),
                })?;
            non_empty(reference, value)
        })
    }

    fn entra_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            self.azure
                .cognitive_services_token()
                .await
                .map_err(|error| SecretError::Entra(error.to_string()))
        })
    }
}

/// Resolves `env://` and `file://` references only: for tests and tools without an identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalSecrets;

impl SecretResolver for LocalSecrets {
    fn resolve<'a>(&'a self, reference: &'a SecretRef) -> ResolveFuture<'a> {
        Box::pin(async move { resolve_local(reference).await })
    }

    fn entra_token(&self) -> TokenFuture<'_> {
        Box::pin(async {
            Err(SecretError::Entra(
                "this resolver has no Azure identity".into(),
            ))
        })
    }
}

pub(crate) async fn resolve_local(reference: &SecretRef) -> Result<SecretString, SecretError> {
    let value = match reference {
        SecretRef::Env { var } => {
            std::env::var(var).map_err(|_| SecretError::EnvNotSet { var: var.clone() })?
        }
        SecretRef::File { path } => {
            tokio::fs::read_to_string(path)
                .await
                .map_err(|source| SecretError::FileUnreadable {
                    path: path.clone(),
                    source,
                })?
        }
        SecretRef::KeyVault { .. } => {
            return Err(SecretError::Unsupported {
                reference: reference.to_string(),
                scheme: "keyvault://",
            });
        }
    };
    non_empty(reference, SecretString::from(value))
}

/// Mounted secrets usually end with a newline that is not part of the key.
fn non_empty(reference: &SecretRef, value: SecretString) -> Result<SecretString, SecretError> {
    use secrecy::ExposeSecret as _;
    let trimmed = value.expose_secret().trim();
    if trimmed.is_empty() {
        return Err(SecretError::Empty {
            reference: reference.to_string(),
        });
    }
    if trimmed.len() == value.expose_secret().len() {
        return Ok(value);
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[tokio::test]
    async fn resolves_files_and_trims_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let reference: SecretRef = format!("file://{}", path.display()).parse().unwrap();
        let value = LocalSecrets.resolve(&reference).await.unwrap();
        assert_eq!(value.expose_secret(), "s3cr3t");
        assert!(
            !format!("{value:?}").contains("s3cr3t"),
            "Debug redacts the value"
        );
    }

    #[tokio::test]
    async fn explains_what_is_missing_without_values() {
        let missing: SecretRef = "env://SLUICE_TEST_SURELY_UNSET_VAR".parse().unwrap();
        let error = LocalSecrets
            .resolve(&missing)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("SLUICE_TEST_SURELY_UNSET_VAR is not set"),
            "{error}"
        );
        let vault: SecretRef = "keyvault://my-vault/key".parse().unwrap();
        let error = LocalSecrets.resolve(&vault).await.unwrap_err().to_string();
        assert!(error.contains("keyvault://"), "{error}");
        let no_file: SecretRef = "file:///nonexistent/sluice/key".parse().unwrap();
        assert!(matches!(
            LocalSecrets.resolve(&no_file).await,
            Err(SecretError::FileUnreadable { .. })
        ));
    }
}
