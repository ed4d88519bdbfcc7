//! Serving an axum [`Router`] over TLS on an ephemeral loopback port.
//!
//! `axum::serve` speaks plain TCP only, so this accepts connections itself: a tokio-rustls
//! handshake, then hyper-util's auto server (HTTP/1.1 or HTTP/2, whatever ALPN picked).
//! Dropping the handle stops accepting and lets open connections finish, like the mock
//! upstream's handle.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A client that connects and never finishes its handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server waits for open connections before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running HTTPS server. Dropping it stops the server in the background;
/// [`HttpsServer::shutdown`] also waits for open connections to close.
pub struct HttpsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HttpsServer {
    /// Binds `127.0.0.1:0` and serves `router` with `tls` on the current tokio runtime.
    pub async fn start(tls: Arc<ServerConfig>, router: Router) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls),
            router,
            stopped,
        ));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting and waits (up to a few seconds) for open connections to finish.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            // A panicked accept loop has nothing left to drain.
            let _ = task.await;
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may already be gone; then there is nothing to stop.
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let tcp = tokio::select! {
            // A dropped sender means the handle is gone: stop as well.
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Usually out of file descriptors; back off instead of spinning.
                    tracing::debug!(%error, "fake Azure server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = serve_connection(
            tcp,
            acceptor.clone(),
            builder.clone(),
            router.clone(),
            graceful.watcher(),
        );
        tokio::spawn(connection);
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        // A client that does not trust the test CA ends here; say so for whoever debugs it.
        Ok(Err(error)) => {
            tracing::debug!(%error, "fake Azure server: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, "fake Azure server: connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;
    use crate::azure::tls::TestCa;

    #[tokio::test]
    async fn serves_https_and_stops_when_dropped() {
        let ca = TestCa::new().expect("CA");
        let tls = ca.server_config(&["hello.fake.test"]).expect("config");
        let server = HttpsServer::start(tls, Router::new().route("/", get(|| async { "hi" })))
            .await
            .expect("server starts");
        let addr = server.addr();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_der(&ca.ca_der()).expect("CA cert")])
            .resolve("hello.fake.test", addr)
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("https://hello.fake.test:{}/", addr.port());
        let body = client.get(&url).send().await.expect("request").text().await;
        assert_eq!(body.expect("body"), "hi");

        server.shutdown().await;
        let fresh = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_der(&ca.ca_der()).expect("CA cert")])
            .resolve("hello.fake.test", addr)
            .no_proxy()
            .build()
            .expect("client");
        assert!(fresh.get(&url).send().await.is_err(), "server still up");
    }

    #[tokio::test]
    async fn clients_that_do_not_trust_the_ca_are_refused() {
        let ca = TestCa::new().expect("CA");
        let other = TestCa::new().expect("other CA");
        let tls = ca.server_config(&["hello.fake.test"]).expect("config");
        let server = HttpsServer::start(tls, Router::new())
            .await
            .expect("starts");
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_der(&other.ca_der()).expect("cert")])
            .resolve("hello.fake.test", server.addr())
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("https://hello.fake.test:{}/", server.port());
        let error = client.get(&url).send().await.expect_err("untrusted");
        assert!(error.is_connect(), "{error:?}");
    }
}
