//! A TCP relay between a server under test and its database, with a switch that makes the
//! database unreachable the way a network partition does.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Bytes flow both ways.
    Up,
    /// Connections stay open but nothing is forwarded: reads and connects hang.
    Partitioned,
}

pub struct TcpRelay {
    pub addr: SocketAddr,
    link: watch::Sender<Link>,
    accept: JoinHandle<()>,
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Up);
        let links = link.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let link = links.subscribe();
                tokio::spawn(relay_connection(client, target, link));
            }
        });
        Self { addr, link, accept }
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay_connection(client: TcpStream, target: SocketAddr, mut link: watch::Receiver<Link>) {
    if wait_until_up(&mut link).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = tokio::spawn(pump(client_read, server_write, link.clone()));
    let downstream = tokio::spawn(pump(server_read, client_write, link));
    let _ = tokio::join!(upstream, downstream);
}

/// Copies bytes while the link is up; holds them back while it is partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if wait_until_up(&mut link).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = link.changed() => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wait_until_up(&mut link).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_until_up(link: &mut watch::Receiver<Link>) -> Result<(), watch::error::RecvError> {
    link.wait_for(|state| *state == Link::Up).await.map(|_| ())
}
