//! The clocks of a WebSocket session: idle timeout, keepalive pings and
//! their pongs, and the wait for the client's answer to the app's close.

use std::time::Duration;

use tokio::time::Instant;

/// How long the app's close waits for the client's reply.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The session's deadlines; the session sleeps until the earliest.
pub(super) struct Timers {
    idle: Option<Duration>,
    last_activity: Instant,
    ping_every: Option<Duration>,
    pong_within: Option<Duration>,
    next_ping: Option<Instant>,
    pong_due: Option<Instant>,
    close_due: Option<Instant>,
}

/// What a timer that ran out asks for.
#[derive(Clone, Copy)]
pub(super) enum Due {
    Ping,
    Idle,
    Pong,
    CloseReply,
}

impl Timers {
    pub(super) fn new(idle: Option<Duration>) -> Timers {
        Timers {
            idle,
            last_activity: Instant::now(),
            ping_every: None,
            pong_within: None,
            next_ping: None,
            pong_due: None,
            close_due: None,
        }
    }

    /// The idle timeout, for the message that reports it.
    pub(super) fn idle(&self) -> Option<Duration> {
        self.idle
    }

    /// The keepalive's pong timeout, for the message that reports it.
    pub(super) fn pong_within(&self) -> Option<Duration> {
        self.pong_within
    }

    pub(super) fn active(&mut self) {
        self.last_activity = Instant::now();
    }

    /// `websocket.keepalive`: the last one wins; no interval stops pinging.
    pub(super) fn keepalive(&mut self, every: Option<Duration>, within: Option<Duration>) {
        self.ping_every = every;
        self.pong_within = within;
        self.next_ping = every.map(|i| Instant::now() + i);
        self.pong_due = None;
    }

    pub(super) fn pinged(&mut self) {
        let now = Instant::now();
        self.next_ping = self.ping_every.map(|i| now + i);
        if self.pong_due.is_none() {
            self.pong_due = self.pong_within.map(|t| now + t);
        }
    }

    /// The client answered: no pong is awaited any more.
    pub(super) fn ponged(&mut self) {
        self.pong_due = None;
    }

    /// The app's close frame is out: the client's reply is awaited.
    pub(super) fn closing(&mut self) {
        self.close_due = Some(Instant::now() + CLOSE_WAIT);
    }

    /// The earliest deadline; with `writing`, pings wait (they would queue
    /// behind the stuck bytes anyway).
    pub(super) fn next(&self, writing: bool) -> Option<(Instant, Due)> {
        let idle = self.idle.map(|d| (self.last_activity + d, Due::Idle));
        let ping = if writing {
            None
        } else {
            self.next_ping.map(|t| (t, Due::Ping))
        };
        [
            idle,
            ping,
            self.pong_due.map(|t| (t, Due::Pong)),
            self.close_due.map(|t| (t, Due::CloseReply)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
    }
}
