//! An accepted connection whose TLS handshake runs when the connection is first read or
//! written: on the connection's own task, so that a slow or silent client never holds up the
//! accept loop, and bounded in time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

pub struct TlsConnection<IO> {
    state: State<IO>,
}

// The large variant is the one a connection lives in: boxing it would save no memory and add
// an indirection to every read and write.
#[allow(clippy::large_enum_variant)]
enum State<IO> {
    Handshaking(Pin<Box<Timeout<Accept<IO>>>>),
    Established(TlsStream<IO>),
    Failed,
}

impl<IO> TlsConnection<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(acceptor: &TlsAcceptor, io: IO, timeout: Duration) -> Self {
        Self {
            state: State::Handshaking(Box::pin(tokio::time::timeout(timeout, acceptor.accept(io)))),
        }
    }

    /// Drives the handshake to its end, then hands out the encrypted stream.
    fn poll_established(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<IO>>> {
        if let State::Handshaking(handshake) = &mut self.state {
            let outcome = match ready!(handshake.as_mut().poll(cx)) {
                Ok(outcome) => outcome,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not finish the TLS handshake in time",
                )),
            };
            match outcome {
                Ok(stream) => self.state = State::Established(stream),
                Err(error) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    self.state = State::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match &mut self.state {
            State::Established(stream) => Poll::Ready(Ok(stream)),
            State::Handshaking(_) | State::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<IO> AsyncRead for TlsConnection<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_established(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<IO> AsyncWrite for TlsConnection<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_established(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_established(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    /// As the established stream: hyper asks once, before the handshake.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_established(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_established(cx))?;
        Pin::new(stream).poll_shutdown(cx)
    }
}
