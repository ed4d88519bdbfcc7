//! Key Vault secrets and Entra ID tokens end to end: proxies whose Azure identity points at
//! the fake Entra ID and Key Vault (the real Azure SDK over real HTTPS), in front of mock
//! upstreams that accept exactly one key, or record the bearer tokens they were sent.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use reqwest::{Method, RequestBuilder};
use serde_json::json;
use sluice_data_plane::azure::{AzureOptions, CredentialKind, IdentityConfig};
use sluice_data_plane::backend::RefreshPolicy;
use sluice_testkit::azure::{FakeAzure, VAULT_SCOPE};
use sluice_testkit::mock_upstream::{MockConfig, MockHandle, MockUpstream};
use support::logs::CapturedLogs;
use support::proxy::{
    ProxySettings, TestProxy, backend_yaml, backend_yaml_with_auth, mock, pool_yaml_of, served_by,
};
use support::{TestControlPlane, TestDatabase, eventually, expect_status};
use tempfile::TempDir;
use tokio::task::JoinHandle;

const POOL: &str = "gpt-4o";
/// The scope Azure OpenAI accepts tokens for (the contract, not the proxy's constant).
const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const VAULT: &str = "myvault";
const SECRET: &str = "aoai-key";
/// Background refresh that never fires during a test: what changes a key is the 401 path.
const NO_BACKGROUND_REFRESH: Duration = Duration::from_secs(300);
/// Generous bound for anything that should take well under a second.
const WITHIN: Duration = Duration::from_secs(10);

/// A backend (YAML) pointing at `mock`, its key in `keyvault://myvault/<name>[/<version>]`.
fn vault_backend(mock: &MockHandle, name: &str, version: Option<&str>) -> String {
    let version = version.map(|v| format!("/{v}")).unwrap_or_default();
    let auth = format!("{{ type: api_key, secret: \"keyvault://{VAULT}/{name}{version}\" }}");
    backend_yaml_with_auth(mock, &auth, "")
}

/// A distinctive key value, so a match in a log or a response can only be a leak.
fn key_value(label: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "kv-{label}-{:016x}",
        RandomState::new().hash_one((SystemTime::now(), label))
    )
}

/// A mock Azure OpenAI backend that accepts only `key`.
async fn keyed_mock(name: &str, key: &str, latency: Duration) -> MockHandle {
    let config = MockConfig::named(name).api_key(key).latency(latency);
    MockUpstream::start_local(config).await.unwrap()
}

/// The fake Entra ID and Key Vault, and the proxy settings that point an identity at them.
struct Azure {
    fake: FakeAzure,
    token_file: PathBuf,
    _dir: TempDir,
}

impl Azure {
    async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let fake = FakeAzure::start().await.expect("fake Azure starts");
        let dir = tempfile::tempdir().unwrap();
        let token_file = fake.write_federated_token_file(dir.path()).unwrap();
        Self {
            fake,
            token_file,
            _dir: dir,
        }
    }

    /// AKS-style workload identity against the fakes.
    fn settings(&self, refresh_interval: Duration) -> ProxySettings {
        self.settings_with(
            IdentityConfig {
                kind: CredentialKind::WorkloadIdentity,
                federated_token_file: Some(self.token_file.clone()),
                ..self.app_registration()
            },
            refresh_interval,
        )
    }

    /// The fake's tenant and app registration, with no credential chosen yet.
    fn app_registration(&self) -> IdentityConfig {
        IdentityConfig {
            tenant_id: Some(self.fake.tenant_id()),
            client_id: Some(self.fake.client_id()),
            ..IdentityConfig::default()
        }
    }

    fn settings_with(&self, identity: IdentityConfig, refresh_interval: Duration) -> ProxySettings {
        ProxySettings {
            allow_anonymous: false,
            azure: AzureOptions {
                vault_url_template: self.fake.url_template().parse().unwrap(),
                identity,
                client_options: self.fake.client_options(),
                request_timeout: Duration::from_secs(5),
            },
            refresh: RefreshPolicy {
                interval: refresh_interval,
            },
            redis_urls: Vec::new(),
            report_interval: None,
            listener: Default::default(),
        }
    }

    /// A proxy from a static config with one pool of `backends` (YAML lines). Calls get one
    /// attempt, so a refused key cannot hide behind a retry on another backend.
    async fn proxy(&self, backends: &[String], refresh_interval: Duration) -> TestProxy {
        self.proxy_with(1, backends, &[], refresh_interval).await
    }

    /// [`Self::proxy`] with `max_attempts` per call, and `file_keyed` mocks whose backends
    /// ([`backend_yaml`]) read their key from a file.
    async fn proxy_with(
        &self,
        max_attempts: u32,
        backends: &[String],
        file_keyed: &[&MockHandle],
        refresh_interval: Duration,
    ) -> TestProxy {
        let retry = format!("retry: {{ max_attempts: {max_attempts} }}");
        let pool = pool_yaml_of(POOL, &retry, backends);
        let settings = self.settings(refresh_interval);
        TestProxy::start_configured(&pool, file_keyed, &[], settings).await
    }

    fn set_key(&self, name: &str, value: &str) -> String {
        self.fake
            .key_vault()
            .set_secret(VAULT, name, value)
            .unwrap()
    }

    /// Rotates the key the hard way: the new value goes into Key Vault and, at the same
    /// moment, the backend accepts only it (no overlap in which both keys work).
    fn rotate(&self, backend: &MockHandle, new_key: &str) {
        self.set_key(SECRET, new_key);
        backend.set_api_key(Some(new_key.to_owned()));
    }

    fn vault_requests(&self) -> u64 {
        self.fake.key_vault().request_count()
    }
}

/// The `api-key` of every request `mock` recorded, received at or after `since`.
fn keys_seen(mock: &MockHandle, since: SystemTime) -> Vec<String> {
    mock.requests()
        .iter()
        .filter(|request| request.received_at >= since)
        .map(|request| request.api_key().unwrap_or("<none>").to_owned())
        .collect()
}

/// The state `sluice_backend_state` reports for one backend (the label whose gauge is 1).
fn backend_state(metrics: &str, backend: &str) -> Option<String> {
    let labels = format!("pool=\"{POOL}\",backend=\"{backend}\",state=\"");
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("sluice_backend_state{")?;
        let state = rest.strip_prefix(&labels)?;
        let (state, value) = state.split_once("\"} ")?;
        (value.trim() == "1").then(|| state.to_owned())
    })
}

/// One call and whether the client saw it succeed; a stream must also end properly.
async fn outcome(request: RequestBuilder, stream: bool) -> Result<(), String> {
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|error| error.to_string())?;
    let complete = !stream || body.contains("data: [DONE]");
    if status == 200 && complete {
        Ok(())
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// A lock whose data stays usable if a client task panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Clients calling the pool back to back, alternating plain and streamed chat calls.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<JoinHandle<()>>,
}

impl SteadyLoad {
    fn start(proxy: &Arc<TestProxy>, clients: usize, pause: Duration) -> Self {
        let load = Self {
            stop: Arc::default(),
            succeeded: Arc::default(),
            failures: Arc::default(),
            clients: Vec::with_capacity(clients),
        };
        let clients = (0..clients)
            .map(|_| {
                let (proxy, stop) = (proxy.clone(), load.stop.clone());
                let (succeeded, failures) = (load.succeeded.clone(), load.failures.clone());
                tokio::spawn(async move {
                    let mut stream = false;
                    while !stop.load(Ordering::Relaxed) {
                        let request = if stream {
                            proxy.stream(POOL)
                        } else {
                            proxy.chat(POOL)
                        };
                        match outcome(request, stream).await {
                            Ok(()) => {
                                succeeded.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(failure) => lock(&failures).push(failure),
                        }
                        stream = !stream;
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self { clients, ..load }
    }

    fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Stops the clients and returns how many calls succeeded, and every failure.
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        let failures = std::mem::take(&mut *lock(&self.failures));
        (self.succeeded.load(Ordering::Relaxed), failures)
    }
}

/// A `keyvault://` key is read with the proxy's identity and is exactly what the backend
/// receives, in place of the client's own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_key_vault_is_what_the_backend_receives() {
    let azure = Azure::start().await;
    let key = key_value("eastus");
    azure.set_key(SECRET, &key);
    let eastus = keyed_mock("eastus", &key, Duration::ZERO).await;
    let backends = [vault_backend(&eastus, SECRET, None)];
    let proxy = azure.proxy(&backends, NO_BACKGROUND_REFRESH).await;

    for _ in 0..5 {
        let response = proxy.chat(POOL).send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }
    let requests = eastus.requests();
    assert_eq!(requests.len(), 5);
    for request in &requests {
        assert_eq!(request.api_key(), Some(key.as_str()));
        assert_eq!(
            request.bearer_token(),
            None,
            "no client credential upstream"
        );
    }
    assert!(azure.vault_requests() > 0, "the key came from Key Vault");
}

/// An app registration's certificate (PEM, RSA) is a credential too: the proxy signs its
/// own client assertion and reads the vault with the token it gets for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_reads_key_vault() {
    let azure = Azure::start().await;
    let key = key_value("eastus");
    azure.set_key(SECRET, &key);
    let eastus = keyed_mock("eastus", &key, Duration::ZERO).await;
    let certificate_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["sluice-proxy".into()])
        .unwrap()
        .self_signed(&certificate_key)
        .unwrap();
    let pem = azure._dir.path().join("proxy-certificate.pem");
    std::fs::write(
        &pem,
        format!("{}{}", certificate.pem(), certificate_key.serialize_pem()),
    )
    .unwrap();
    let settings = azure.settings_with(
        IdentityConfig {
            kind: CredentialKind::ClientCertificate,
            client_certificate: Some(pem),
            ..azure.app_registration()
        },
        NO_BACKGROUND_REFRESH,
    );
    let pool = pool_yaml_of(POOL, "", &[vault_backend(&eastus, SECRET, None)]);
    let proxy = TestProxy::start_configured(&pool, &[], &[], settings).await;

    let response = proxy.chat(POOL).send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(eastus.last_request().unwrap().api_key(), Some(key.as_str()));
    assert!(
        !azure.fake.identity().issued(VAULT_SCOPE).is_empty(),
        "a vault token was issued for the certificate's assertion"
    );
}

/// Rotating the key in Key Vault while the backend switches to it, under steady load of
/// plain and streamed calls, fails no client call: the first 401 re-reads the key and the
/// call is sent again with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_under_steady_load_fails_no_call() {
    let azure = Azure::start().await;
    let (old_key, new_key) = (key_value("old"), key_value("new"));
    azure.set_key(SECRET, &old_key);
    // A little latency keeps calls in flight at the moment of rotation.
    let eastus = keyed_mock("eastus", &old_key, Duration::from_millis(5)).await;
    let backends = [vault_backend(&eastus, SECRET, None)];
    let proxy = Arc::new(azure.proxy(&backends, NO_BACKGROUND_REFRESH).await);

    let load = SteadyLoad::start(&proxy, 4, Duration::ZERO);
    eventually(WITHIN, "calls before the rotation", || async {
        load.succeeded() >= 40
    })
    .await;
    azure.rotate(&eastus, &new_key);
    // From here on the backend refuses the old key.
    let rotated_at = SystemTime::now();
    eventually(WITHIN, "calls with the new key", || async {
        keys_seen(&eastus, rotated_at)
            .iter()
            .filter(|key| **key == new_key)
            .count()
            >= 40
    })
    .await;
    let (succeeded, failures) = load.stop().await;

    assert!(failures.is_empty(), "client-visible failures: {failures:?}");
    let after = keys_seen(&eastus, rotated_at);
    assert!(
        after.contains(&old_key),
        "the rotation happened under load: the old key was refused at least once"
    );
    // Calls sent with the old key before the switch may still land among the first new-key
    // ones; long after it, only the new key is sent.
    assert!(
        after.iter().rev().take(20).all(|key| *key == new_key),
        "once switched, only the new key is sent"
    );
    assert!(succeeded >= 80, "{succeeded} calls succeeded");
}

/// A burst of calls refused after a rotation costs one Key Vault read, not one per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_401s_after_rotation_reads_key_vault_once() {
    const BURST: usize = 16;
    let azure = Azure::start().await;
    let (old_key, new_key) = (key_value("old"), key_value("new"));
    azure.set_key(SECRET, &old_key);
    // Every answer (401s too) takes this long, so the whole burst is sent with the old key
    // before the first refusal comes back.
    let eastus = keyed_mock("eastus", &old_key, Duration::from_millis(200)).await;
    let backends = [vault_backend(&eastus, SECRET, None)];
    let proxy = Arc::new(azure.proxy(&backends, NO_BACKGROUND_REFRESH).await);
    assert_eq!(outcome(proxy.chat(POOL), false).await, Ok(()));

    let requests_before = azure.vault_requests();
    azure.rotate(&eastus, &new_key);
    let rotated_at = SystemTime::now();
    let burst: Vec<_> = (0..BURST)
        .map(|_| tokio::spawn(outcome(proxy.chat(POOL), false)))
        .collect();
    for call in burst {
        assert_eq!(call.await.unwrap(), Ok(()));
    }

    let after = keys_seen(&eastus, rotated_at);
    let refused = after.iter().filter(|key| **key == old_key).count();
    assert!(
        refused >= BURST / 2,
        "a real burst of 401s: {refused} of {BURST} calls were refused"
    );
    assert_eq!(
        after.iter().filter(|key| **key == new_key).count(),
        BURST,
        "every call was sent again with the new key"
    );
    assert_eq!(
        azure.vault_requests() - requests_before,
        1,
        "single-flight: {refused} refusals, one Key Vault read"
    );
}

/// A backend refusing a key that Key Vault has not replaced (rotated upstream only) costs one
/// Key Vault read; then the backend is ejected and calls fail over to the other backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_the_vault_still_holds_ejects_the_backend() {
    let azure = Azure::start().await;
    let key = key_value("eastus");
    azure.set_key(SECRET, &key);
    let eastus = keyed_mock("eastus", &key, Duration::ZERO).await;
    let westus = mock("westus").await;
    let backends = [
        vault_backend(&eastus, SECRET, None),
        backend_yaml(&westus, ""),
    ];
    let proxy = azure
        .proxy_with(2, &backends, &[&westus], NO_BACKGROUND_REFRESH)
        .await;
    let requests_before = azure.vault_requests();

    eastus.set_api_key(Some(key_value("unknown-to-the-vault")));
    // Round robin offers eastus within two calls; it is out from its first refusal on.
    assert_eq!(proxy.backends_of(POOL, 4).await, vec!["westus"; 4]);
    assert_eq!(eastus.request_count(), 1, "refused once, never sent again");
    assert_eq!(
        azure.vault_requests() - requests_before,
        1,
        "one re-read of the key"
    );
    assert_eq!(
        backend_state(&proxy.metrics().await, "eastus").as_deref(),
        Some("ejected")
    );
}

/// `keyvault://vault/name/VERSION` keeps using that version after a newer one is stored,
/// through background refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_is_used_even_after_rotation() {
    let azure = Azure::start().await;
    let pinned_key = key_value("pinned");
    let version = azure.set_key(SECRET, &pinned_key);
    let eastus = keyed_mock("eastus", &pinned_key, Duration::ZERO).await;
    let backends = [vault_backend(&eastus, SECRET, Some(&version))];
    // Refreshing every second makes the proxy read the vault again after the rotation.
    let proxy = azure.proxy(&backends, Duration::from_secs(1)).await;
    assert_eq!(outcome(proxy.chat(POOL), false).await, Ok(()));

    azure.set_key(SECRET, &key_value("latest"));
    let vault = azure.fake.key_vault();
    vault.reset_requests();
    eventually(
        WITHIN,
        "a background refresh after the rotation",
        || async { vault.requests().iter().any(|request| request.status == 200) },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(outcome(proxy.chat(POOL), false).await, Ok(()));
    }

    let pinned_path = format!("/secrets/{SECRET}/{version}");
    for request in vault.requests() {
        assert_eq!(request.path, pinned_path, "only the pinned version is read");
    }
    assert!(
        keys_seen(&eastus, SystemTime::UNIX_EPOCH)
            .iter()
            .all(|key| *key == pinned_key)
    );
    assert_eq!(eastus.request_count(), 4);
}

/// A secret that does not exist leaves its backend out of rotation, with the reason in the
/// log and `no_credential` on /metrics, while the pool's other backend serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_leaves_its_backend_out_with_the_reason() {
    let logs = CapturedLogs::install();
    let azure = Azure::start().await;
    let key = key_value("eastus");
    azure.set_key(SECRET, &key);
    let eastus = keyed_mock("eastus", &key, Duration::ZERO).await;
    let ghost = mock("ghost").await;
    let backends = [
        vault_backend(&eastus, SECRET, None),
        vault_backend(&ghost, "no-such-key", None),
    ];
    let proxy = azure.proxy(&backends, NO_BACKGROUND_REFRESH).await;

    assert_eq!(proxy.backends_of(POOL, 6).await, vec!["eastus"; 6]);
    assert_eq!(ghost.request_count(), 0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        backend_state(&metrics, "ghost").as_deref(),
        Some("no_credential")
    );
    assert_eq!(
        backend_state(&metrics, "eastus").as_deref(),
        Some("available")
    );
    let reason = logs.lines_with(&[
        "ghost",
        "no credential",
        "keyvault://myvault/no-such-key",
        "was not found",
    ]);
    assert!(
        !reason.is_empty(),
        "no log line gives the reason: {:#?}",
        logs.lines_with(&["ghost"])
    );
}

/// Key Vault down when the proxy starts: its backend takes no traffic (`no_credential`, the
/// reason logged) while a backend with a local key serves, and it joins once Key Vault
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_waits_for_key_vault_and_joins_when_it_returns() {
    let logs = CapturedLogs::install();
    let azure = Azure::start().await;
    let key = key_value("vaulted");
    azure.set_key(SECRET, &key);
    azure.fake.key_vault().set_down(true);
    let vaulted = keyed_mock("vaulted", &key, Duration::ZERO).await;
    let local = mock("local").await;
    let backends = [
        vault_backend(&vaulted, SECRET, None),
        backend_yaml(&local, ""),
    ];
    // Retries back off 1 s, 2 s, 4 s…, capped at the refresh interval: the backend joins at
    // most four seconds after Key Vault is back.
    let proxy = azure
        .proxy_with(1, &backends, &[&local], Duration::from_secs(4))
        .await;

    assert_eq!(proxy.backends_of(POOL, 4).await, vec!["local"; 4]);
    assert_eq!(
        backend_state(&proxy.metrics().await, "vaulted").as_deref(),
        Some("no_credential")
    );
    let reason = logs.lines_with(&[
        "vaulted",
        "no credential",
        "keyvault://myvault/aoai-key",
        "unavailable",
    ]);
    assert!(
        !reason.is_empty(),
        "no log line gives the reason: {:#?}",
        logs.lines_with(&["vaulted"])
    );
    assert_eq!(vaulted.request_count(), 0);

    azure.fake.key_vault().set_down(false);
    eventually(WITHIN, "the vaulted backend to take traffic", || async {
        let response = proxy.chat(POOL).send().await.unwrap();
        assert_eq!(response.status(), 200);
        served_by(&response) == "vaulted"
    })
    .await;
    assert_eq!(
        backend_state(&proxy.metrics().await, "vaulted").as_deref(),
        Some("available")
    );
    assert!(
        keys_seen(&vaulted, SystemTime::UNIX_EPOCH)
            .iter()
            .all(|seen| *seen == key)
    );
}

/// `entra_id` backends get the proxy's own Entra ID token for Azure OpenAI, renewed before it
/// expires: with six-second tokens under steady load, every token the backend saw was issued
/// for the Cognitive Services scope and still valid, with time to spare, when it arrived; and
/// tokens change. No call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_backends_get_tokens_renewed_before_they_expire() {
    const TOKEN_LIFETIME: Duration = Duration::from_secs(6);
    // The proxy renews halfway through a short token's life on a one-second tick, leaving
    // about three seconds; one is slack enough for a loaded machine, yet catches a proxy
    // that renews only as the token expires.
    const RENEWED_WITH_TIME_LEFT: Duration = Duration::from_secs(1);
    let azure = Azure::start().await;
    azure
        .fake
        .identity()
        .set_token_lifetime(TOKEN_LIFETIME)
        .unwrap();
    // Accepts any credential: what it was sent is checked against the identity's ledger.
    let eastus = MockUpstream::start_local(MockConfig::named("eastus"))
        .await
        .unwrap();
    let backends = [backend_yaml_with_auth(&eastus, "{ type: entra_id }", "")];
    let proxy = Arc::new(azure.proxy(&backends, NO_BACKGROUND_REFRESH).await);

    let load = SteadyLoad::start(&proxy, 2, Duration::from_millis(50));
    let distinct_tokens = || {
        let tokens: BTreeSet<String> = eastus
            .requests()
            .iter()
            .filter_map(|request| request.bearer_token().map(str::to_owned))
            .collect();
        tokens.len()
    };
    // Three tokens in a row: renewal is periodic, not a one-off.
    eventually(3 * TOKEN_LIFETIME, "two token renewals", || async {
        distinct_tokens() >= 3
    })
    .await;
    let (succeeded, failures) = load.stop().await;

    assert!(failures.is_empty(), "client-visible failures: {failures:?}");
    let issued = azure.fake.identity().issued(COGNITIVE_SERVICES_SCOPE);
    let requests = eastus.requests();
    assert_eq!(requests.len() as u64, succeeded, "every call is checked");
    for request in &requests {
        let token = request.bearer_token().expect("a bearer token");
        let token = issued
            .iter()
            .find(|issued| issued.token == token)
            .unwrap_or_else(|| panic!("{token} was not issued for {COGNITIVE_SERVICES_SCOPE}"));
        assert!(
            token.is_live_at(request.received_at + RENEWED_WITH_TIME_LEFT),
            "{} arrived {:?} after it was issued, with less than {RENEWED_WITH_TIME_LEFT:?} \
             of its {TOKEN_LIFETIME:?} left",
            token.token,
            request.received_at.duration_since(token.issued_at)
        );
        assert_eq!(request.api_key(), None, "no client credential upstream");
    }
}

/// No key value leaves the proxy except towards its backend: with every crate logging at
/// TRACE, a control plane and a proxy serving a `keyvault://` backend through a rotation,
/// neither the old nor the new value is in the logs, either /metrics, any admin API read or
/// the proxy's snapshot cache, while the backend did receive both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_values_appear_in_no_log_metric_admin_response_or_snapshot() {
    let logs = CapturedLogs::install();
    let azure = Azure::start().await;
    let (old_key, new_key) = (key_value("old"), key_value("new"));
    azure.set_key(SECRET, &old_key);
    let eastus = keyed_mock("eastus", &old_key, Duration::ZERO).await;
    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = TestProxy::follow_configured(
        format!("http://{}", cp.grpc_addr),
        "proxy-kv",
        cache.path(),
        None,
        azure.settings(NO_BACKGROUND_REFRESH),
    )
    .await;

    let reference = format!("keyvault://{VAULT}/{SECRET}");
    let created = cp.post("/api/v1/pools", &json!({"name": POOL})).await;
    expect_status(created, 201).await;
    let backend = json!({"name": "eastus", "url": eastus.url(), "kind": "azure_openai",
                         "auth": {"type": "api_key", "secret": reference}});
    let created = cp
        .post(&format!("/api/v1/pools/{POOL}/backends"), &backend)
        .await;
    expect_status(created, 201).await;
    let client = expect_status(cp.post("/api/v1/keys", &json!({"id": "team-a"})).await, 201).await;
    let client_key = client["secret"].as_str().unwrap().to_owned();
    let call = || async {
        let url = proxy.url(&format!(
            "/openai/deployments/{POOL}/chat/completions?api-version=2024-10-21"
        ));
        let body = json!({"messages": [{"role": "user", "content": "hello"}]});
        let request = proxy.client.post(url).header("api-key", &client_key);
        request.json(&body).send().await.unwrap().status()
    };
    eventually(WITHIN, "the proxy to serve the pool", || async {
        call().await == 200
    })
    .await;
    azure.rotate(&eastus, &new_key);
    for _ in 0..3 {
        assert_eq!(call().await, 200);
    }

    let received = keys_seen(&eastus, SystemTime::UNIX_EPOCH);
    assert!(received.contains(&old_key) && received.contains(&new_key));
    let snapshot = cache.path().join("snapshot.json");
    eventually(WITHIN, "the snapshot cache", || async { snapshot.exists() }).await;
    let mut places = vec![
        ("proxy /metrics".to_owned(), proxy.metrics().await),
        (
            "snapshot cache".to_owned(),
            std::fs::read_to_string(&snapshot).unwrap(),
        ),
    ];
    let cp_metrics = cp.anonymous(Method::GET, "/metrics").send().await.unwrap();
    places.push((
        "control plane /metrics".to_owned(),
        cp_metrics.text().await.unwrap(),
    ));
    for path in [
        "/api/v1/pools".to_owned(),
        format!("/api/v1/pools/{POOL}"),
        format!("/api/v1/pools/{POOL}/backends"),
        format!("/api/v1/pools/{POOL}/backends/eastus"),
        "/api/v1/config".to_owned(),
        "/api/v1/audit".to_owned(),
        "/api/v1/proxies".to_owned(),
        "/api/v1/keys".to_owned(),
        "/api/v1/keys/team-a".to_owned(),
    ] {
        let body = expect_status(cp.get(&path).await, 200).await;
        places.push((path, body.to_string()));
    }
    // Last, so it includes whatever serving the reads above logged.
    places.push(("logs".to_owned(), logs.text()));

    // The scans look at the right things: each place holds what it is meant to.
    let holds = |place: &str, needle: &str| {
        let (_, text) = places.iter().find(|(name, _)| name == place).unwrap();
        assert!(text.contains(needle), "{place} lacks {needle}");
    };
    holds("snapshot cache", &reference);
    holds("/api/v1/config", &reference);
    holds("/api/v1/proxies", "proxy-kv");
    holds("/api/v1/audit", "backend.create");
    holds("proxy /metrics", "sluice_backend_state");
    // Azure SDK requests (azure_core's pipeline), HTTP/2 frames, the proxy's rotation path.
    holds("logs", "typespec_client_core::http::policies::logging");
    holds("logs", "h2::");
    holds("logs", "backend refused its credential");
    for (place, text) in &places {
        for key in [&old_key, &new_key] {
            assert!(!text.contains(key.as_str()), "{place} shows a key value");
        }
    }
}
