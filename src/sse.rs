//! Server-Sent Event streams: the app's stream settings and the keepalive
//! comment timer, whichever protocol carries the stream (the HTTP/1 side is
//! in `proto::h1::sse`).
//!
//! The keepalive timer lives here, in the connection task, rather than on
//! the Perl loop: a tick costs no wake-up of the Perl thread, the timer dies
//! with the connection (client gone, stream ended, server stopped) without
//! any bookkeeping, and it never keeps the Perl loop busy at shutdown.
//! Perl formats the comment frame (the same formatting as `sse.comment`).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

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
    pub fn tick(&mut self, now: Instant) -> Option<Bytes> {
        let (every, frame) = self.keepalive.as_ref()?;
        if self.next.is_some_and(|t| t > now) {
            return None;
        }
        self.next = Some(now + *every);
        Some(frame.clone())
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
