//! A certificate authority made at run time, so the fakes serve real HTTPS.
//!
//! The Azure SDK refuses to send a bearer token over plain HTTP and checks that a vault's
//! host name ends with the challenge resource's host (`.vault.azure.net`), so the fakes must
//! speak TLS under Azure host names. A CA generated per test run (never written to disk,
//! never trusted outside the test's own clients) signs leaf certificates for those names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

/// A certificate could not be made or served.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("a server certificate needs at least one DNS name")]
    NoDnsNames,
    #[error(
        "{0:?} is not a DNS name a certificate can carry (letters, digits, hyphens and dots, \
         optionally starting with one `*.` wildcard label)"
    )]
    InvalidDnsName(String),
    #[error("generating a test certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls rejected the test certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A throwaway CA. Clients built for tests trust [`TestCa::ca_der`] only; servers present
/// leaves from [`TestCa::server_config`].
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// Generates a new CA key and self-signed certificate (fast: ECDSA P-256).
    pub fn new() -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluice fake Azure test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate in PEM, for clients configured from files or strings.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A rustls server config presenting a fresh leaf for `dns_names` (a wildcard such as
    /// `*.vault.azure.net` is allowed) plus IP `127.0.0.1`, offering HTTP/2 and HTTP/1.1.
    ///
    /// Uses the aws-lc-rs provider explicitly, so it works whether or not a process-wide
    /// default provider was installed.
    pub fn server_config(&self, dns_names: &[&str]) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.leaf(dns_names)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A server certificate as PEM files hold it (what `--tls-cert` and `--tls-key` read):
    /// the chain, leaf then this CA, and the leaf's PKCS#8 key. Made for `dns_names` plus IP
    /// `127.0.0.1`, with a new key and serial on every call.
    pub fn server_pem(&self, dns_names: &[&str]) -> Result<ServerPem, TlsError> {
        let (certificate, key) = self.signed_leaf(dns_names)?;
        Ok(ServerPem {
            chain: format!("{}{}", certificate.pem(), self.ca_pem()),
            key: key.serialize_pem(),
            leaf_der: certificate.der().to_vec(),
        })
    }

    /// A leaf certificate chain (leaf, then CA) and its key.
    /// A client certificate for `name`, for mutual TLS, and its key: both PEM.
    pub fn client_pem(&self, name: &str) -> Result<(String, String), TlsError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    fn leaf(
        &self,
        dns_names: &[&str],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let (certificate, key) = self.signed_leaf(dns_names)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![certificate.der().clone(), self.ca_der()], key))
    }

    fn signed_leaf(&self, dns_names: &[&str]) -> Result<(Certificate, KeyPair), TlsError> {
        let first = dns_names.first().ok_or(TlsError::NoDnsNames)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, *first);
        for name in dns_names {
            check_dns_name(name)?;
            let name = (*name).try_into()?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((certificate, key))
    }
}

/// A server certificate and key in PEM, as written to files.
pub struct ServerPem {
    /// The leaf, then the CA.
    pub chain: String,
    pub key: String,
    /// The leaf alone in DER, as a client sees it in the handshake.
    pub leaf_der: Vec<u8>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// rcgen accepts any ASCII; catch names no TLS client would ever match before they end up
/// in a certificate and fail a handshake far from the mistake.
fn check_dns_name(name: &str) -> Result<(), TlsError> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let invalid = || TlsError::InvalidDnsName(name.to_owned());
    if rest.contains('*') || rest.parse::<IpAddr>().is_ok() {
        return Err(invalid());
    }
    DnsName::try_from(rest).map(drop).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_server_config_for_plain_and_wildcard_names() {
        let ca = TestCa::new().expect("CA");
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let config = ca
            .server_config(&["*.vault.azure.net", "login.fake.test"])
            .expect("server config");
        assert_eq!(config.alpn_protocols[0], b"h2");
    }

    #[test]
    fn refuses_unusable_names() {
        let ca = TestCa::new().expect("CA");
        assert!(matches!(ca.server_config(&[]), Err(TlsError::NoDnsNames)));
        for bad in [
            "",
            "has space.test",
            "a.*.test",
            "**.test",
            "127.0.0.1",
            "x_y..z",
        ] {
            let error = ca.server_config(&[bad]).expect_err(bad);
            assert!(
                matches!(&error, TlsError::InvalidDnsName(name) if name == bad),
                "{bad}: {error}"
            );
        }
    }
}
