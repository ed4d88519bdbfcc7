//! The byte stream to a backend: plain TCP, or TLS with its session on the heap.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Connected = MaybeHttpsStream<TokioIo<TcpStream>>;

/// What a connection to a backend reads and writes.
///
/// The TLS stream is boxed: a rustls client session is over a kilobyte, and inline (as in
/// hyper-rustls's own enum) it made every pooled connection that much larger for its whole
/// life, plain ones included (an HTTP/1 connection's state was 1,776 bytes, about 700
/// without it). A TLS connection pays one allocation when it opens, none per request.
pub enum BackendStream {
    Plain(TokioIo<TcpStream>),
    Tls(Pin<Box<Connected>>),
}

impl From<Connected> for BackendStream {
    fn from(connected: Connected) -> Self {
        match connected {
            MaybeHttpsStream::Http(plain) => Self::Plain(plain),
            tls @ MaybeHttpsStream::Https(_) => Self::Tls(Box::pin(tls)),
        }
    }
}

// Inlined as hyper-rustls's own stream is: a flush, a no-op on a socket, is called after every
// write, and out of line it cost more than the rest of the wrapper (callgrind).
impl Read for BackendStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(plain) => Pin::new(plain).poll_read(cx, buf),
            Self::Tls(tls) => tls.as_mut().poll_read(cx, buf),
        }
    }
}

impl Write for BackendStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(plain) => Pin::new(plain).poll_write(cx, buf),
            Self::Tls(tls) => tls.as_mut().poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(plain) => Pin::new(plain).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => tls.as_mut().poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(plain) => plain.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(plain) => Pin::new(plain).poll_flush(cx),
            Self::Tls(tls) => tls.as_mut().poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(plain) => Pin::new(plain).poll_shutdown(cx),
            Self::Tls(tls) => tls.as_mut().poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_stream_does_not_carry_a_tls_session() {
        // The point of the type: a pooled plain connection is a socket, not a TLS-sized slot.
        assert!(
            size_of::<BackendStream>() <= 2 * size_of::<TokioIo<TcpStream>>(),
            "BackendStream is {} bytes; hyper-rustls's stream is {}",
            size_of::<BackendStream>(),
            size_of::<Connected>(),
        );
    }
}
