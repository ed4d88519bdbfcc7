//! The admin API's listener over TLS: axum's accept loop hands each connection over as soon as
//! it is accepted, and its handshake runs on the connection's own task.

use std::io;
use std::net::SocketAddr;

use sluice_tls::{ServerTls, TlsConnection};
use tokio::net::{TcpListener, TcpStream};

pub(crate) struct TlsListener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: ServerTls,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // TcpListener's own accept backs off and retries on errors (out of file descriptors).
        let (stream, addr) = axum::serve::Listener::accept(&mut self.tcp).await;
        (self.tls.accept(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
