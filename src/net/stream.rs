//! The byte streams a protocol module is handed.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A connected byte stream that splits into a read half and a write half
/// usable at the same time (a protocol reads the next request while it
/// writes a response). TCP and Unix sockets split into owned halves with no
/// lock; a stream that cannot (a TLS session) implements this with
/// `tokio::io::split`.
pub trait Split: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half.
    type R: AsyncRead + Unpin + Send + 'static;
    /// The write half.
    type W: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream.
    fn halves(self) -> (Self::R, Self::W);

    /// The first byte the peer sent, left unread; None when the stream
    /// cannot tell or closed first. A TLS listener tells plain HTTP from a
    /// ClientHello by it.
    fn peek_first(&self) -> impl std::future::Future<Output = Option<u8>> + Send + '_ {
        std::future::ready(None)
    }
}

impl Split for TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    async fn peek_first(&self) -> Option<u8> {
        let mut b = [0u8; 1];
        match self.peek(&mut b).await {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }
}

impl Split for UnixStream {
    type R = tokio::net::unix::OwnedReadHalf;
    type W = tokio::net::unix::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
}
