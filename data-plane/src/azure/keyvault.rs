//! Reading secrets with the official Key Vault client, one client per vault.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use secrecy::SecretString;

use super::{AzureError, VaultUrlTemplate};

pub struct KeyVault {
    template: VaultUrlTemplate,
    credential: Arc<dyn TokenCredential>,
    client_options: ClientOptions,
    /// Clients keep their challenge state and connections; reads happen off the request path
    /// (config builds, background refresh, a backend's 401), so a mutex is fine here.
    clients: Mutex<HashMap<String, Arc<SecretClient>>>,
}

impl KeyVault {
    pub fn new(
        template: VaultUrlTemplate,
        credential: Arc<dyn TokenCredential>,
        client_options: ClientOptions,
    ) -> Self {
        Self {
            template,
            credential,
            client_options,
            clients: Mutex::default(),
        }
    }

    pub async fn get(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretString, AzureError> {
        let client = self.client(vault)?;
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        let secret = client
            .get_secret(name, Some(options))
            .await
            .and_then(|response| response.into_model())
            .map_err(|error| AzureError::Sdk(error.to_string()))?;
        secret
            .value
            .map(SecretString::from)
            .ok_or_else(|| AzureError::Sdk("Key Vault returned the secret without a value".into()))
    }

    fn client(&self, vault: &str) -> Result<Arc<SecretClient>, AzureError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(vault) {
            return Ok(client.clone());
        }
        let options = SecretClientOptions {
            client_options: self.client_options.clone(),
            ..Default::default()
        };
        let client = SecretClient::new(
            &self.template.url(vault),
            self.credential.clone(),
            Some(options),
        )
        .map(Arc::new)
        .map_err(|error| AzureError::Sdk(format!("vault '{vault}': {error}")))?;
        clients.insert(vault.to_owned(), client.clone());
        Ok(client)
    }
}
