//! One module per `sluice` command: its flags (each with a `SLUICE_*` variable) and how it
//! starts the library pieces.

mod control_plane;
mod dev;
mod proxy;

pub use control_plane::ControlPlaneArgs;
pub use dev::DevArgs;
pub use proxy::ProxyArgs;

/// TLS for a listener from its `--tls-cert` and `--tls-key` (clap requires both or neither).
fn listener_tls(
    certificate: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
) -> Option<sluice_tls::TlsSettings> {
    let (Some(certificate), Some(key)) = (certificate, key) else {
        return None;
    };
    Some(sluice_tls::TlsSettings::new(sluice_tls::CertificateFiles {
        certificate: sluice_tls::PemFile {
            path: certificate.clone(),
            flag: "--tls-cert",
        },
        private_key: sluice_tls::PemFile {
            path: key.clone(),
            flag: "--tls-key",
        },
    }))
}

/// Reads a PEM file named by a flag, saying which flag when it cannot.
fn read_pem(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
}
