//! [`FakeIdentity`]: a Microsoft Entra ID token endpoint for the SDK's own credentials.
//!
//! Tests run the real `ClientSecretCredential` / `WorkloadIdentityCredential` against it, so
//! what the gateway does with tokens (caching, refresh, the Key Vault challenge) is the SDK's
//! real behaviour, not a stub's. The HTTP side is in [`super::token_endpoint`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use thiserror::Error;

use super::FakeAzureError;
use super::https::HttpsServer;
use super::tls::TestCa;
use super::token_endpoint;
use super::tokens::{IssuedToken, TokenCheck, TokenLedger};

/// Host name of the fake authority. `.test` is reserved (RFC 2606): it can never reach a
/// real machine even if a test's DNS override were missing.
pub const FAKE_AUTHORITY_HOST_NAME: &str = "login.fake.test";

/// Entra ID refuses token lifetimes beyond a day; so does the fake, which also keeps
/// `SystemTime` arithmetic far from overflow.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The one application the fake identity knows. Plain fields with a [`Default`]; change them
/// on a running identity with the `set_…` methods of [`FakeIdentity`].
#[derive(Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    pub tenant_id: String,
    pub client_id: String,
    /// What `client_secret` must be. Workload identity sends a `client_assertion` instead,
    /// accepted when non-empty (the fake does not verify the JWT).
    pub client_secret: String,
    /// `expires_in` of issued tokens (whole seconds are reported); at most
    /// [`MAX_TOKEN_LIFETIME`].
    pub token_lifetime: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            tenant_id: "7a1e2f10-5c3b-4d6e-9f80-1a2b3c4d5e6f".to_owned(),
            client_id: "0b4d9c2e-8f71-4a36-b5e2-6c7d8e9fa0b1".to_owned(),
            client_secret: "fake-client-secret".to_owned(),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

impl fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_lifetime", &self.token_lifetime)
            .finish()
    }
}

/// A setting the fake identity cannot serve.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "tenant id {0:?} is invalid: the Azure SDK accepts only non-empty letters, digits, \
         '.' and '-'"
    )]
    InvalidTenantId(String),
    #[error("client id must not be empty")]
    EmptyClientId,
    #[error("client secret must not be empty")]
    EmptyClientSecret,
    #[error("token lifetime {0:?} is longer than the 24-hour maximum")]
    LifetimeTooLong(Duration),
}

impl IdentitySettings {
    pub fn validate(&self) -> Result<(), IdentityError> {
        check_tenant_id(&self.tenant_id)?;
        if self.client_id.is_empty() {
            return Err(IdentityError::EmptyClientId);
        }
        if self.client_secret.is_empty() {
            return Err(IdentityError::EmptyClientSecret);
        }
        check_lifetime(self.token_lifetime)
    }
}

fn check_tenant_id(tenant_id: &str) -> Result<(), IdentityError> {
    let valid = !tenant_id.is_empty()
        && tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(IdentityError::InvalidTenantId(tenant_id.to_owned()))
    }
}

fn check_lifetime(lifetime: Duration) -> Result<(), IdentityError> {
    if lifetime > MAX_TOKEN_LIFETIME {
        return Err(IdentityError::LifetimeTooLong(lifetime));
    }
    Ok(())
}

/// State shared by the token endpoint, the handle and the fake Key Vault (which validates
/// bearer tokens against [`IdentityShared::check_token`]).
#[derive(Debug)]
pub(crate) struct IdentityShared {
    settings: RwLock<IdentitySettings>,
    down: AtomicBool,
    token_requests: AtomicU64,
    ledger: TokenLedger,
}

impl IdentityShared {
    fn new(settings: IdentitySettings) -> Self {
        Self {
            settings: RwLock::new(settings),
            down: AtomicBool::new(false),
            token_requests: AtomicU64::new(0),
            ledger: TokenLedger::default(),
        }
    }

    pub fn settings(&self) -> IdentitySettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut IdentitySettings)) {
        change(
            &mut self
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn count_token_request(&self) {
        self.token_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn issue(&self, scope: &str, client_id: &str, lifetime: Duration) -> IssuedToken {
        self.ledger.issue(scope, client_id, lifetime)
    }

    pub fn check_token(&self, token: &str, scope: &str) -> TokenCheck {
        self.ledger.check(token, scope)
    }
}

/// A running fake Entra ID token endpoint (`https://login.fake.test:PORT`). Dropping it
/// stops the server.
#[derive(Debug)]
pub struct FakeIdentity {
    server: HttpsServer,
    shared: Arc<IdentityShared>,
}

impl FakeIdentity {
    /// Serves on an ephemeral loopback port with a certificate from `ca`.
    pub async fn start(ca: &TestCa, settings: IdentitySettings) -> Result<Self, FakeAzureError> {
        settings.validate()?;
        let tls = ca.server_config(&[FAKE_AUTHORITY_HOST_NAME, "*.fake.test"])?;
        let shared = Arc::new(IdentityShared::new(settings));
        let server = HttpsServer::start(tls, token_endpoint::router(Arc::clone(&shared))).await?;
        Ok(Self { server, shared })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `https://login.fake.test:PORT`: the authority host for the SDK's cloud configuration
    /// or `AZURE_AUTHORITY_HOST`. Only clients that resolve the name to loopback reach it.
    pub fn authority_host(&self) -> String {
        format!("https://{FAKE_AUTHORITY_HOST_NAME}:{}", self.port())
    }

    /// The token endpoint URL for the configured tenant.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host(),
            self.tenant_id()
        )
    }

    pub fn settings(&self) -> IdentitySettings {
        self.shared.settings()
    }

    pub fn tenant_id(&self) -> String {
        self.shared.settings().tenant_id
    }

    pub fn client_id(&self) -> String {
        self.shared.settings().client_id
    }

    pub fn client_secret(&self) -> String {
        self.shared.settings().client_secret
    }

    /// Only this tenant gets tokens; others get `AADSTS90002`.
    pub fn set_tenant_id(&self, tenant_id: impl Into<String>) -> Result<(), IdentityError> {
        let tenant_id = tenant_id.into();
        check_tenant_id(&tenant_id)?;
        self.shared
            .update(|settings| settings.tenant_id = tenant_id);
        Ok(())
    }

    /// Only this client id gets tokens; others get `AADSTS700016`.
    pub fn set_client_id(&self, client_id: impl Into<String>) -> Result<(), IdentityError> {
        let client_id = client_id.into();
        if client_id.is_empty() {
            return Err(IdentityError::EmptyClientId);
        }
        self.shared
            .update(|settings| settings.client_id = client_id);
        Ok(())
    }

    /// Rotates the client secret: the old one gets `AADSTS7000215` from now on.
    pub fn set_client_secret(&self, secret: impl Into<String>) -> Result<(), IdentityError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(IdentityError::EmptyClientSecret);
        }
        self.shared
            .update(|settings| settings.client_secret = secret);
        Ok(())
    }

    /// Lifetime of tokens issued from now on. Note the SDK refreshes any token within five
    /// minutes of expiry, so a short lifetime makes it ask for a new token on every call.
    pub fn set_token_lifetime(&self, lifetime: Duration) -> Result<(), IdentityError> {
        check_lifetime(lifetime)?;
        self.shared
            .update(|settings| settings.token_lifetime = lifetime);
        Ok(())
    }

    /// While down, every request gets 503 `temporarily_unavailable` (and still counts).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// POSTs to the token endpoint (what a credential sends), whatever the answer.
    pub fn token_requests(&self) -> u64 {
        self.shared.token_requests.load(Ordering::Relaxed)
    }

    /// Tokens issued for exactly `scope`, oldest first.
    pub fn issued(&self, scope: &str) -> Vec<IssuedToken> {
        self.shared.ledger.issued(Some(scope))
    }

    /// Every token issued, oldest first.
    pub fn issued_all(&self) -> Vec<IssuedToken> {
        self.shared.ledger.issued(None)
    }

    /// Whether `token` was issued for `scope` and has not expired: what a resource server
    /// would accept. For checking what a backend received.
    pub fn is_valid(&self, token: &str, scope: &str) -> bool {
        self.shared.check_token(token, scope) == TokenCheck::Valid
    }

    /// Issues a token without an HTTP round trip (not counted in
    /// [`FakeIdentity::token_requests`]), for tests that call a fake resource directly.
    pub fn mint_token(&self, scope: &str) -> IssuedToken {
        let settings = self.shared.settings();
        self.shared
            .issue(scope, &settings.client_id, settings.token_lifetime)
    }

    pub(crate) fn shared(&self) -> Arc<IdentityShared> {
        Arc::clone(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert_eq!(IdentitySettings::default().validate(), Ok(()));
        let bad_tenant = IdentitySettings {
            tenant_id: "a/b".to_owned(),
            ..IdentitySettings::default()
        };
        assert_eq!(
            bad_tenant.validate(),
            Err(IdentityError::InvalidTenantId("a/b".to_owned()))
        );
        let long = IdentitySettings {
            token_lifetime: MAX_TOKEN_LIFETIME + Duration::from_secs(1),
            ..IdentitySettings::default()
        };
        assert!(matches!(
            long.validate(),
            Err(IdentityError::LifetimeTooLong(_))
        ));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", IdentitySettings::default());
        assert!(!shown.contains("fake-client-secret"), "{shown}");
    }

    #[tokio::test]
    async fn setters_refuse_unusable_values() {
        let ca = TestCa::new().expect("CA");
        let identity = FakeIdentity::start(&ca, IdentitySettings::default())
            .await
            .expect("starts");
        assert_eq!(
            identity.set_tenant_id(""),
            Err(IdentityError::InvalidTenantId(String::new()))
        );
        assert_eq!(
            identity.set_client_id(""),
            Err(IdentityError::EmptyClientId)
        );
        assert_eq!(
            identity.set_client_secret(""),
            Err(IdentityError::EmptyClientSecret)
        );
        assert!(
            identity
                .set_token_lifetime(Duration::from_secs(90_000))
                .is_err()
        );
        assert_eq!(identity.settings(), IdentitySettings::default());
        identity
            .set_tenant_id("contoso.onmicrosoft.com")
            .expect("valid");
        assert!(
            identity
                .token_url()
                .ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
    }

    #[tokio::test]
    async fn minted_tokens_are_valid_for_their_scope_only() {
        let ca = TestCa::new().expect("CA");
        let identity = FakeIdentity::start(&ca, IdentitySettings::default())
            .await
            .expect("starts");
        let token = identity.mint_token("https://vault.azure.net/.default");
        assert!(identity.is_valid(&token.token, "https://vault.azure.net/.default"));
        assert!(!identity.is_valid(&token.token, "https://management.azure.com/.default"));
        assert_eq!(identity.token_requests(), 0);
        assert_eq!(
            identity.issued("https://vault.azure.net/.default"),
            vec![token]
        );
    }
}
