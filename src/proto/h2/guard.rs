//! Flood limits the `h2` crate does not keep itself: a client's RST_STREAM
//! frames (Rapid Reset, CVE-2023-44487, with the reference's token bucket,
//! `h2_rst_rate_limit`), PING frames and SETTINGS frames, each of which
//! costs the server work (a reset stream, a PONG, a SETTINGS ACK) while
//! costing the client nothing. `Watched` wraps the connection's byte
//! stream and reads the frame headers as they pass; when a bucket runs dry
//! it stops feeding the protocol and wakes the connection task, which ends
//! the connection with GOAWAY (ENHANCE_YOUR_CALM).
//!
//! (CONTINUATION floods, oversized header lists, resets of streams not yet
//! accepted and floods of empty DATA frames are bounded by `h2` itself.)

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::settings::H2Settings;

/// The client connection preface, which precedes the first frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// PING and SETTINGS frames a client may send at once, and per second after.
const PING_BURST: f64 = 1000.0;
const PING_RATE: f64 = 100.0;
const SETTINGS_BURST: f64 = 100.0;
const SETTINGS_RATE: f64 = 10.0;

const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// A token bucket: `burst` at once, refilled at `rate` per second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: f64, rate: f64) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            rate,
            at: Instant::now(),
        }
    }

    /// Takes one token; false when none is left.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Which limit a client broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Reset,
    Ping,
    Settings,
}

impl Flood {
    /// As the log names it.
    pub fn name(self) -> &'static str {
        match self {
            Flood::Reset => "RST_STREAM",
            Flood::Ping => "PING",
            Flood::Settings => "SETTINGS",
        }
    }
}

/// Where the frame reader is in the byte stream.
#[derive(Debug)]
struct Scan {
    /// Preface bytes still to pass before the first frame header.
    preface: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    rst: Bucket,
    ping: Bucket,
    settings: Bucket,
}

impl Scan {
    fn new(s: &H2Settings) -> Scan {
        Scan {
            preface: PREFACE.len(),
            header: [0; 9],
            have: 0,
            skip: 0,
            rst: Bucket::new(f64::from(s.rst_burst), f64::from(s.rst_rate)),
            ping: Bucket::new(PING_BURST, PING_RATE),
            settings: Bucket::new(SETTINGS_BURST, SETTINGS_RATE),
        }
    }

    /// Reads the frame headers in `bytes` (the next bytes of the stream);
    /// the first limit broken, if any.
    fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Option<Flood> {
        let mut first = None;
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = self.header;
            self.skip = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
            let (kind, ack) = (h[3], h[4] & ACK != 0);
            let broken = match kind {
                RST_STREAM if !self.rst.take(now) => Some(Flood::Reset),
                PING if !ack && !self.ping.take(now) => Some(Flood::Ping),
                SETTINGS if !ack && !self.settings.take(now) => Some(Flood::Settings),
                _ => None,
            };
            first = first.or(broken);
        }
        first
    }
}

/// What the connection task watches: which limit was broken, once one is
/// (one atomic, read on every read of the connection).
#[derive(Debug, Default)]
pub struct Tripped {
    /// 0: none yet; else `Flood as u8 + 1`.
    what: AtomicU8,
    notify: Notify,
}

impl Tripped {
    fn get(&self) -> Option<Flood> {
        match self.what.load(Ordering::SeqCst) {
            0 => None,
            1 => Some(Flood::Reset),
            2 => Some(Flood::Ping),
            _ => Some(Flood::Settings),
        }
    }

    /// Completes once a limit is broken, with which one.
    pub async fn wait(&self) -> Flood {
        loop {
            let notified = self.notify.notified();
            if let Some(f) = self.get() {
                return f;
            }
            notified.await;
        }
    }

    fn trip(&self, what: Flood) {
        let _ = self
            .what
            .compare_exchange(0, what as u8 + 1, Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// A connection's byte stream with its frames watched. `pre`: bytes already
/// read from it (while telling h2c from HTTP/1.x), read again first.
pub struct Watched<T> {
    io: T,
    pre: BytesMut,
    scan: Scan,
    tripped: Arc<Tripped>,
}

impl<T> Watched<T> {
    pub fn new(io: T, pre: BytesMut, s: &H2Settings, tripped: Arc<Tripped>) -> Watched<T> {
        Watched {
            io,
            pre,
            scan: Scan::new(s),
            tripped,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Once tripped, nothing more reaches the protocol: the connection
        // task sends GOAWAY and closes.
        if this.tripped.get().is_some() {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = if this.pre.is_empty() {
            Pin::new(&mut this.io).poll_read(cx, buf)
        } else {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre.split_to(n));
            Poll::Ready(Ok(()))
        };
        if let Poll::Ready(Ok(())) = r {
            if let Some(f) = this.scan.feed(&buf.filled()[before..], Instant::now()) {
                this.tripped.trip(f);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
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

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        f.extend_from_slice(payload);
        f
    }

    fn settings(burst: u32, rate: u32) -> H2Settings {
        H2Settings {
            rst_burst: burst,
            rst_rate: rate,
            ..H2Settings::default()
        }
    }

    #[test]
    fn counts_resets_across_split_reads_and_skips_payloads() {
        let mut scan = Scan::new(&settings(3, 0));
        let now = Instant::now();
        let mut wire = PREFACE.to_vec();
        // A DATA frame whose payload looks like RST_STREAM headers.
        wire.extend(frame(0x0, 0, &frame(RST_STREAM, 0, &[0; 4]).repeat(5)));
        for _ in 0..3 {
            wire.extend(frame(RST_STREAM, 0, &[0, 0, 0, 8]));
        }
        // Fed a byte at a time: nothing broken yet.
        for b in &wire {
            assert_eq!(scan.feed(std::slice::from_ref(b), now), None);
        }
        assert_eq!(
            scan.feed(&frame(RST_STREAM, 0, &[0, 0, 0, 8]), now),
            Some(Flood::Reset)
        );
    }

    #[test]
    fn acks_are_free_and_buckets_refill() {
        let mut scan = Scan::new(&settings(1, 10));
        let t0 = Instant::now();
        scan.feed(PREFACE, t0);
        let pings = frame(PING, 0, &[0; 8]).repeat(1000);
        assert_eq!(scan.feed(&pings, t0), None);
        assert_eq!(scan.feed(&frame(PING, ACK, &[0; 8]), t0), None);
        assert_eq!(scan.feed(&frame(PING, 0, &[0; 8]), t0), Some(Flood::Ping));
        assert_eq!(scan.feed(&frame(RST_STREAM, 0, &[0; 4]), t0), None);
        assert_eq!(
            scan.feed(&frame(RST_STREAM, 0, &[0; 4]), t0),
            Some(Flood::Reset)
        );
        let later = t0 + std::time::Duration::from_millis(150);
        assert_eq!(scan.feed(&frame(RST_STREAM, 0, &[0; 4]), later), None);
        let s = frame(SETTINGS, 0, &[]).repeat(100);
        assert_eq!(scan.feed(&s, t0), None);
        assert_eq!(scan.feed(&frame(SETTINGS, ACK, &[]), t0), None);
        assert_eq!(
            scan.feed(&frame(SETTINGS, 0, &[]), t0),
            Some(Flood::Settings)
        );
    }

    #[test]
    fn bytes_read_before_are_read_again_and_watched() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut client, server) = tokio::io::duplex(4096);
            let mut pre = BytesMut::from(&PREFACE[..]);
            pre.extend_from_slice(&frame(RST_STREAM, 0, &[0; 4]).repeat(2));
            let tripped = Arc::new(Tripped::default());
            let mut io = Watched::new(server, pre.clone(), &settings(1, 0), tripped.clone());
            client.write_all(b"after").await.expect("write");
            let mut got = vec![0; pre.len()];
            io.read_exact(&mut got).await.expect("read");
            assert_eq!(got, pre.to_vec());
            assert_eq!(tripped.wait().await, Flood::Reset);
        });
    }
}
