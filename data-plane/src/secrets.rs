//! Resolving secret references to values. The config only ever holds references; each proxy
//! resolves them itself, and values live in memory wrapped so they cannot be printed.

use std::future::Future;
use std::pin::Pin;

use secrecy::SecretString;
use sluice_model::SecretRef;

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
    #[error("{0}")]
    Backend(String),
}

pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretString, SecretError>> + Send + 'a>>;

/// Turns a reference into its current value. Implementations must never log values.
pub trait SecretResolver: Send + Sync + 'static {
    fn resolve<'a>(&'a self, reference: &'a SecretRef) -> ResolveFuture<'a>;
}

/// Resolves `env://` and `file://` references; refuses `keyvault://`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalSecrets;

impl SecretResolver for LocalSecrets {
    fn resolve<'a>(&'a self, reference: &'a SecretRef) -> ResolveFuture<'a> {
        Box::pin(async move { resolve_local(reference).await })
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
    // Mounted secrets usually end with a newline that is not part of the key.
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(SecretError::Empty {
            reference: reference.to_string(),
        });
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
