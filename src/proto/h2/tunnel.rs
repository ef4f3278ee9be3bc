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

/// Our side of the stream: a write waits for flow-control capacity. When
/// the session lets go of it, our side ends with END_STREAM (the orderly
/// close a TCP FIN is on HTTP/1.1), so the frames it queued last, its close
/// frame among them, are still sent: a stream dropped while open would be
/// reset with CANCEL, and h2 discards the DATA still queued on it.
pub struct TunnelWrite {
    tx: SendStream<Bytes>,
    ended: bool,
}

impl TunnelWrite {
    pub fn new(tx: SendStream<Bytes>) -> TunnelWrite {
        TunnelWrite { tx, ended: false }
    }

    /// Ends our side of the stream once what is queued on it is sent.
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            let _ = self.tx.send_data(Bytes::new(), true);
        }
    }
}

impl Drop for TunnelWrite {
    fn drop(&mut self) {
        self.end();
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
        // Capacity already assigned is used at once: poll_capacity reports
        // only increases.
        let cap = match self.tx.capacity() {
            0 => match self.tx.poll_capacity(cx) {
                Poll::Ready(Some(Ok(n))) => n,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(broken(e))),
                Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Pending => return Poll::Pending,
            },
            n => n,
        };
        let n = cap.min(buf.len());
        self.tx
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(broken)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames handed to h2 are written by the connection task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.end();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A session that lets go of its stream without shutting it down (as
    /// every WebSocket session ends) still has its last bytes sent, and
    /// the stream ends cleanly rather than with RST_STREAM(CANCEL), which
    /// would make `h2` discard them.
    #[tokio::test]
    async fn a_dropped_writer_sends_its_last_bytes_then_ends() {
        let (c, s) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.expect("server handshake");
            let (req, mut respond) = conn.accept().await.expect("a stream").expect("a request");
            let tx = respond
                .send_response(http::Response::new(()), false)
                .expect("response head");
            // As in stream.rs: only the session's two halves hold the stream.
            drop(respond);
            let rd = TunnelRead::new(req.into_body());
            let mut wr = TunnelWrite::new(tx);
            wr.write_all(b"last words").await.expect("write");
            drop(wr);
            drop(rd);
            while let Some(Ok(_)) = conn.accept().await {}
        });
        let (mut client, conn) = h2::client::handshake(c).await.expect("client handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::builder()
            .method("POST")
            .uri("http://localhost/")
            .body(())
            .expect("request");
        // The client's side stays open, as a WebSocket client's does.
        let (resp, _open) = client.send_request(req, false).expect("send request");
        let mut body = resp.await.expect("response").into_body();
        let mut got = Vec::new();
        let mut reset = None;
        let limit = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(limit, body.data()).await {
            match chunk {
                Ok(b) => {
                    let _ = body.flow_control().release_capacity(b.len());
                    got.extend_from_slice(&b);
                }
                Err(e) => {
                    reset = e.reason();
                    break;
                }
            }
        }
        assert!(
            body.is_end_stream() || reset.is_some(),
            "the stream did not end"
        );
        assert_eq!(got, b"last words");
        // After END_STREAM, h2 may tell a client still sending to stop.
        assert!(
            matches!(reset, None | Some(h2::Reason::NO_ERROR)),
            "{reset:?}"
        );
        server.abort();
    }
}
