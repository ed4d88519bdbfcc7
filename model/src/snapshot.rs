use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::{ClientKey, Pool};

/// Everything a proxy needs, as of one config revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub revision: u64,
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub client_keys: Vec<ClientKey>,
}

impl Snapshot {
    /// Checks every pool and that pool names and client key ids are unique.
    pub fn validate(&self) -> Result<(), FieldError> {
        let mut pools = HashSet::with_capacity(self.pools.len());
        for (index, pool) in self.pools.iter().enumerate() {
            pool.validate()
                .map_err(|e| e.within(format_args!("pools[{index}]")))?;
            if !pools.insert(pool.name.as_str()) {
                return Err(FieldError::new(
                    format!("pools[{index}].name"),
                    "pool names must be unique",
                ));
            }
        }
        let mut keys = HashSet::with_capacity(self.client_keys.len());
        for (index, key) in self.client_keys.iter().enumerate() {
            if !keys.insert(key.id.as_str()) {
                return Err(FieldError::new(
                    format!("client_keys[{index}].id"),
                    "client key ids must be unique",
                ));
            }
            key.validate_limits(&self.pools)
                .map_err(|e| e.within(format_args!("client_keys[{index}]")))?;
        }
        Ok(())
    }
}
