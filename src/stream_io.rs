//! Reading and writing a byte stream under the server's rules (a stall
//! limit, the force-close phase of a shutdown), shared by every protocol.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::phase::FORCE;

/// Why a connection stops in the middle of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Closed,
    Stalled,
    Shutdown,
    /// Writing to the client failed (reset, broken pipe).
    WriteFailed,
    /// A write to the client made no progress for the stall limit.
    WriteStalled,
    /// An SSE stream was idle for `sse_idle_timeout` (see `sse.rs`).
    Idle,
}

impl Stop {
    /// The disconnect reason of an `http` or `websocket` request.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Stop::Closed | Stop::WriteFailed => "client_closed",
            Stop::Stalled | Stop::WriteStalled => "client_timeout",
            Stop::Shutdown => "server_shutdown",
            Stop::Idle => "idle_timeout",
        }
    }

    /// The disconnect reason of an SSE stream, which names a failed or
    /// stalled write as such (the spec's `sse.disconnect` reasons).
    pub(crate) fn sse_reason(&self) -> &'static str {
        match self {
            Stop::WriteFailed => "write_error",
            Stop::WriteStalled => "write_timeout",
            other => other.reason(),
        }
    }
}

/// Reads more bytes into `buf`; `Ok(0)` is end of stream.
pub(crate) async fn fill<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    buf.reserve(16 * 1024);
    rd.read_buf(buf).await
}

/// The most `fill_lazy` reads at once (into the stack).
pub(crate) const LAZY_READ: usize = 4096;

/// Reads more bytes into `buf` like `fill`, but holds no buffer while it
/// waits: the read goes to the stack, and `buf` grows only by the bytes that
/// came. For a connection waiting for its next request with nothing
/// buffered, where `fill` would reserve its 16 KiB for as long as the client
/// stays quiet. `Ok(0)` is end of stream.
pub(crate) async fn fill_lazy<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut tmp = [MaybeUninit::<u8>::uninit(); LAZY_READ];
        let mut rb = ReadBuf::uninit(&mut tmp);
        match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
        }
    })
    .await
}

/// Writes all of `out`, giving up when the client stalls for `stall` or the
/// server is force-closing.
pub(crate) async fn write_out<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    stall: Option<Duration>,
    sd: &mut watch::Receiver<u8>,
) -> Result<(), Stop> {
    let mut done = 0;
    while done < out.len() {
        let deadline = stall.map(|d| tokio::time::Instant::now() + d);
        tokio::select! {
            r = wr.write(&out[done..]) => match r {
                Ok(0) | Err(_) => return Err(Stop::WriteFailed),
                Ok(n) => done += n,
            },
            _ = sleep_opt(deadline) => return Err(Stop::WriteStalled),
            r = sd.changed() => if r.is_err() || *sd.borrow() == FORCE {
                return Err(Stop::Shutdown);
            },
        }
    }
    out.clear();
    Ok(())
}

/// Sleeps until `deadline`; without one, never wakes (a `select!` arm
/// that stays off).
pub(crate) async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lazy_read_holds_no_buffer_until_bytes_come() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(64 * 1024);
            let mut buf = BytesMut::new();
            // Nothing to read: the read waits, and `buf` has no capacity.
            let waited =
                tokio::time::timeout(Duration::from_millis(20), fill_lazy(&mut server, &mut buf))
                    .await;
            assert!(waited.is_err());
            assert_eq!(buf.capacity(), 0);
            client
                .write_all(b"GET / HTTP/1.1\r\n")
                .await
                .expect("write");
            assert_eq!(fill_lazy(&mut server, &mut buf).await.expect("read"), 16);
            assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
            assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
            // More than fits the stack buffer at once comes in pieces, all of it.
            let big = vec![7u8; LAZY_READ * 3 + 5];
            client.write_all(&big).await.expect("write");
            drop(client);
            let mut got = BytesMut::new();
            while fill_lazy(&mut server, &mut got).await.expect("read") > 0 {}
            assert_eq!(&got[..], &big[..]);
        });
    }

    #[test]
    fn reasons_by_scope() {
        let all = [
            Stop::Closed,
            Stop::Stalled,
            Stop::Shutdown,
            Stop::WriteFailed,
            Stop::WriteStalled,
            Stop::Idle,
        ];
        let http: Vec<_> = all.iter().map(Stop::reason).collect();
        assert_eq!(
            http,
            [
                "client_closed",
                "client_timeout",
                "server_shutdown",
                "client_closed",
                "client_timeout",
                "idle_timeout"
            ]
        );
        let sse: Vec<_> = all.iter().map(Stop::sse_reason).collect();
        assert_eq!(
            sse,
            [
                "client_closed",
                "client_timeout",
                "server_shutdown",
                "write_error",
                "write_timeout",
                "idle_timeout"
            ]
        );
    }
}
