//! The config stream over TLS and mTLS, with certificates made at test time, and the gRPC
//! health service on the same port.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_control_plane::GrpcTls;
use sluice_data_plane::ClientTls;
use sluice_testkit::azure::TestCa;
use support::proxy::TestProxy;
use support::{TestControlPlane, TestDatabase, expect_status};

/// A CA and two leaf certificates it signed, all PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca = TestCa::new().unwrap();
    let server = ca.server_pem(&["localhost"]).unwrap();
    Pki {
        server: (server.chain, server.key),
        client: ca.client_pem("proxy-1").unwrap(),
        ca: ca.ca_pem(),
    }
}

async fn mtls_control_plane(pki: &Pki) -> TestControlPlane {
    TestControlPlane::start_with_tls(
        TestDatabase::sqlite(),
        GrpcTls {
            certificate: pki.server.0.clone().into_bytes(),
            private_key: pki.server.1.clone().into_bytes(),
            client_ca: Some(pki.ca.clone().into_bytes()),
        },
    )
    .await
}

/// A proxy with a client certificate from the CA follows a control plane that requires one.
#[tokio::test]
async fn proxies_with_a_client_certificate_follow_an_mtls_control_plane() {
    let pki = pki();
    let cp = mtls_control_plane(&pki).await;
    expect_status(cp.post("/api/v1/pools", &json!({"name": "p"})).await, 201).await;
    let dir = tempfile::tempdir().unwrap();
    let tls = ClientTls {
        ca: Some(pki.ca.clone().into_bytes()),
        identity: Some((
            pki.client.0.clone().into_bytes(),
            pki.client.1.clone().into_bytes(),
        )),
    };
    let url = format!("https://localhost:{}", cp.grpc_addr.port());
    let proxy = TestProxy::follow_url(url, "proxy-1", dir.path(), Some(tls)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.is_ready().await {
        assert!(
            Instant::now() < deadline,
            "the proxy never got a config over mTLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    assert_eq!(listed["proxies"][0]["node_id"], "proxy-1");
}

/// Without a client certificate the TLS handshake fails: no config, not registered.
#[tokio::test]
async fn proxies_without_a_client_certificate_are_refused() {
    let pki = pki();
    let cp = mtls_control_plane(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let tls = ClientTls {
        ca: Some(pki.ca.clone().into_bytes()),
        identity: None,
    };
    let url = format!("https://localhost:{}", cp.grpc_addr.port());
    let proxy = TestProxy::follow_url(url, "stranger", dir.path(), Some(tls)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !proxy.is_ready().await,
        "no config without a client certificate"
    );
    let listed = expect_status(cp.get("/api/v1/proxies").await, 200).await;
    assert_eq!(listed["proxies"], json!([]));
}

/// The standard gRPC health service answers SERVING for the config service.
#[tokio::test]
async fn the_grpc_port_serves_the_health_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let cp = TestControlPlane::start(TestDatabase::sqlite()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "sluice.config.v1.ConfigDiscovery".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}
