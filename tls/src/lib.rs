//! TLS for Sluice's HTTP listeners (the proxy's client port, the admin API): rustls with a
//! certificate that is re-read from its files while the listener serves, so that a renewed
//! certificate (cert-manager, a mounted Secret) is picked up without a restart and without
//! dropping a connection.

mod certificate;
mod connection;
mod reload;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

pub use certificate::{CertificateError, CertificateFiles, PemFile};
pub use connection::TlsConnection;
pub use reload::{Reloader, ReloadingCertificate};

/// How a listener serves TLS.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub files: CertificateFiles,
    /// How often the files are checked for a new certificate.
    pub reload_every: Duration,
    /// How long a client has to complete its handshake before the connection is closed.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new(files: CertificateFiles) -> Self {
        Self {
            files,
            reload_every: Self::RELOAD_EVERY,
            handshake_timeout: Self::HANDSHAKE_TIMEOUT,
        }
    }
}

/// The HTTP versions a listener offers by ALPN.
#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    Http1,
    /// HTTP/2 first, for clients that can, and HTTP/1.1.
    Http2AndHttp1,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Self::Http1 => vec![b"http/1.1".to_vec()],
            Self::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// A listener's TLS: cheap to clone, one per accepting thread.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
    reload_every: Duration,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Loads the certificate; an unreadable or mismatched pair fails here, naming its flag.
    pub fn new(settings: &TlsSettings, alpn: Alpn) -> Result<Self, CertificateError> {
        let certificate = ReloadingCertificate::load(settings.files.clone())?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = alpn.protocols();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
            reload_every: settings.reload_every,
            handshake_timeout: settings.handshake_timeout,
        })
    }

    /// Wraps an accepted connection; its handshake runs when it is first read or written.
    pub fn accept<IO>(&self, io: IO) -> TlsConnection<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        TlsConnection::new(&self.acceptor, io, self.handshake_timeout)
    }

    /// Re-reads the certificate files while the returned guard lives.
    pub fn spawn_reloader(&self) -> Reloader {
        self.certificate.spawn_reloader(self.reload_every)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::certificate::tests::{files_in, self_signed, write};

    #[tokio::test]
    async fn a_client_that_never_finishes_its_handshake_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_in(dir.path());
        write(&files, &self_signed("localhost"));
        let settings = TlsSettings {
            handshake_timeout: Duration::from_millis(100),
            ..TlsSettings::new(files)
        };
        let tls = ServerTls::new(&settings, Alpn::Http2AndHttp1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _silent = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut connection = tls.accept(accepted);
        let started = Instant::now();
        let error = connection.read(&mut [0; 1]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let again = connection.read(&mut [0; 1]).await.unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::NotConnected);
    }
}
