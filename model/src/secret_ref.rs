use std::fmt;

use crate::error::{InvalidValue, string_newtype_serde};

/// Where a backend's key lives. Sluice stores and distributes references only; each proxy
/// resolves them itself, so key values never pass through the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// `keyvault://VAULT/NAME[/VERSION]`: a secret in Azure Key Vault, latest version unless pinned.
    KeyVault {
        vault: String,
        name: String,
        version: Option<String>,
    },
    /// `env://VAR`: an environment variable of the proxy process.
    Env { var: String },
    /// `file:///path`: a file on the proxy's filesystem (e.g. a mounted Kubernetes secret).
    File { path: String },
}

const HOW_TO_REFERENCE: &str = "use keyvault://VAULT/NAME[/VERSION], env://VAR or file:///path";

impl SecretRef {
    pub const PATTERN: &'static str = "^(keyvault://[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]/[A-Za-z0-9-]{1,127}(/[0-9A-Fa-f]{32})?|env://[A-Za-z_][A-Za-z0-9_]{0,254}|file:///.+)$";

    fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if let Some(rest) = raw.strip_prefix("keyvault://") {
            return Self::parse_key_vault(rest);
        }
        if let Some(var) = raw.strip_prefix("env://") {
            return if is_env_var_name(var) {
                Ok(Self::Env {
                    var: var.to_owned(),
                })
            } else {
                Err(InvalidValue::new(
                    "env:// must name an environment variable: letters, digits and '_', not starting with a digit",
                ))
            };
        }
        if let Some(path) = raw.strip_prefix("file://") {
            return if path.len() > 1 && path.starts_with('/') && !path.contains('\0') {
                Ok(Self::File {
                    path: path.to_owned(),
                })
            } else {
                Err(InvalidValue::new(
                    "file:// must be followed by an absolute path, as in file:///var/run/secrets/key",
                ))
            };
        }
        if let Some((scheme, _)) = raw.split_once("://")
            && scheme.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(InvalidValue::new(format!(
                "unsupported secret reference scheme '{scheme}'; {HOW_TO_REFERENCE}"
            )));
        }
        // Deliberately not echoing the value: this is most likely a real key.
        Err(InvalidValue::new(format!(
            "must be a secret reference, not a key: Sluice never stores key values. Put the key in \
             Azure Key Vault and reference it as keyvault://VAULT/NAME, or reference an environment \
             variable (env://VAR) or a file (file:///path) that holds it; {HOW_TO_REFERENCE}"
        )))
    }

    fn parse_key_vault(rest: &str) -> Result<Self, InvalidValue> {
        let mut parts = rest.split('/');
        let (Some(vault), Some(name)) = (parts.next(), parts.next()) else {
            return Err(InvalidValue::new(
                "keyvault:// must be followed by VAULT/NAME[/VERSION]",
            ));
        };
        let version = parts.next();
        if parts.next().is_some() {
            return Err(InvalidValue::new(
                "keyvault:// takes VAULT/NAME[/VERSION]; too many path segments",
            ));
        }
        if !is_vault_name(vault) {
            return Err(InvalidValue::new(
                "Key Vault name must be 3 to 24 letters, digits or '-', starting with a letter and ending with a letter or digit",
            ));
        }
        if name.is_empty()
            || name.len() > 127
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(InvalidValue::new(
                "Key Vault secret name must be 1 to 127 letters, digits or '-'",
            ));
        }
        if let Some(version) = version
            && !(version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(InvalidValue::new(
                "Key Vault secret version must be 32 hexadecimal characters",
            ));
        }
        Ok(Self::KeyVault {
            vault: vault.to_owned(),
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }
}

fn is_env_var_name(var: &str) -> bool {
    let mut bytes = var.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && var.len() <= 255
}

fn is_vault_name(vault: &str) -> bool {
    let bytes = vault.as_bytes();
    (3..=24).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !vault.contains("--")
}

impl TryFrom<String> for SecretRef {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

string_newtype_serde!(SecretRef);

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyVault {
                vault,
                name,
                version: Some(version),
            } => write!(f, "keyvault://{vault}/{name}/{version}"),
            Self::KeyVault {
                vault,
                name,
                version: None,
            } => write!(f, "keyvault://{vault}/{name}"),
            Self::Env { var } => write!(f, "env://{var}"),
            Self::File { path } => write!(f, "file://{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reference_kind_and_prints_it_back() {
        for raw in [
            "keyvault://my-vault/aoai-eastus-key",
            "keyvault://my-vault/aoai-eastus-key/0123456789abcdef0123456789abcdef",
            "env://AOAI_WESTUS_KEY",
            "file:///var/run/secrets/aoai/key",
        ] {
            let parsed: SecretRef = raw.parse().unwrap();
            assert_eq!(parsed.to_string(), raw);
        }
    }

    #[test]
    fn refuses_a_literal_key_without_echoing_it() {
        let key = "0123456789abcdef0123456789abcdef";
        let err = key.parse::<SecretRef>().unwrap_err().to_string();
        assert!(err.contains("keyvault://VAULT/NAME"), "{err}");
        assert!(!err.contains(key), "{err}");
    }

    #[test]
    fn refuses_malformed_references() {
        for (raw, expected) in [
            ("keyvault://my-vault", "VAULT/NAME"),
            ("keyvault://my-vault/a/b/c", "too many"),
            ("keyvault://x/name", "Key Vault name"),
            ("keyvault://my-vault/bad_name", "secret name"),
            ("keyvault://my-vault/name/v1", "32 hexadecimal"),
            ("env://1BAD", "environment variable"),
            ("env://", "environment variable"),
            ("file://relative/path", "absolute path"),
            ("vault://x/y", "unsupported secret reference scheme 'vault'"),
        ] {
            let err = raw.parse::<SecretRef>().unwrap_err().to_string();
            assert!(err.contains(expected), "{raw}: {err}");
        }
    }
}
