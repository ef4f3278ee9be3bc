//! Defences against slow clients: the minimum request-body rate, and the
//! registry of connections waiting for a request head, from which the one
//! that has waited longest is evicted when `max_connections` is reached.
//! (The head deadline itself is one fixed instant per head, in `proto::h1::conn`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// A connection must have waited this long for its request head before it
/// can be closed to make room for a new one: a real client sends its head
/// right after connecting (or after reading the previous response).
pub const EVICT_GRACE: Duration = Duration::from_secs(1);
/// The grace once part of a head has arrived: a real client sends a head in
/// one go, so a head still incomplete after this is being trickled (this
/// leaves room for a lost segment's retransmission).
pub const EVICT_GRACE_PARTIAL: Duration = Duration::from_millis(250);

struct Waiter {
    since: Instant,
    evict: oneshot::Sender<()>,
}

/// Connections waiting for a request head, in the order they started to
/// wait (which is the order of their `since`, so the first is the oldest),
/// apart for those with nothing yet and those with part of a head.
#[derive(Default)]
struct Waiting {
    idle: BTreeMap<u64, Waiter>,
    partial: BTreeMap<u64, Waiter>,
}

/// The registry of connections waiting for a request head.
#[derive(Default)]
pub struct HeadWaiters {
    next: AtomicU64,
    waiting: Mutex<Waiting>,
    /// Evictions not yet logged, and the second of the last log line.
    unlogged: AtomicU64,
    logged_at: AtomicU64,
}

/// A connection's entry in the registry; dropping it (the head arrived, or
/// the connection ends) removes the entry.
pub struct HeadWait<'a> {
    reg: &'a HeadWaiters,
    key: u64,
    partial: bool,
    /// Completes when the connection is chosen for eviction.
    pub evicted: oneshot::Receiver<()>,
}

impl HeadWait<'_> {
    /// Part of the head has arrived (only the first call does anything).
    pub fn partial(&mut self) {
        if self.partial {
            return;
        }
        self.partial = true;
        let mut w = self.reg.lock();
        if let Some(entry) = w.idle.remove(&self.key) {
            w.partial.insert(self.key, entry);
        }
    }
}

impl Drop for HeadWait<'_> {
    fn drop(&mut self) {
        let mut w = self.reg.lock();
        if self.partial {
            w.partial.remove(&self.key);
        } else {
            w.idle.remove(&self.key);
        }
    }
}

/// Completes when the registered connection is chosen for eviction; never
/// while it is not registered (a `select!` arm that stays off).
pub async fn evicted(wait: &mut Option<HeadWait<'_>>) {
    match wait {
        Some(w) => {
            let _ = (&mut w.evicted).await;
        }
        None => std::future::pending().await,
    }
}

impl HeadWaiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection that has been waiting for its head since `since`.
    pub fn enter(&self, since: Instant) -> HeadWait<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let (evict, evicted) = oneshot::channel();
        self.lock().idle.insert(key, Waiter { since, evict });
        HeadWait {
            reg: self,
            key,
            partial: false,
            evicted,
        }
    }

    /// Closes the connection that has waited longest for its head among
    /// those past their grace (`EVICT_GRACE`, or `EVICT_GRACE_PARTIAL` once
    /// part of the head is in); returns how long it had waited.
    pub fn evict_oldest(&self, now: Instant) -> Option<Duration> {
        let mut waiting = self.lock();
        let past = |map: &BTreeMap<u64, Waiter>, grace: Duration| {
            map.first_key_value()
                .map(|(&key, w)| (key, now.saturating_duration_since(w.since)))
                .filter(|&(_, waited)| waited >= grace)
        };
        let idle = past(&waiting.idle, EVICT_GRACE);
        let partial = past(&waiting.partial, EVICT_GRACE_PARTIAL);
        let (map, key, waited) = match (idle, partial) {
            (Some((ki, wi)), Some((_, wp))) if wi > wp => (&mut waiting.idle, ki, wi),
            (_, Some((kp, wp))) => (&mut waiting.partial, kp, wp),
            (Some((ki, wi)), None) => (&mut waiting.idle, ki, wi),
            (None, None) => return None,
        };
        let w = map.remove(&key)?;
        drop(waiting);
        // The receiver lives until the entry is gone: it hears this.
        let _ = w.evict.send(());
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        Some(waited)
    }

    /// Evictions since the last call, at most once a second (for one log
    /// line instead of one per eviction); 0 when there is nothing to say.
    pub fn evictions_to_log(&self, now_secs: u64) -> u64 {
        let last = self.logged_at.load(Ordering::Relaxed);
        if now_secs == last
            || self
                .logged_at
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        self.unlogged.swap(0, Ordering::Relaxed)
    }

    /// Connections currently waiting for a head.
    #[cfg(test)]
    fn len(&self) -> usize {
        let w = self.lock();
        w.idle.len() + w.partial.len()
    }
}

/// The most time a body's bytes can earn (about 34 years): far beyond any
/// real body, small enough that the deadline never overflows an `Instant`.
const MAX_EARNED_SECS: f64 = (1u64 << 30) as f64;

/// The minimum request-body rate. With grace `T` (`request_timeout`) and
/// rate `R` bytes/s, `n` body bytes must have arrived within `T + n/R`
/// seconds of reading time (as Apache's mod_reqtimeout counts); time in
/// which the server is not reading (the app has not asked for the body, or
/// has not consumed what was delivered) is not counted.
pub struct BodyClock {
    grace: Duration,
    rate: u64,
    start: Instant,
    paused: Option<Instant>,
    received: u64,
}

impl BodyClock {
    /// None when either the grace or the rate is off.
    pub fn new(grace: Option<Duration>, rate: u64, now: Instant) -> Option<BodyClock> {
        let grace = grace?;
        (rate > 0).then_some(BodyClock {
            grace,
            rate,
            start: now,
            paused: Some(now),
            received: 0,
        })
    }

    /// Sets whether the server is reading the body right now.
    pub fn reading(&mut self, on: bool, now: Instant) {
        match (on, self.paused) {
            (true, Some(p)) => {
                self.start += now.saturating_duration_since(p);
                self.paused = None;
            }
            (false, None) => self.paused = Some(now),
            _ => {}
        }
    }

    pub fn received(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
    }

    /// When the body is too slow, unless more arrives first (None: paused).
    pub fn deadline(&self) -> Option<Instant> {
        if self.paused.is_some() {
            return None;
        }
        // Capped before the conversion, which panics past Duration::MAX.
        let earned = (self.received as f64 / self.rate as f64).min(MAX_EARNED_SECS);
        Some(self.start + self.grace + Duration::from_secs_f64(earned))
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_waiter_past_the_grace_only() {
        let reg = HeadWaiters::default();
        let t0 = Instant::now();
        let mut old = reg.enter(t0);
        let mut young = reg.enter(t0 + Duration::from_millis(900));
        assert_eq!(reg.evict_oldest(t0 + Duration::from_millis(500)), None);
        assert_eq!(
            reg.evict_oldest(t0 + Duration::from_millis(1500)),
            Some(Duration::from_millis(1500))
        );
        assert!(old.evicted.try_recv().is_ok());
        assert!(young.evicted.try_recv().is_err());
        // The young one has waited 600 ms: not evictable yet.
        assert_eq!(reg.evict_oldest(t0 + Duration::from_millis(1500)), None);
        drop(old);
        assert_eq!(reg.len(), 1);
        drop(young);
        assert_eq!(reg.len(), 0);
        assert_eq!(reg.evict_oldest(t0 + Duration::from_secs(10)), None);
        assert_eq!(reg.evictions_to_log(7), 1);
        assert_eq!(reg.evictions_to_log(7), 0);
    }

    #[test]
    fn a_partial_head_is_evictable_sooner_and_the_oldest_goes_first() {
        let reg = HeadWaiters::default();
        let t0 = Instant::now();
        let mut idle = reg.enter(t0);
        let mut trickle = reg.enter(t0 + Duration::from_millis(100));
        trickle.partial();
        trickle.partial();
        // 400 ms: the idle one is within its grace, the trickler past its own.
        assert_eq!(
            reg.evict_oldest(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(300))
        );
        assert!(trickle.evicted.try_recv().is_ok());
        assert!(idle.evicted.try_recv().is_err());
        let mut t2 = reg.enter(t0 + Duration::from_millis(500));
        t2.partial();
        // Both past their grace: the one that has waited longer goes.
        assert_eq!(
            reg.evict_oldest(t0 + Duration::from_millis(1200)),
            Some(Duration::from_millis(1200))
        );
        assert!(idle.evicted.try_recv().is_ok());
        drop((idle, trickle));
        assert_eq!(reg.len(), 1);
        drop(t2);
        assert_eq!(reg.len(), 0);
    }

    #[test]
    fn body_clock_earns_time_per_byte_and_pauses() {
        let t0 = Instant::now();
        assert!(BodyClock::new(None, 500, t0).is_none());
        assert!(BodyClock::new(Some(Duration::from_secs(5)), 0, t0).is_none());
        let mut c = BodyClock::new(Some(Duration::from_secs(5)), 500, t0).expect("on");
        assert_eq!(c.deadline(), None, "starts paused");
        c.reading(true, t0);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(5)));
        c.received(1000);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(7)));
        c.reading(false, t0 + Duration::from_secs(1));
        assert_eq!(c.deadline(), None);
        c.reading(true, t0 + Duration::from_secs(4));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn body_clock_survives_any_byte_count_and_rate() {
        let t0 = Instant::now();
        let grace = Some(Duration::from_secs(1_000_000_000));
        for rate in [1, 3, u64::MAX] {
            let mut c = BodyClock::new(grace, rate, t0).expect("on");
            c.reading(true, t0);
            c.received(usize::MAX);
            c.received(usize::MAX);
            assert!(c.deadline().is_some_and(|d| d > t0), "rate {rate}");
        }
    }
}
