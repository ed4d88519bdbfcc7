//! Where a vault named in `keyvault://VAULT/…` lives: public Azure by default, another host
//! for sovereign clouds, private endpoints and tests.

use std::fmt;
use std::str::FromStr;

const PLACEHOLDER: &str = "{vault}";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultUrlTemplate(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "the vault URL template must contain {PLACEHOLDER} (e.g. https://{{vault}}.vault.azure.net)"
    )]
    NoPlaceholder,
    #[error(
        "the vault URL template must use https: Key Vault only hands out tokens over TLS (got {0})"
    )]
    NotHttps(String),
    #[error("the vault URL template does not make a valid URL: {0}")]
    Invalid(String),
}

impl VaultUrlTemplate {
    pub fn url(&self, vault: &str) -> String {
        self.0.replace(PLACEHOLDER, vault)
    }
}

impl Default for VaultUrlTemplate {
    fn default() -> Self {
        Self("https://{vault}.vault.azure.net".to_owned())
    }
}

impl fmt::Display for VaultUrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for VaultUrlTemplate {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().trim_end_matches('/');
        if !text.contains(PLACEHOLDER) {
            return Err(TemplateError::NoPlaceholder);
        }
        if !text.starts_with("https://") {
            return Err(TemplateError::NotHttps(text.to_owned()));
        }
        // Vault names are [0-9a-zA-Z-]; any valid one must give a valid URL.
        let sample = text.replace(PLACEHOLDER, "sample-vault");
        match sample.parse::<http::Uri>() {
            Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(Self(text.to_owned())),
            _ => Err(TemplateError::Invalid(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_public_azure() {
        assert_eq!(
            VaultUrlTemplate::default().url("my-vault"),
            "https://my-vault.vault.azure.net"
        );
    }

    #[test]
    fn sovereign_clouds_and_ports_are_accepted() {
        let china: VaultUrlTemplate = "https://{vault}.vault.azure.cn/".parse().unwrap();
        assert_eq!(china.url("kv"), "https://kv.vault.azure.cn");
        let local: VaultUrlTemplate = "https://{vault}.vault.azure.net:8443".parse().unwrap();
        assert_eq!(local.url("kv"), "https://kv.vault.azure.net:8443");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert_eq!(
            "https://vault.azure.net".parse::<VaultUrlTemplate>(),
            Err(TemplateError::NoPlaceholder)
        );
        assert!(matches!(
            "http://{vault}.vault.azure.net".parse::<VaultUrlTemplate>(),
            Err(TemplateError::NotHttps(_))
        ));
        assert!(matches!(
            "https://{vault} .example".parse::<VaultUrlTemplate>(),
            Err(TemplateError::Invalid(_))
        ));
        let message = TemplateError::NoPlaceholder.to_string();
        assert!(message.contains("{vault}"), "{message}");
    }
}
