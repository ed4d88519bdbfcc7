//! A certificate chain and its private key, read from PEM files and checked to belong together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A PEM file and the setting that names it, so that errors point at what to fix.
#[derive(Clone, Debug)]
pub struct PemFile {
    pub path: PathBuf,
    /// The flag that names the file, e.g. `--tls-cert`.
    pub flag: &'static str,
}

/// The files a listener's certificate is read from: what cert-manager writes to `tls.crt` and
/// `tls.key`.
#[derive(Clone, Debug)]
pub struct CertificateFiles {
    /// The server's certificate first, then any intermediates.
    pub certificate: PemFile,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub private_key: PemFile,
}

/// Why a certificate and key cannot be served. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {} {}", .file.flag, .file.path.display())]
    Read {
        file: PemFile,
        #[source]
        source: std::io::Error,
    },
    #[error("{} {} holds no PEM certificate", .0.flag, .0.path.display())]
    NoCertificate(PemFile),
    #[error(
        "{} {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        .0.flag,
        .0.path.display()
    )]
    NoPrivateKey(PemFile),
    #[error("{} {} holds a private key TLS cannot use", .file.flag, .file.path.display())]
    UnusableKey {
        file: PemFile,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "{} {} holds a certificate that cannot be parsed",
        .file.flag,
        .file.path.display()
    )]
    UnreadableCertificate {
        file: PemFile,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "the private key in {} {} does not belong to the certificate in {} {}",
        .key.flag,
        .key.path.display(),
        .certificate.flag,
        .certificate.path.display()
    )]
    KeyMismatch { certificate: PemFile, key: PemFile },
}

impl CertificateFiles {
    /// Reads both files and checks that the key is the certificate's.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, CertificateError> {
        let chain = read(&self.certificate)?;
        let chain = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| CertificateError::NoCertificate(self.certificate.clone()))?;
        let key = read(&self.private_key)?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|_| CertificateError::NoPrivateKey(self.private_key.clone()))?;
        let key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|source| {
            CertificateError::UnusableKey {
                file: self.private_key.clone(),
                source,
            }
        })?;
        let certified = CertifiedKey::new(chain, key);
        match certified.keys_match() {
            // A key kind that cannot tell its public half is served as given, as rustls does.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(Arc::new(certified))
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(CertificateError::KeyMismatch {
                    certificate: self.certificate.clone(),
                    key: self.private_key.clone(),
                })
            }
            Err(source) => Err(CertificateError::UnreadableCertificate {
                file: self.certificate.clone(),
                source,
            }),
        }
    }

    pub(crate) fn paths(&self) -> [&Path; 2] {
        [&self.certificate.path, &self.private_key.path]
    }
}

fn read(file: &PemFile) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(&file.path).map_err(|source| CertificateError::Read {
        file: file.clone(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    pub(crate) fn self_signed(name: &str) -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    pub(crate) fn files_in(dir: &Path) -> CertificateFiles {
        CertificateFiles {
            certificate: PemFile {
                path: dir.join("tls.crt"),
                flag: "--tls-cert",
            },
            private_key: PemFile {
                path: dir.join("tls.key"),
                flag: "--tls-key",
            },
        }
    }

    pub(crate) fn write(files: &CertificateFiles, (certificate, key): &(String, String)) {
        std::fs::write(&files.certificate.path, certificate).unwrap();
        std::fs::write(&files.private_key.path, key).unwrap();
    }

    fn error(files: &CertificateFiles) -> String {
        files.load().expect_err("refused").to_string()
    }

    #[test]
    fn loads_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_in(dir.path());
        let pair = self_signed("localhost");
        write(&files, &pair);
        let certified = files.load().unwrap();
        assert_eq!(certified.cert.len(), 1);
    }

    #[test]
    fn errors_name_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_in(dir.path());
        let crt = files.certificate.path.display().to_string();
        let key = files.private_key.path.display().to_string();
        assert_eq!(error(&files), format!("cannot read --tls-cert {crt}"));

        let (certificate, private_key) = self_signed("localhost");
        write(&files, &("not PEM".into(), private_key.clone()));
        assert_eq!(
            error(&files),
            format!("--tls-cert {crt} holds no PEM certificate")
        );

        // Both halves in the wrong files.
        write(&files, &(private_key.clone(), certificate.clone()));
        assert_eq!(
            error(&files),
            format!("--tls-cert {crt} holds no PEM certificate")
        );
        write(&files, &(certificate.clone(), certificate.clone()));
        assert_eq!(
            error(&files),
            format!("--tls-key {key} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
        );

        let (_, other_key) = self_signed("localhost");
        write(&files, &(certificate.clone(), other_key));
        assert_eq!(
            error(&files),
            format!(
                "the private key in --tls-key {key} does not belong to the certificate in --tls-cert {crt}"
            )
        );

        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        write(&files, &(garbage.into(), private_key));
        assert_eq!(
            error(&files),
            format!("--tls-cert {crt} holds a certificate that cannot be parsed")
        );
    }
}
