//! Reading and writing a byte stream under the server's rules (a stall
//! limit, the force-close phase of a shutdown), shared by every protocol.

use std::fs::File;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::net::stream::Socket;
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
    write_out_with(wr, out, [&[], &[]], stall, sd).await
}

/// As `write_out`, then `tail` after `out`, in the same writes (vectored):
/// a large body is written from where it lies instead of being copied
/// into `out` first.
pub(crate) async fn write_out_with<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    tail: [&[u8]; 2],
    stall: Option<Duration>,
    sd: &mut watch::Receiver<u8>,
) -> Result<(), Stop> {
    let parts = [out.as_slice(), tail[0], tail[1]];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut bufs = [IoSlice::new(&[]); 3];
        let n = unwritten(&parts, done, &mut bufs);
        let deadline = stall.map(|d| tokio::time::Instant::now() + d);
        tokio::select! {
            r = write_some(wr, &bufs[..n]) => match r {
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

/// Sends exactly `count` bytes of `file` from `offset` by sendfile(2),
/// with `write_out`'s limits; returns how many went (fewer: the file ended
/// first). It is given up only when the connection is (a stall, a forced
/// shutdown), never restarted: each call's bytes are counted once.
pub(crate) async fn sendfile_out(
    sock: Socket<'_>,
    file: &Arc<File>,
    offset: u64,
    count: usize,
    stall: Option<Duration>,
    sd: &mut watch::Receiver<u8>,
) -> Result<usize, Stop> {
    let mut done = 0;
    while done < count {
        let deadline = stall.map(|d| tokio::time::Instant::now() + d);
        let send = sock.sendfile(file, offset + done as u64, count - done);
        tokio::pin!(send);
        let n = loop {
            tokio::select! {
                r = &mut send => break r.map_err(|_| Stop::WriteFailed)?,
                _ = sleep_opt(deadline) => return Err(Stop::WriteStalled),
                r = sd.changed() => if r.is_err() || *sd.borrow() == FORCE {
                    return Err(Stop::Shutdown);
                },
            }
        };
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// One write of `bufs`: a plain one for a single buffer.
async fn write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bufs: &[IoSlice<'_>],
) -> std::io::Result<usize> {
    match bufs {
        [one] => wr.write(one).await,
        _ => wr.write_vectored(bufs).await,
    }
}

/// Fills `into` with what of `parts` lies past the first `done` bytes
/// (empty parts left out); returns how many slices it filled.
fn unwritten<'a>(parts: &[&'a [u8]], mut done: usize, into: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for p in parts {
        if done >= p.len() {
            done -= p.len();
            continue;
        }
        if n == into.len() {
            break;
        }
        into[n] = IoSlice::new(&p[done..]);
        done = 0;
        n += 1;
    }
    n
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
    fn unwritten_skips_what_went_out() {
        let parts: [&[u8]; 3] = [b"ab", b"", b"cde"];
        let mut bufs = [IoSlice::new(&[]); 3];
        let seen = |bufs: &[IoSlice<'_>], n: usize| -> Vec<Vec<u8>> {
            bufs[..n].iter().map(|b| b.to_vec()).collect()
        };
        let n = unwritten(&parts, 0, &mut bufs);
        assert_eq!(seen(&bufs, n), [b"ab".to_vec(), b"cde".to_vec()]);
        let n = unwritten(&parts, 1, &mut bufs);
        assert_eq!(seen(&bufs, n), [b"b".to_vec(), b"cde".to_vec()]);
        let n = unwritten(&parts, 3, &mut bufs);
        assert_eq!(seen(&bufs, n), [b"de".to_vec()]);
        assert_eq!(unwritten(&parts, 5, &mut bufs), 0);
    }

    #[tokio::test]
    async fn writes_out_and_tail_whole_through_short_writes() {
        // A pipe of 7 bytes takes a few at a time; the reader checks the order.
        let (mut wr, mut rd) = tokio::io::duplex(7);
        let (_tx, mut sd) = watch::channel(crate::phase::RUNNING);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.map(|_| got)
        });
        let mut out = b"head:".to_vec();
        let body = vec![b'x'; 100];
        write_out_with(&mut wr, &mut out, [&body, b"\r\n"], None, &mut sd)
            .await
            .expect("written");
        assert!(out.is_empty());
        drop(wr);
        let got = reader.await.expect("join").expect("read");
        let mut want = b"head:".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b"\r\n");
        assert_eq!(got, want);
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
