use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::FieldError;
use crate::error::{InvalidValue, string_newtype_serde};
use crate::{Limits, Name, Pool};

/// A key that lets a client call the proxy. Only a salted hash of the key is ever stored or
/// distributed; the key itself is shown once, when it is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClientKey {
    pub id: Name,
    /// Pools this key may use; empty means every pool.
    #[serde(default)]
    pub pools: Vec<Name>,
    pub hash: KeyHash,
    /// What the key may consume; no limits when empty.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

impl ClientKey {
    pub fn allows(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p.as_str() == pool)
    }

    /// Checks the key's limits against the pools that exist: a budget can only be kept on
    /// pools that have a price, so a key with a budget may use no pool without one.
    pub fn validate_limits(&self, pools: &[Pool]) -> Result<(), FieldError> {
        self.limits
            .validate(&self.pools)
            .map_err(|e| e.within("limits"))?;
        if !self.limits.has_budget() {
            return Ok(());
        }
        let unpriced = pools.iter().find(|pool| {
            pool.price.is_none()
                && self.allows(pool.name.as_str())
                && self.limits.budget_applies_to(pool.name.as_str())
        });
        match unpriced {
            Some(pool) => Err(FieldError::new(
                "limits.budget",
                format!(
                    "key '{}' has a budget but may use pool '{}', which has no price; set the pool's price or limit the key's pools",
                    self.id, pool.name
                ),
            )),
            None => Ok(()),
        }
    }
}

/// SHA-256 over a random 16-byte salt followed by the key.
///
/// Keys are 238-bit random strings, so a fast hash is enough; the salt keeps equal keys from
/// having equal hashes across deployments. Text form: `sha256$SALT$DIGEST` (base64url).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHash {
    salt: [u8; Self::SALT_LEN],
    digest: [u8; 32],
}

impl KeyHash {
    pub const SALT_LEN: usize = 16;
    const PREFIX: &'static str = "sha256$";

    /// Hashes `key` under a fresh random salt.
    pub fn new(key: &str) -> Self {
        Self::with_salt(rand::random(), key)
    }

    pub fn with_salt(salt: [u8; Self::SALT_LEN], key: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(salt)
            .chain_update(key.as_bytes())
            .finalize()
            .into();
        Self { salt, digest }
    }

    pub fn from_parts(salt: &[u8], digest: &[u8]) -> Result<Self, InvalidValue> {
        let salt = salt
            .try_into()
            .map_err(|_| InvalidValue::new("key hash salt must be 16 bytes"))?;
        let digest = digest
            .try_into()
            .map_err(|_| InvalidValue::new("key hash digest must be 32 bytes"))?;
        Ok(Self { salt, digest })
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Whether `presented` is the key this hash was made from, in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        Self::with_salt(self.salt, presented)
            .digest
            .ct_eq(&self.digest)
            .into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}${}",
            Self::PREFIX,
            URL_SAFE_NO_PAD.encode(self.salt),
            URL_SAFE_NO_PAD.encode(self.digest)
        )
    }
}

impl TryFrom<String> for KeyHash {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let malformed = || InvalidValue::new("key hash must be sha256$SALT$DIGEST in base64url");
        let (salt, digest) = raw
            .strip_prefix(Self::PREFIX)
            .and_then(|rest| rest.split_once('$'))
            .ok_or_else(malformed)?;
        let salt = URL_SAFE_NO_PAD.decode(salt).map_err(|_| malformed())?;
        let digest = URL_SAFE_NO_PAD.decode(digest).map_err(|_| malformed())?;
        Self::from_parts(&salt, &digest)
    }
}

string_newtype_serde!(KeyHash);

/// A new client key: `sk-sluice-` and 40 random alphanumerics (about 238 bits).
pub fn generate_client_secret() -> String {
    const PREFIX: &str = "sk-sluice-";
    let mut secret = String::with_capacity(PREFIX.len() + 40);
    secret.push_str(PREFIX);
    secret.extend(
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from),
    );
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_original_key() {
        let key = generate_client_secret();
        let hash = KeyHash::new(&key);
        assert!(hash.verify(&key));
        assert!(!hash.verify(&format!("{key}x")));
        assert!(!hash.verify(""));
    }

    #[test]
    fn a_budget_needs_a_price_on_every_pool_it_covers() {
        let pools: Vec<Pool> = serde_json::from_value(serde_json::json!([
            {"name": "priced", "price": {"input_per_1m_usd": 1, "output_per_1m_usd": 2}},
            {"name": "free"}
        ]))
        .unwrap();
        let key = |pools: serde_json::Value, limits: serde_json::Value| -> ClientKey {
            serde_json::from_value(serde_json::json!({
                "id": "k", "pools": pools, "hash": KeyHash::new("k").to_string(), "limits": limits
            }))
            .unwrap()
        };
        let budget = serde_json::json!({"budget": {"usd": 5, "period": "day"}});
        let everywhere = key(serde_json::json!([]), budget.clone());
        let err = everywhere.validate_limits(&pools).unwrap_err();
        assert_eq!(err.field, "limits.budget");
        assert!(err.message.contains("pool 'free'"), "{}", err.message);
        key(serde_json::json!(["priced"]), budget)
            .validate_limits(&pools)
            .unwrap();
        // A budget on the priced pool only is fine for a key that may use both.
        key(
            serde_json::json!([]),
            serde_json::json!({"pools": {"priced": {"budget": {"usd": 5, "period": "day"}}}}),
        )
        .validate_limits(&pools)
        .unwrap();
        let err = key(
            serde_json::json!(["priced"]),
            serde_json::json!({"pools": {"free": {"requests_per_minute": 1}}}),
        )
        .validate_limits(&pools)
        .unwrap_err();
        assert_eq!(err.field, "limits.pools.free");
    }

    #[test]
    fn salts_differ_per_hash() {
        assert_ne!(KeyHash::new("same"), KeyHash::new("same"));
    }

    #[test]
    fn text_form_round_trips_and_hides_nothing_secret() {
        let hash = KeyHash::new("k");
        let text = hash.to_string();
        assert!(text.starts_with("sha256$"));
        assert_eq!(text.parse::<KeyHash>().unwrap(), hash);
        assert_eq!(format!("{hash:?}"), "KeyHash(..)");
    }

    #[test]
    fn refuses_malformed_hashes() {
        for bad in ["", "md5$a$b", "sha256$!!$AA", "sha256$AAAA$AAAA"] {
            assert!(bad.parse::<KeyHash>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_client_secret();
        assert_eq!(a.len(), "sk-sluice-".len() + 40);
        assert_ne!(a, generate_client_secret());
    }

    #[test]
    fn empty_pool_list_allows_every_pool() {
        let key = ClientKey {
            id: "team-a".parse().unwrap(),
            pools: vec![],
            hash: KeyHash::new("k"),
            limits: Limits::default(),
        };
        assert!(key.allows("anything"));
        let limited = ClientKey {
            pools: vec!["gpt-4o".parse().unwrap()],
            ..key
        };
        assert!(limited.allows("gpt-4o"));
        assert!(!limited.allows("gpt-4o-mini"));
    }
}
