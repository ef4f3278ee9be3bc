//! Server-Sent Event streams: the app's stream settings, the keepalive
//! comment timer and the idle clock, whichever protocol carries the stream
//! (the HTTP/1 side is in `proto::h1::sse`).
//!
//! The keepalive timer lives here, in the connection task, rather than on
//! the Perl loop: a tick costs no wake-up of the Perl thread, the timer dies
//! with the connection (client gone, stream ended, server stopped) without
//! any bookkeeping, and it never keeps the Perl loop busy at shutdown.
//! Perl formats the comment frame (the same formatting as `sse.comment`).
//!
//! `sse_idle_timeout`: a stream is idle while neither the app nor the
//! client moves it on. The clock starts when the request reaches the app
//! and starts again whenever the app sends an event on it (every `sse.*`
//! send, the declining `sse.http.response.*` ones included) and whenever
//! its connection finishes writing the app's bytes. A single write that
//! makes no progress for the idle limit counts as idle too, so a client
//! that stops reading cannot hold a stream open. The server's own
//! keepalive comments and anything the client sends do not count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
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
    /// A stream with the app's first settings.
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

/// The instant stamps count from (the first use in this process).
fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// When the app last sent something on a request, kept where the Perl
/// thread can set it without waking the connection (an event that stays in
/// Perl, such as an `sse.keepalive` before `sse.start`).
#[derive(Debug, Default)]
pub struct Touched(AtomicU64);

impl Touched {
    /// Notes the present moment.
    pub fn touch(&self) {
        let ns = epoch().elapsed().as_nanos();
        // 0 means never; nanoseconds in a u64 last 584 years.
        let stamp = u64::try_from(ns).unwrap_or(u64::MAX - 1).saturating_add(1);
        self.0.store(stamp, Ordering::Relaxed);
    }

    /// The moment last noted, if any.
    pub fn at(&self) -> Option<Instant> {
        let stamp = self.0.load(Ordering::Relaxed);
        (stamp > 0).then(|| Instant::from_std(epoch() + Duration::from_nanos(stamp - 1)))
    }
}

/// The idle clock of one SSE-scope request (see the module doc). Off, it
/// costs nothing: no clock is read.
#[derive(Debug)]
pub struct IdleClock {
    /// The limit and when the clock last started; None: never idle.
    on: Option<(Duration, Instant)>,
}

impl IdleClock {
    /// Starts the clock now; `limit` None: never idle.
    pub fn new(limit: Option<Duration>) -> IdleClock {
        IdleClock {
            on: limit.map(|d| (d, Instant::now())),
        }
    }

    /// The stream moved on (an event from the app, a write finished).
    pub fn reset(&mut self) {
        if let Some((_, since)) = self.on.as_mut() {
            *since = Instant::now();
        }
    }

    /// The idle limit, for the message that reports it.
    pub fn limit(&self) -> Option<Duration> {
        self.on.map(|(d, _)| d)
    }

    /// When the stream is idle, given when the Perl side last noted a send.
    pub fn deadline(&self, touched: Option<Instant>) -> Option<Instant> {
        let (limit, since) = self.on?;
        Some(touched.map_or(since, |t| t.max(since)) + limit)
    }

    /// Whether the stream is idle at `now`.
    pub fn expired(&self, touched: Option<Instant>, now: Instant) -> bool {
        self.deadline(touched).is_some_and(|d| now >= d)
    }

    /// The stall limit for one write: the shorter of `stall` (the
    /// `request_timeout`) and the idle limit, and whether running out of
    /// it means idle (rather than a write timeout).
    pub fn write_limit(&self, stall: Option<Duration>) -> (Option<Duration>, bool) {
        match (stall, self.limit()) {
            (Some(s), Some(i)) if i < s => (Some(i), true),
            (None, Some(i)) => (Some(i), true),
            (s, _) => (s, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_stamps_keep_their_instant() {
        let t = Touched::default();
        assert_eq!(t.at(), None, "never touched");
        let before = Instant::now();
        t.touch();
        let at = t.at().expect("touched");
        assert!(at >= before - Duration::from_millis(1) && at <= Instant::now());
    }

    #[test]
    fn idle_clock_deadlines_and_write_limits() {
        let s = Duration::from_secs;
        let off = IdleClock::new(None);
        assert_eq!(off.deadline(None), None);
        assert!(!off.expired(None, Instant::now() + s(1000)));
        assert_eq!(off.write_limit(Some(s(5))), (Some(s(5)), false));
        assert_eq!(off.write_limit(None), (None, false));

        let mut c = IdleClock::new(Some(s(2)));
        let d0 = c.deadline(None).expect("on");
        assert!(!c.expired(None, d0 - Duration::from_millis(1)));
        assert!(c.expired(None, d0));
        // A later touch from Perl moves the deadline; an earlier one does not.
        let later = Instant::now() + s(1);
        assert_eq!(c.deadline(Some(later)), Some(later + s(2)));
        assert_eq!(c.deadline(Some(d0 - s(10))), Some(d0));
        std::thread::sleep(Duration::from_millis(5));
        c.reset();
        assert!(c.deadline(None).expect("on") > d0);
        assert_eq!(c.limit(), Some(s(2)));

        assert_eq!(c.write_limit(None), (Some(s(2)), true));
        assert_eq!(c.write_limit(Some(s(5))), (Some(s(2)), true));
        assert_eq!(c.write_limit(Some(s(1))), (Some(s(1)), false));
        assert_eq!(c.write_limit(Some(s(2))), (Some(s(2)), false));
    }

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
