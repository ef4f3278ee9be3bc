//! Reading and writing a byte stream under the server's rules (a stall
//! limit, the force-close phase of a shutdown), shared by every protocol.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::phase::FORCE;

/// Why a connection stops in the middle of a request.
pub(crate) enum Stop {
    Closed,
    Stalled,
    Shutdown,
}

impl Stop {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Stop::Closed => "client_closed",
            Stop::Stalled => "client_timeout",
            Stop::Shutdown => "server_shutdown",
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
                Ok(0) | Err(_) => return Err(Stop::Closed),
                Ok(n) => done += n,
            },
            _ = sleep_opt(deadline) => return Err(Stop::Stalled),
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
