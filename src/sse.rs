//! Server-Sent Event streams on an HTTP/1.x connection: the keepalive
//! comment timer and the end of a stream at a graceful shutdown.
//!
//! The keepalive timer lives here, in the connection task, rather than on
//! the Perl loop: a tick costs no wake-up of the Perl thread, the timer dies
//! with the connection (client gone, stream ended, server stopped) without
//! any bookkeeping, and it never keeps the Perl loop busy at shutdown.
//! Perl formats the comment frame (the same formatting as `sse.comment`).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::exchange::Exchange;
use crate::proto::h1::conn::Conn;
use crate::proto::h1::encode::Writer;
use crate::stream_io::Stop;

/// Keepalive comments are written at most every 10 ms: a tiny interval must
/// not become a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What Perl says about an SSE stream, after `sse.start` and on every
/// `sse.keepalive` (the last one wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Write `frame` every `interval`; None: no keepalive.
    pub keepalive: Option<(Duration, Bytes)>,
}

impl Settings {
    /// Settings from Perl's values: `interval` in seconds (0, negative or
    /// not a number: no keepalive) and the ready comment frame.
    pub fn new(interval: f64, frame: Bytes) -> Settings {
        let every = (interval.is_finite() && interval > 0.0)
            .then(|| Duration::from_secs_f64(interval.min(1e9)).max(MIN_INTERVAL));
        Settings {
            keepalive: every.map(|d| (d, frame)),
        }
    }
}

/// The SSE state of the response in progress on a connection.
#[derive(Debug)]
pub struct Stream {
    keepalive: Option<(Duration, Bytes)>,
    next: Option<Instant>,
}

impl Stream {
    pub fn new(s: Settings) -> Stream {
        let mut st = Stream {
            keepalive: None,
            next: None,
        };
        st.configure(s);
        st
    }

    /// Applies new settings; the interval counts from now.
    pub fn configure(&mut self, s: Settings) {
        self.next = s.keepalive.as_ref().map(|(d, _)| Instant::now() + *d);
        self.keepalive = s.keepalive;
    }

    /// When the next keepalive comment is due.
    pub fn due(&self) -> Option<Instant> {
        self.next
    }

    /// The comment to write now, if one is due; schedules the next one.
    fn tick(&mut self, now: Instant) -> Option<Bytes> {
        let (every, frame) = self.keepalive.as_ref()?;
        if self.next.is_some_and(|t| t > now) {
            return None;
        }
        self.next = Some(now + *every);
        Some(frame.clone())
    }
}

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send> Conn<R, W> {
    /// Writes a due keepalive comment. It is the server's own traffic, so
    /// it does not count against the app's watermarks.
    pub(crate) async fn sse_keepalive(
        &mut self,
        writer: Option<&mut Writer>,
        ex: &Exchange,
    ) -> Result<(), Stop> {
        let (Some(w), Some(st)) = (writer, self.sse.as_mut()) else {
            return Ok(());
        };
        if let Some(frame) = st.tick(Instant::now()) {
            w.data(&mut self.out, &frame);
            self.flush(ex).await?;
        }
        Ok(())
    }

    /// The server is shutting down: the stream ends properly (terminating
    /// chunk) and the app sees a disconnect with reason `server_shutdown`,
    /// as a WebSocket gets close code 1001.
    pub(crate) async fn sse_going_away(
        &mut self,
        writer: Option<&mut Writer>,
        ex: &Exchange,
    ) -> Stop {
        self.sse = None;
        if let Some(w) = writer {
            w.end(&mut self.out);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.flush(ex)).await;
        Stop::Shutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_perl_values() {
        let f = Bytes::from_static(b":\n\n");
        assert_eq!(Settings::new(0.0, f.clone()).keepalive, None);
        assert_eq!(Settings::new(-1.0, f.clone()).keepalive, None);
        assert_eq!(Settings::new(f64::NAN, f.clone()).keepalive, None);
        assert_eq!(
            Settings::new(0.0001, f.clone()).keepalive,
            Some((MIN_INTERVAL, f.clone()))
        );
        assert_eq!(
            Settings::new(f64::INFINITY, f.clone()).keepalive,
            None,
            "an infinite interval never ticks"
        );
        assert_eq!(
            Settings::new(2.5, f.clone()).keepalive,
            Some((Duration::from_millis(2500), f))
        );
    }

    #[test]
    fn ticks_every_interval_and_stops_when_disabled() {
        let f = Bytes::from_static(b":ping\n\n");
        let mut st = Stream::new(Settings::new(1.0, f.clone()));
        let t1 = st.due().expect("a keepalive is due");
        assert_eq!(st.tick(t1 - Duration::from_millis(1)), None, "not due yet");
        assert_eq!(st.tick(t1), Some(f.clone()));
        assert_eq!(st.due(), Some(t1 + Duration::from_secs(1)));
        st.configure(Settings::new(0.0, f));
        assert_eq!(st.due(), None);
        assert_eq!(st.tick(t1 + Duration::from_secs(5)), None);
    }
}
