use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, InvalidValue, string_newtype_serde};
use crate::{Name, SecretRef};

/// Which wire dialect a backend speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// `{url}/openai/deployments/{deployment}/{operation}?api-version=…` with an `api-key`.
    AzureOpenai,
    /// `{url}/v1/{operation}` with `Authorization: Bearer`.
    Openai,
}

/// How a proxy authenticates to a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", try_from = "AuthFields")]
pub enum Auth {
    /// A key resolved by the proxy from a secret reference.
    ApiKey { secret: SecretRef },
    /// A bearer token for `https://cognitiveservices.azure.com/.default` from the proxy's identity.
    EntraId {},
    /// No credential at all (local models, test upstreams).
    None {},
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthType {
    ApiKey,
    EntraId,
    None,
}

/// `auth` as written: parsed field by field, so errors point at `auth.secret` or `auth.type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFields {
    #[serde(rename = "type")]
    kind: AuthType,
    secret: Option<SecretRef>,
}

impl TryFrom<AuthFields> for Auth {
    type Error = InvalidValue;

    fn try_from(fields: AuthFields) -> Result<Self, Self::Error> {
        match (fields.kind, fields.secret) {
            (AuthType::ApiKey, Some(secret)) => Ok(Self::ApiKey { secret }),
            (AuthType::ApiKey, None) => Err(InvalidValue::new(
                "auth type api_key needs a secret reference in auth.secret",
            )),
            (AuthType::EntraId, None) => Ok(Self::EntraId {}),
            (AuthType::None, None) => Ok(Self::None {}),
            (AuthType::EntraId | AuthType::None, Some(_)) => Err(InvalidValue::new(
                "auth.secret is only allowed with auth type api_key",
            )),
        }
    }
}

/// A backend's base URL: `http` or `https`, a host, an optional path prefix, nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendUrl(url::Url);

impl BackendUrl {
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// The URL without a trailing slash, ready for `{base}/openai/...` or `{base}/v1/...`.
    pub fn base(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    /// The URL's path without its trailing slash (empty for a bare host), which goes before
    /// `/openai/...` or `/v1/...`.
    pub fn path_prefix(&self) -> &str {
        self.0.path().trim_end_matches('/')
    }
}

impl TryFrom<String> for BackendUrl {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let url = url::Url::parse(&raw)
            .map_err(|e| InvalidValue::new(format!("not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidValue::new("URL scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidValue::new("URL must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidValue::new(
                "URL must not carry credentials; use auth with a secret reference",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(InvalidValue::new(
                "URL must not have a query or fragment; Sluice appends the operation path itself",
            ));
        }
        Ok(Self(url))
    }
}

string_newtype_serde!(BackendUrl);

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base())
    }
}

/// A deployment or model name as a client sends it or as a backend knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentName(String);

impl DeploymentName {
    /// At most 128 characters, not all of them dots.
    pub const PATTERN: &'static str =
        "^(?=.{1,128}$)[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeploymentName {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let valid = (1..=128).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !valid {
            return Err(InvalidValue::new(
                "deployment names are 1 to 128 letters, digits, '.', '_', ':' or '-'",
            ));
        }
        // The name becomes a URL path segment: '.' or '..' there would leave the deployment.
        if raw.bytes().all(|b| b == b'.') {
            return Err(InvalidValue::new(
                "a deployment name must not be made of dots alone",
            ));
        }
        Ok(Self(raw))
    }
}

string_newtype_serde!(DeploymentName);

impl fmt::Display for DeploymentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Azure OpenAI `api-version`, e.g. `2024-10-21` or `2025-04-01-preview`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiVersion(String);

impl ApiVersion {
    pub const DEFAULT: &'static str = "2024-10-21";
    pub const PATTERN: &'static str = r"^\d{4}-\d{2}-\d{2}(-preview)?$";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let date = raw.strip_suffix("-preview").unwrap_or(&raw);
        let shape_ok = date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if shape_ok {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(
                "api_version must look like 2024-10-21 or 2025-04-01-preview",
            ))
        }
    }
}

string_newtype_serde!(ApiVersion);

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend's share under the `weighted` strategy: 1 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Weight(u32);

impl Weight {
    pub const MAX: u32 = 1000;

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<u32> for Weight {
    type Error = InvalidValue;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        if (1..=Self::MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new("weight must be between 1 and 1000"))
        }
    }
}

impl From<Weight> for u32 {
    fn from(weight: Weight) -> Self {
        weight.0
    }
}

/// One upstream deployment target inside a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub name: Name,
    pub url: BackendUrl,
    pub kind: BackendKind,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u32, minimum = 1, maximum = 1000, default = 1))]
    pub weight: Weight,
    /// Lower numbers are tried first; the next tier serves only while the whole tier above is unavailable.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967295_u64))]
    pub priority: u32,
    #[serde(default = "enabled_by_default")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub enabled: bool,
    pub auth: Auth,
    /// Client-facing deployment/model name → the name this backend knows it by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<DeploymentName, DeploymentName>,
    /// Azure OpenAI only: sent upstream when a client call carries no `api-version` (default 2024-10-21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<ApiVersion>,
}

fn enabled_by_default() -> bool {
    true
}

impl Backend {
    /// Rules that span fields; each field already validated itself on parse.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.kind == BackendKind::Openai {
            if matches!(self.auth, Auth::EntraId {}) {
                return Err(FieldError::new(
                    "auth.type",
                    "entra_id works only with kind azure_openai; use api_key for kind openai",
                ));
            }
            if self.api_version.is_some() {
                return Err(FieldError::new(
                    "api_version",
                    "api_version applies only to kind azure_openai",
                ));
            }
        }
        Ok(())
    }

    /// The name this backend knows `requested` by, after the `deployments` renames.
    pub fn deployment_for<'a>(&'a self, requested: &'a str) -> &'a str {
        self.deployments
            .iter()
            .find(|(from, _)| from.as_str() == requested)
            .map_or(requested, |(_, to)| to.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backend(value: serde_json::Value) -> Result<Backend, String> {
        serde_json::from_value::<Backend>(value).map_err(|e| e.to_string())
    }

    #[test]
    fn a_url_s_path_goes_before_the_operation() {
        for (url, prefix) in [
            ("https://x.example", ""),
            ("https://x.example/", ""),
            ("https://x.example:8443/gateway/", "/gateway"),
            ("http://127.0.0.1:1/a/b", "/a/b"),
        ] {
            let url = BackendUrl::try_from(url.to_owned()).unwrap();
            assert_eq!(url.path_prefix(), prefix, "{url}");
        }
    }

    #[test]
    fn fills_defaults_and_round_trips() {
        let parsed = backend(json!({
            "name": "eastus", "url": "https://aoai-eastus.openai.azure.com/", "kind": "azure_openai",
            "auth": {"type": "api_key", "secret": "keyvault://my-vault/aoai-eastus-key"}
        }))
        .unwrap();
        assert_eq!(parsed.weight.get(), 1);
        assert_eq!(parsed.priority, 0);
        assert!(parsed.enabled);
        let out = serde_json::to_value(&parsed).unwrap();
        assert_eq!(out["url"], "https://aoai-eastus.openai.azure.com");
        assert_eq!(backend(out).unwrap(), parsed);
    }

    #[test]
    fn refuses_bad_fields_with_clear_messages() {
        let base = json!({"name": "b", "url": "https://x.example", "kind": "openai", "auth": {"type": "none"}});
        for (patch, expected) in [
            (json!({"url": "ftp://x.example"}), "http or https"),
            (json!({"url": "https://user:pw@x.example"}), "credentials"),
            (json!({"url": "https://x.example/?a=1"}), "query"),
            (json!({"url": "not a url"}), "not a valid URL"),
            (json!({"weight": 0}), "between 1 and 1000"),
            (json!({"weight": 1001}), "between 1 and 1000"),
            (json!({"priority": -1}), "invalid value"),
            (json!({"kind": "bedrock"}), "unknown variant"),
            (json!({"colour": "red"}), "unknown field"),
            (
                json!({"auth": {"type": "api_key", "secret": "sk-live-123"}}),
                "not a key",
            ),
            (
                json!({"auth": {"type": "none", "secret": "env://X"}}),
                "only allowed with auth type api_key",
            ),
            (
                json!({"auth": {"type": "api_key"}}),
                "needs a secret reference",
            ),
            (
                json!({"auth": {"type": "api_key", "secret": "env://X", "extra": 1}}),
                "unknown field",
            ),
            (json!({"auth": {"type": "magic"}}), "unknown variant"),
            (json!({"deployments": {"gpt 4o": "x"}}), "deployment names"),
            (json!({"deployments": {"gpt-4o": ".."}}), "dots alone"),
            (json!({"deployments": {".": "gpt-4o"}}), "dots alone"),
            (
                json!({"api_version": "latest"}),
                "api_version must look like",
            ),
        ] {
            let mut value = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                value[k] = v.clone();
            }
            let err = backend(value).unwrap_err();
            assert!(err.contains(expected), "{patch}: {err}");
        }
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let entra = backend(
            json!({"name": "b", "url": "https://x.example", "kind": "openai",
            "auth": {"type": "entra_id"}}),
        )
        .unwrap();
        assert_eq!(entra.validate().unwrap_err().field, "auth.type");
        let version = backend(
            json!({"name": "b", "url": "https://x.example", "kind": "openai",
            "auth": {"type": "none"}, "api_version": "2024-10-21"}),
        )
        .unwrap();
        assert_eq!(version.validate().unwrap_err().field, "api_version");
    }

    #[test]
    fn renames_deployments() {
        let b = backend(
            json!({"name": "b", "url": "https://x.example", "kind": "azure_openai",
            "auth": {"type": "entra_id"}, "deployments": {"gpt-4o": "gpt-4o-eastus"}}),
        )
        .unwrap();
        assert_eq!(b.deployment_for("gpt-4o"), "gpt-4o-eastus");
        assert_eq!(b.deployment_for("gpt-4o-mini"), "gpt-4o-mini");
    }
}
