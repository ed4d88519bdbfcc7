//! What the fake Key Vault holds: vaults by name, secrets by name, versions in creation order.
//!
//! Kept free of HTTP so the rules (name syntax, case-insensitive names, "latest" is the most
//! recently created version even when disabled) are tested on their own. Values live here
//! only; the request log never sees them.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::random::random_hex;

/// A test control or lookup the fake Key Vault cannot do.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyVaultError {
    #[error(
        "vault name {0:?} is invalid: Key Vault names are 3-24 letters, digits and hyphens, \
         start with a letter, end with a letter or digit and have no consecutive hyphens"
    )]
    InvalidVaultName(String),
    #[error("secret name {0:?} is invalid: secret names are 1-127 letters, digits and hyphens")]
    InvalidSecretName(String),
    #[error("vault {0:?} does not exist in the fake Key Vault (create it or set a secret first)")]
    UnknownVault(String),
    #[error("vault {vault:?} has no secret {name:?}")]
    UnknownSecret { vault: String, name: String },
    #[error("secret {name:?} in vault {vault:?} has no version {version:?}")]
    UnknownVersion {
        vault: String,
        name: String,
        version: String,
    },
}

/// One version of a secret as the endpoint renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecretVersion {
    /// The secret's name as first set (Key Vault keeps the original casing).
    pub name: String,
    pub version: String,
    pub value: String,
    pub enabled: bool,
    /// Epoch seconds, as Key Vault reports them.
    pub created: u64,
    pub updated: u64,
}

#[derive(Debug, Default)]
struct StoredSecret {
    /// Oldest first; the last one is the current ("latest") version.
    versions: Vec<SecretVersion>,
}

/// Secrets by lowercase name: Key Vault names are case-insensitive.
type Vault = BTreeMap<String, StoredSecret>;

#[derive(Debug, Default)]
pub(crate) struct VaultStore {
    /// By lowercase vault name (it is a DNS label).
    vaults: Mutex<BTreeMap<String, Vault>>,
}

impl VaultStore {
    /// Creates an empty vault; does nothing if it exists. Returns the normalized name.
    pub fn create_vault(&self, vault: &str) -> Result<String, KeyVaultError> {
        let vault = vault_key(vault)?;
        self.lock().entry(vault.clone()).or_default();
        Ok(vault)
    }

    /// Adds a version that becomes the latest (creating vault and secret as needed) and
    /// returns its version id: 32 lowercase hex digits, as Key Vault's.
    pub fn set_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
    ) -> Result<String, KeyVaultError> {
        let vault = vault_key(vault)?;
        check_secret_name(name)?;
        let now = epoch_seconds();
        let version = random_hex(32);
        let mut vaults = self.lock();
        let secret = vaults
            .entry(vault)
            .or_default()
            .entry(name.to_ascii_lowercase())
            .or_default();
        let display_name = secret
            .versions
            .first()
            .map_or_else(|| name.to_owned(), |first| first.name.clone());
        secret.versions.push(SecretVersion {
            name: display_name,
            version: version.clone(),
            value: value.to_owned(),
            enabled: true,
            created: now,
            updated: now,
        });
        Ok(version)
    }

    /// Enables or disables one version; `updated` moves as in Key Vault.
    pub fn set_enabled(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        enabled: bool,
    ) -> Result<(), KeyVaultError> {
        let vault = vault_key(vault)?;
        check_secret_name(name)?;
        let mut vaults = self.lock();
        let secret = find_secret(&mut vaults, &vault, name)?;
        let stored = secret
            .versions
            .iter_mut()
            .find(|stored| stored.version.eq_ignore_ascii_case(version))
            .ok_or_else(|| KeyVaultError::UnknownVersion {
                vault: vault.clone(),
                name: name.to_owned(),
                version: version.to_owned(),
            })?;
        stored.enabled = enabled;
        stored.updated = epoch_seconds();
        Ok(())
    }

    pub fn has_vault(&self, vault: &str) -> bool {
        self.lock().contains_key(&vault.to_ascii_lowercase())
    }

    pub fn vault_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// One version, or the latest when `version` is `None`.
    pub fn get(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretVersion, KeyVaultError> {
        let vault = vault.to_ascii_lowercase();
        let mut vaults = self.lock();
        let secret = find_secret(&mut vaults, &vault, name)?;
        let found = match version {
            None => secret.versions.last(),
            Some(version) => secret
                .versions
                .iter()
                .find(|stored| stored.version.eq_ignore_ascii_case(version)),
        };
        found.cloned().ok_or_else(|| KeyVaultError::UnknownVersion {
            vault,
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        })
    }

    /// Every version of a secret, oldest first; none for an unknown secret (Key Vault lists
    /// nothing rather than failing).
    pub fn versions(&self, vault: &str, name: &str) -> Result<Vec<SecretVersion>, KeyVaultError> {
        let vault = vault.to_ascii_lowercase();
        let mut vaults = self.lock();
        match find_secret(&mut vaults, &vault, name) {
            Ok(secret) => Ok(secret.versions.clone()),
            Err(KeyVaultError::UnknownSecret { .. }) => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// The latest version of every secret, by name.
    pub fn latest_of_each(&self, vault: &str) -> Result<Vec<SecretVersion>, KeyVaultError> {
        let vault = vault.to_ascii_lowercase();
        let vaults = self.lock();
        let secrets = vaults
            .get(&vault)
            .ok_or(KeyVaultError::UnknownVault(vault.clone()))?;
        Ok(secrets
            .values()
            .filter_map(|secret| secret.versions.last().cloned())
            .collect())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vault>> {
        // Every update is a single insert or field write: still consistent after a panic.
        self.vaults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn find_secret<'a>(
    vaults: &'a mut BTreeMap<String, Vault>,
    vault: &str,
    name: &str,
) -> Result<&'a mut StoredSecret, KeyVaultError> {
    vaults
        .get_mut(vault)
        .ok_or_else(|| KeyVaultError::UnknownVault(vault.to_owned()))?
        .get_mut(&name.to_ascii_lowercase())
        .ok_or_else(|| KeyVaultError::UnknownSecret {
            vault: vault.to_owned(),
            name: name.to_owned(),
        })
}

/// The lowercase vault name, if it is one Azure would accept.
pub(crate) fn vault_key(vault: &str) -> Result<String, KeyVaultError> {
    let lower = vault.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let valid = (3..=24).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !lower.contains("--");
    if valid {
        Ok(lower)
    } else {
        Err(KeyVaultError::InvalidVaultName(vault.to_owned()))
    }
}

pub(crate) fn check_secret_name(name: &str) -> Result<(), KeyVaultError> {
    let valid = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(KeyVaultError::InvalidSecretName(name.to_owned()))
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_version_becomes_latest_and_old_ones_stay_readable() {
        let store = VaultStore::default();
        let v1 = store.set_secret("MyVault", "Api-Key", "one").expect("set");
        let v2 = store.set_secret("myvault", "api-key", "two").expect("set");
        assert_ne!(v1, v2);
        assert_eq!(v1.len(), 32);
        let latest = store.get("myvault", "API-KEY", None).expect("latest");
        assert_eq!(
            (latest.value.as_str(), latest.name.as_str()),
            ("two", "Api-Key")
        );
        assert_eq!(
            store
                .get("myvault", "api-key", Some(&v1))
                .expect("v1")
                .value,
            "one"
        );
        let versions = store.versions("myvault", "api-key").expect("versions");
        assert_eq!(versions.len(), 2);
        assert_eq!(store.latest_of_each("myvault").expect("list").len(), 1);
    }

    #[test]
    fn disabling_keeps_the_version_but_marks_it() {
        let store = VaultStore::default();
        let v1 = store.set_secret("myvault", "k", "one").expect("set");
        store
            .set_enabled("myvault", "k", &v1, false)
            .expect("disable");
        assert!(!store.get("myvault", "k", None).expect("latest").enabled);
        assert_eq!(
            store.set_enabled("myvault", "k", "nope", false),
            Err(KeyVaultError::UnknownVersion {
                vault: "myvault".into(),
                name: "k".into(),
                version: "nope".into()
            })
        );
    }

    #[test]
    fn lookups_say_what_is_missing() {
        let store = VaultStore::default();
        assert_eq!(
            store.get("nowhere", "k", None),
            Err(KeyVaultError::UnknownVault("nowhere".into()))
        );
        store.create_vault("myvault").expect("create");
        assert!(store.has_vault("MYVAULT"));
        assert_eq!(
            store.get("myvault", "k", None),
            Err(KeyVaultError::UnknownSecret {
                vault: "myvault".into(),
                name: "k".into()
            })
        );
        assert_eq!(store.versions("myvault", "k"), Ok(Vec::new()));
        assert!(matches!(
            store.versions("nowhere", "k"),
            Err(KeyVaultError::UnknownVault(_))
        ));
    }

    #[test]
    fn names_follow_azure_rules() {
        for bad in [
            "ab",
            "1vault",
            "vault-",
            "va--ult",
            "v_ault",
            &"v".repeat(25),
        ] {
            assert_eq!(
                vault_key(bad),
                Err(KeyVaultError::InvalidVaultName(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(vault_key("My-Vault1"), Ok("my-vault1".to_owned()));
        let store = VaultStore::default();
        for bad in ["", "a_b", "a b", "a/b", &"k".repeat(128)] {
            assert_eq!(
                store.set_secret("myvault", bad, "v"),
                Err(KeyVaultError::InvalidSecretName(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(!store.has_vault("myvault"), "a failed set creates nothing");
    }
}
