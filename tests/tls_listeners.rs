//! HTTPS on the proxy's client port and on the admin API, checked by clients that trust only a
//! CA made at test time; certificates renewed in place, as cert-manager does through a mounted
//! Secret, while traffic flows.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::SET_COOKIE;
use reqwest::{StatusCode, Version};
use sluice_data_plane::ListenerOptions;
use sluice_testkit::azure::{ServerPem, TestCa};
use sluice_testkit::mock_upstream::MockHandle;
use sluice_tls::{CertificateFiles, PemFile, TlsSettings};
use support::console::{Visitor, form};
use support::logs::CapturedLogs;
use support::proxy::{CLIENT_KEY, ProxySettings, TestProxy, mock, pool_yaml};
use support::{ADMIN_TOKEN, TestControlPlane, TestDatabase, eventually, test_config};
use tempfile::TempDir;

/// A directory laid out as Kubernetes mounts a Secret: `tls.crt` and `tls.key` are links
/// through `..data`, itself a link to the current version's directory, swapped by one rename
/// on every update. The files are never written in place.
struct SecretVolume {
    dir: TempDir,
    version: u32,
}

impl SecretVolume {
    fn new(pem: &ServerPem) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        volume.update(&pem.chain, &pem.key);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), volume.dir.path().join(file))
                .unwrap();
        }
        volume
    }

    fn update(&mut self, chain: &str, key: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let root = self.dir.path();
        std::fs::create_dir(root.join(&version)).unwrap();
        std::fs::write(root.join(&version).join("tls.crt"), chain).unwrap();
        std::fs::write(root.join(&version).join("tls.key"), key).unwrap();
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            reload_every: Duration::from_millis(100),
            ..TlsSettings::new(CertificateFiles {
                certificate: PemFile {
                    path: self.dir.path().join("tls.crt"),
                    flag: "--tls-cert",
                },
                private_key: PemFile {
                    path: self.dir.path().join("tls.key"),
                    flag: "--tls-key",
                },
            })
        }
    }
}

/// A client that trusts the test CA and nothing else, and reports the certificate it saw.
fn https_client(ca: &TestCa) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&ca.ca_der()).unwrap()])
        .tls_info(true)
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .timeout(Duration::from_secs(10))
}

/// A client with nothing to resume: its first request makes a full handshake, in which the
/// server presents its current certificate (a resumed session would not present one).
fn new_client(ca: &TestCa) -> reqwest::Client {
    https_client(ca).http1_only().build().unwrap()
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS response carries the server's certificate")
        .to_vec()
}

async fn https_proxy(volume: &SecretVolume, workers: usize) -> (TestProxy, MockHandle) {
    let backend = mock("tls").await;
    let proxy = TestProxy::start_configured(
        &pool_yaml("gpt-4o", "", &[(&backend, "")]),
        &[&backend],
        &[],
        ProxySettings {
            listener: ListenerOptions {
                workers: std::num::NonZeroUsize::new(workers),
                tls: Some(volume.settings()),
                ..ListenerOptions::default()
            },
            ..ProxySettings::default()
        },
    )
    .await;
    (proxy, backend)
}

fn chat(client: &reqwest::Client, proxy: &TestProxy) -> reqwest::RequestBuilder {
    client
        .post(format!(
            "https://localhost:{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            proxy.addr.port()
        ))
        .header("api-key", CLIENT_KEY)
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "hello"}]}))
}

#[tokio::test]
async fn proxy_serves_https_with_http2_by_alpn_and_http1() {
    let ca = TestCa::new().unwrap();
    let pem = ca.server_pem(&["localhost"]).unwrap();
    let volume = SecretVolume::new(&pem);
    let (proxy, _backend) = https_proxy(&volume, 1).await;

    // A client that never starts its handshake holds no one up: the one worker still accepts.
    let _silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();

    let h2 = https_client(&ca).build().unwrap();
    let response = chat(&h2, &proxy).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(peer_certificate(&response), pem.leaf_der);

    let http1 = https_client(&ca).http1_only().build().unwrap();
    let response = chat(&http1, &proxy).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);

    // The chain is checked: a client that does not trust the CA gets no answer.
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&TestCa::new().unwrap().ca_der()).unwrap()])
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    assert!(chat(&stranger, &proxy).send().await.is_err());
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::get(format!("http://{}/v1/models", proxy.addr)).await;
    assert!(plain.is_err(), "{plain:?}");
}

/// The drain closes idle client connections over TLS at once, whatever they speak: HTTP/2,
/// HTTP/1.1 kept alive, and a client that connected but never began its handshake. The proxy
/// then stops well before the drain's 5 s run out.
#[tokio::test]
async fn idle_tls_connections_are_closed_when_the_drain_begins() {
    let ca = TestCa::new().unwrap();
    let pem = ca.server_pem(&["localhost"]).unwrap();
    let volume = SecretVolume::new(&pem);
    let (mut proxy, _backend) = https_proxy(&volume, 1).await;

    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let h2 = https_client(&ca).build().unwrap();
    let http1 = https_client(&ca).http1_only().build().unwrap();
    for (client, version) in [(&h2, Version::HTTP_2), (&http1, Version::HTTP_11)] {
        let response = chat(client, &proxy).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        response.bytes().await.unwrap();
    }
    // Both clients now hold an idle connection in their pools.
    tokio::time::sleep(Duration::from_millis(100)).await;

    proxy.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(4), proxy.stopped())
        .await
        .expect("the drain waited for idle TLS connections");
    let mut after = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut after),
    )
    .await
    .expect("the silent connection was left open");
    assert!(read.is_ok_and(|_| after.is_empty()), "{after:?}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_without_failing_a_request() {
    let ca = TestCa::new().unwrap();
    let old = ca.server_pem(&["localhost"]).unwrap();
    let mut volume = SecretVolume::new(&old);
    let (proxy, _backend) = https_proxy(&volume, 2).await;
    let proxy = Arc::new(proxy);

    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicU64::new(0));
    // One long-lived HTTP/2 connection, and a new client (so a full handshake) per request.
    let long_lived = https_client(&ca).build().unwrap();
    let ca = Arc::new(ca);
    let make_client: [Box<dyn Fn() -> reqwest::Client + Send>; 2] = [
        Box::new(move || long_lived.clone()),
        Box::new({
            let ca = ca.clone();
            move || new_client(&ca)
        }),
    ];
    let loaders: Vec<_> = make_client
        .into_iter()
        .map(|make_client| {
            let (proxy, running, failures, served) = (
                proxy.clone(),
                running.clone(),
                failures.clone(),
                served.clone(),
            );
            tokio::spawn(async move {
                let mut last_certificate = Vec::new();
                while running.load(Ordering::Relaxed) {
                    match chat(&make_client(), &proxy).send().await {
                        Ok(response) if response.status() == StatusCode::OK => {
                            last_certificate = peer_certificate(&response);
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", response.status())),
                        Err(error) => failures.lock().unwrap().push(format!("{error:?}")),
                    }
                }
                last_certificate
            })
        })
        .collect();
    eventually(Duration::from_secs(10), "load before the renewal", || {
        let served = served.load(Ordering::Relaxed);
        async move { served >= 40 }
    })
    .await;

    let new = ca
        .server_pem(&["localhost", "renewed.sluice.test"])
        .unwrap();
    volume.update(&new.chain, &new.key);
    eventually(
        Duration::from_secs(10),
        "a new connection to get the new certificate",
        || {
            let request = chat(&new_client(&ca), &proxy).send();
            let new_leaf = &new.leaf_der;
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                peer_certificate(&response) == *new_leaf
            }
        },
    )
    .await;
    let before = served.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "load after the renewal", || {
        let served = served.load(Ordering::Relaxed);
        async move { served >= before + 40 }
    })
    .await;
    running.store(false, Ordering::Relaxed);
    let mut last = Vec::new();
    for loader in loaders {
        last.push(loader.await.unwrap());
    }

    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    assert_eq!(
        last[0], old.leaf_der,
        "the open connection kept its certificate"
    );
    assert_eq!(last[1], new.leaf_der, "new connections get the new one");
}

#[tokio::test]
async fn an_unusable_renewal_is_logged_and_the_old_certificate_stays() {
    let logs = CapturedLogs::install();
    let ca = TestCa::new().unwrap();
    let old = ca.server_pem(&["localhost"]).unwrap();
    let mut volume = SecretVolume::new(&old);
    let (proxy, _backend) = https_proxy(&volume, 1).await;

    // A certificate with another certificate's key.
    let other = ca.server_pem(&["localhost"]).unwrap();
    volume.update(&other.chain, &old.key);
    eventually(Duration::from_secs(10), "the warning", || {
        let seen = !logs
            .lines_with(&[
                "WARN",
                "cannot be used",
                "does not belong to the certificate",
            ])
            .is_empty();
        async move { seen }
    })
    .await;
    let response = chat(&new_client(&ca), &proxy).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(peer_certificate(&response), old.leaf_der);

    // Fixed: the next change is picked up.
    volume.update(&other.chain, &other.key);
    eventually(Duration::from_secs(10), "the fixed certificate", || {
        let request = chat(&new_client(&ca), &proxy).send();
        let leaf = &other.leaf_der;
        async move { peer_certificate(&request.await.unwrap()) == *leaf }
    })
    .await;
}

#[tokio::test]
async fn admin_api_and_console_are_served_over_https() {
    let ca = TestCa::new().unwrap();
    let volume = SecretVolume::new(&ca.server_pem(&["localhost"]).unwrap());
    let database = TestDatabase::sqlite();
    let config = sluice_control_plane::ControlPlaneConfig {
        admin_tls: Some(volume.settings()),
        ..test_config(database.url().to_owned())
    };
    let cp = TestControlPlane::start_config(database, config).await;
    let base = format!("https://localhost:{}", cp.addr.port());
    let client = https_client(&ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let pools = client
        .get(format!("{base}/api/v1/pools"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(pools.status(), StatusCode::OK);
    assert_eq!(pools.version(), Version::HTTP_11);
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The console's session cookie is `Secure` without any forwarding proxy saying so.
    let visitor = Visitor {
        base: base.clone(),
        client,
        cookie: None,
    };
    let signed_in = visitor
        .post("/ui/sign-in", form(&[("token", ADMIN_TOKEN)]))
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    assert!(
        reqwest::get(format!("http://{}/healthz", cp.addr))
            .await
            .is_err(),
        "plain HTTP on the TLS port"
    );
}
