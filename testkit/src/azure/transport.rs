//! The HTTP plumbing that lets unmodified SDK clients reach the fakes with every check on.
//!
//! Clients keep real Azure host names in their URLs (`myvault.vault.azure.net`,
//! `login.fake.test`), so the SDK's https-only and challenge-resource checks run as in
//! production. Only two things change: every name resolves to 127.0.0.1 (ports come from the
//! URLs), and the only trusted root is the test CA, so nothing can reach a real host.

use std::iter;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::tls::TestCa;

/// Resolves any host name to loopback.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopbackResolver;

impl Resolve for LoopbackResolver {
    fn resolve(&self, _name: Name) -> Resolving {
        // Port 0 is replaced by the URL's port (or the scheme's default).
        let addrs: Addrs = Box::new(iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

/// A `reqwest::Client` that trusts only `ca` and sends every host to loopback. No proxy (a
/// proxy from the environment would otherwise see the fake hosts), no redirects (as the
/// SDK's own client), and short timeouts so a mistake fails fast.
pub fn loopback_client(ca: &TestCa) -> Result<reqwest::Client, reqwest::Error> {
    let ca = reqwest::Certificate::from_der(&ca.ca_der())?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .dns_resolver(Arc::new(LoopbackResolver))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
}

/// SDK client options for the fakes: `transport` (see [`loopback_client`]), no retries (a
/// TLS mistake would otherwise cost over a minute of backoff) and a custom cloud whose
/// authority host is the fake identity's.
pub fn fake_client_options(transport: Transport, authority_host: &str) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = authority_host.to_owned();
    ClientOptions {
        transport: Some(transport),
        retry: RetryOptions::none(),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        ..ClientOptions::default()
    }
}
