//! Shared setup: a started fake, real SDK credentials and clients wired to it.

use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use azure_core::credentials::{Secret, TokenCredential};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::{
    Secret as KvSecret, SecretClientGetSecretOptions, SecretProperties,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures_core::Stream;
use sluice_testkit::azure::FakeAzure;

pub async fn fake() -> FakeAzure {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    FakeAzure::start().await.expect("fake Azure starts")
}

pub fn secret_credential(fake: &FakeAzure, secret: &str) -> Arc<ClientSecretCredential> {
    ClientSecretCredential::new(
        &fake.tenant_id(),
        fake.client_id(),
        Secret::new(secret.to_owned()),
        Some(ClientSecretCredentialOptions {
            client_options: fake.client_options(),
        }),
    )
    .expect("credential builds")
}

pub fn workload_credential(
    fake: &FakeAzure,
    token_file: PathBuf,
) -> Arc<WorkloadIdentityCredential> {
    WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: fake.client_options(),
        },
        client_id: Some(fake.client_id()),
        tenant_id: Some(fake.tenant_id()),
        token_file_path: Some(token_file),
    }))
    .expect("credential builds")
}

pub fn secret_client(
    fake: &FakeAzure,
    vault: &str,
    credential: Arc<dyn TokenCredential>,
) -> SecretClient {
    SecretClient::new(
        &fake.vault_url(vault),
        credential,
        Some(SecretClientOptions {
            client_options: fake.client_options(),
            ..Default::default()
        }),
    )
    .expect("client builds")
}

/// A client with the right client secret.
pub fn client_for(fake: &FakeAzure, vault: &str) -> SecretClient {
    secret_client(fake, vault, secret_credential(fake, &fake.client_secret()))
}

pub async fn get(
    client: &SecretClient,
    name: &str,
    version: Option<&str>,
) -> azure_core::Result<KvSecret> {
    let options = SecretClientGetSecretOptions {
        secret_version: version.map(str::to_owned),
        ..Default::default()
    };
    client.get_secret(name, Some(options)).await?.into_model()
}

/// Drains an SDK pager (a `Stream`) without pulling in a futures utility crate.
pub async fn collect<S>(stream: S) -> azure_core::Result<Vec<SecretProperties>>
where
    S: Stream<Item = azure_core::Result<SecretProperties>>,
{
    let mut stream = pin!(stream);
    let mut items = Vec::new();
    while let Some(item) = poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        items.push(item?);
    }
    Ok(items)
}

/// The `error.code` the SDK took from a Key Vault or Entra error.
pub fn error_code(error: &azure_core::Error) -> Option<&str> {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// A fresh directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fake-azure-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
