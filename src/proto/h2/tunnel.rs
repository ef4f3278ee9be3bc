//! An HTTP/2 stream as a byte stream, for a WebSocket over HTTP/2
//! (RFC 8441): the session reads the client's DATA frames and writes its
//! own, exactly as it reads and writes a socket after an HTTP/1.1 upgrade.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn broken(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

/// The client's side of the stream. Flow-control capacity is given back
/// as soon as bytes are read: the session keeps its own limits.
pub struct TunnelRead {
    rx: RecvStream,
    pending: Bytes,
}

impl TunnelRead {
    pub fn new(rx: RecvStream) -> TunnelRead {
        TunnelRead {
            rx,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for TunnelRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match this.rx.poll_data(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    let _ = this.rx.flow_control().release_capacity(b.len());
                    this.pending = b;
                }
                // END_STREAM: the byte stream's end.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(broken(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Our side of the stream: a write waits for flow-control capacity.
pub struct TunnelWrite {
    tx: SendStream<Bytes>,
    ended: bool,
}

impl TunnelWrite {
    pub fn new(tx: SendStream<Bytes>) -> TunnelWrite {
        TunnelWrite { tx, ended: false }
    }
}

impl AsyncWrite for TunnelWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.tx.reserve_capacity(buf.len());
        match self.tx.poll_capacity(cx) {
            Poll::Ready(Some(Ok(0))) => {
                // Capacity was granted and taken back; ask again.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Ok(n))) => {
                let n = n.min(buf.len());
                self.tx
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(broken)?;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(broken(e))),
            Poll::Ready(None) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames handed to h2 are written by the connection task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            let _ = self.tx.send_data(Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}
