//! Client-certificate credentials without OpenSSL: the Entra ID client assertion (an RS256 JWT
//! carrying the certificate's SHA-1 thumbprint) is signed with aws-lc, which the process already
//! links for TLS, and handed to the SDK's `ClientAssertionCredential`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use azure_core::error::ErrorKind;
use azure_core::http::ClientMethodOptions;
use azure_identity::ClientAssertion;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Entra accepts assertions for a short while; ten minutes is what the Azure SDKs use.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key (PKCS#8 or PKCS#1); PFX files are not supported")]
    NoKey(String),
    #[error("the private key in {0} is not an RSA key Entra ID accepts")]
    NotRsa(String),
}

/// Signs client assertions for one app registration with its certificate.
pub struct CertificateAssertion {
    client_id: String,
    /// The token endpoint, which the assertion must name as its audience.
    audience: String,
    key: RsaKeyPair,
    header: String,
}

/// The key never appears.
impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    /// `pem` holds the certificate and its private key, as `AZURE_CLIENT_CERTIFICATE_PATH`
    /// does for the other Azure SDKs; `source` names it in errors.
    pub fn from_pem(
        pem: &[u8],
        source: &str,
        client_id: String,
        audience: String,
    ) -> Result<Self, CertificateError> {
        let certificate = CertificateDer::pem_slice_iter(pem)
            .find_map(Result::ok)
            .ok_or_else(|| CertificateError::NoCertificate(source.to_owned()))?;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| CertificateError::NoKey(source.to_owned()))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => return Err(CertificateError::NotRsa(source.to_owned())),
        }
        .map_err(|_| CertificateError::NotRsa(source.to_owned()))?;
        let thumbprint = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &certificate);
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
        });
        Ok(Self {
            client_id,
            audience,
            key,
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
        })
    }

    /// A signed assertion valid from `now` for [`ASSERTION_LIFETIME`].
    pub fn sign(&self, now: SystemTime) -> Result<String, aws_lc_rs::error::Unspecified> {
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti)?;
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "nbf": issued,
            "exp": issued + ASSERTION_LIFETIME.as_secs(),
        });
        let signed = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign(SystemTime::now()).map_err(|_| {
            azure_core::Error::with_message(
                ErrorKind::Credential,
                "cannot sign the client assertion",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    fn rsa_certificate() -> (String, rcgen::KeyPair, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["sluice-proxy".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = certificate.der().to_vec();
        (
            format!("{}{}", certificate.pem(), key.serialize_pem()),
            key,
            der,
        )
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// The assertion is what Entra ID verifies: RS256 over header.claims with the
    /// certificate's key, the certificate's thumbprint, and the token endpoint as audience.
    #[test]
    fn signs_an_assertion_entra_can_verify() {
        let (pem, key, der) = rsa_certificate();
        let audience = "https://login.microsoftonline.com/tenant/oauth2/v2.0/token";
        let assertion = CertificateAssertion::from_pem(
            pem.as_bytes(),
            "cert.pem",
            "app".into(),
            audience.into(),
        )
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = assertion.sign(now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256");
        let thumbprint = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        assert_eq!(header["x5t"], URL_SAFE_NO_PAD.encode(thumbprint.as_ref()));
        let claims = decode(parts[1]);
        assert_eq!(claims["aud"], audience);
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert_eq!(claims["nbf"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_600);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public_key = UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            rcgen::PublicKeyData::der_bytes(&key),
        );
        public_key
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the certificate's public key");
        let other = assertion.sign(now).unwrap();
        assert_ne!(
            decode(other.split('.').nth(1).unwrap())["jti"],
            claims["jti"]
        );
        assert!(!format!("{assertion:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_files_say_what_is_missing() {
        let (pem, key, _) = rsa_certificate();
        let cert_only = pem.replace(&key.serialize_pem(), "");
        let error = |pem: &str| {
            CertificateAssertion::from_pem(pem.as_bytes(), "c.pem", "app".into(), "aud".into())
                .unwrap_err()
        };
        assert_eq!(error(&cert_only), CertificateError::NoKey("c.pem".into()));
        assert_eq!(
            error(&key.serialize_pem()),
            CertificateError::NoCertificate("c.pem".into())
        );
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec_cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&ec)
            .unwrap();
        let ec_pem = format!("{}{}", ec_cert.pem(), ec.serialize_pem());
        assert_eq!(error(&ec_pem), CertificateError::NotRsa("c.pem".into()));
        assert!(error("").to_string().contains("no PEM certificate"));
    }
}
