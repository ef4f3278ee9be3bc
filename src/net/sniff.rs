//! Telling h2c from HTTP/1.x on a cleartext listener with `http2` on: a
//! connection that opens with the 24-byte HTTP/2 client preface speaks
//! h2c; anything else is HTTP/1.x on the same port. The bytes read to
//! decide are handed on, never lost.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::proto::h2::guard::PREFACE;

/// Reads until the first bytes either match the preface or cannot. `true`:
/// the preface is there. The bytes read are in `buf` either way. A client
/// that sends nothing within `limit` (or closes) is left to HTTP/1.x,
/// which times it out or sees the end.
pub async fn is_h2c<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, limit: Duration) -> bool {
    let read = async {
        loop {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return false;
            }
            if n == PREFACE.len() {
                return true;
            }
            buf.reserve(8192);
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(false)
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Prefixed<S> {
    pre: BytesMut,
    io: S,
}

impl<S> Prefixed<S> {
    pub fn new(pre: BytesMut, io: S) -> Prefixed<S> {
        Prefixed { pre, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(input: &[u8]) -> (bool, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(4096);
            tokio::io::AsyncWriteExt::write_all(&mut client, input)
                .await
                .expect("write");
            drop(client);
            let mut buf = BytesMut::new();
            let h2 = is_h2c(&mut server, &mut buf, Duration::from_secs(5)).await;
            let mut again = Vec::new();
            Prefixed::new(buf, server)
                .read_to_end(&mut again)
                .await
                .expect("read");
            (h2, again)
        })
    }

    #[test]
    fn tells_the_preface_from_http1_and_loses_no_byte() {
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(sniff(&h2), (true, h2.clone()));
        for http1 in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PRI * HTTP/1.1\r\n\r\n",
            b"P",
            b"",
        ] {
            assert_eq!(sniff(http1), (false, http1.to_vec()));
        }
    }
}
