//! One PAGI server: its listeners, its bridge queue and the registry of
//! in-flight requests that Perl answers through `send_*`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::abi::kind;
use crate::access_log::LogInfo;
use crate::bridge::Bridge;
use crate::config::Config;
use crate::slow::HeadWaiters;

/// The shutdown phases the core broadcasts (defined in the leaf `phase`).
pub use crate::phase::{FORCE, GRACEFUL, RUNNING};

pub use crate::fields::Fields;
use crate::fields::checked_fields;

/// What Perl sends for a response that has started.
pub enum Out {
    Data(Bytes),
    /// Bytes read by the core itself from an open file.
    File(crate::file_body::FileBody),
    Trailers(Fields),
    End,
    Abort,
    /// A WebSocket message (text or binary) after the handshake.
    WsMessage {
        text: bool,
        data: Bytes,
    },
    /// A WebSocket close frame from the app.
    WsClose {
        code: u16,
        reason: Bytes,
    },
    /// Ping every `interval` (None: stop); with `timeout`, a missing pong closes.
    WsKeepalive {
        interval: Option<Duration>,
        timeout: Option<Duration>,
    },
    /// The response is an SSE stream (sent after `sse.start` and on each
    /// `sse.keepalive`): see `sse::Settings`.
    Sse(crate::sse::Settings),
}

pub struct Head {
    pub status: u16,
    pub headers: Fields,
}

/// State one request shares between its connection task and the Perl thread.
pub struct ReqShared {
    pub id: u64,
    /// The final frame was handed over (or the request was abandoned).
    pub fin: AtomicBool,
    /// Response bytes sent by Perl and not yet written by the connection.
    pub buffered: AtomicUsize,
    /// Perl's `$send` is pending until `buffered` falls to the low mark.
    pub want_drain: AtomicBool,
    /// Request body (or WebSocket message) bytes delivered to Perl and not
    /// yet consumed by the app.
    pub unacked: AtomicUsize,
    /// WebSocket messages delivered to Perl and not yet taken by the app.
    pub messages: AtomicUsize,
    /// The app has asked for the body (gates `100 Continue`).
    pub body_wanted: AtomicBool,
    pub body_wake: Notify,
}

impl ReqShared {
    pub fn new(id: u64) -> ReqShared {
        ReqShared {
            id,
            fin: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            want_drain: AtomicBool::new(false),
            unacked: AtomicUsize::new(0),
            messages: AtomicUsize::new(0),
            body_wanted: AtomicBool::new(false),
            body_wake: Notify::new(),
        }
    }

    /// The app took `n` delivered bytes: the reader may go on.
    fn consumed(&self, n: usize) {
        let _ = self
            .unacked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
        self.body_wake.notify_one();
    }

    pub fn finish(&self) {
        self.fin.store(true, Ordering::SeqCst);
        self.body_wake.notify_one();
    }
}

struct Slot {
    head: Option<oneshot::Sender<Head>>,
    /// The app's head, held back until the first body frame (as the
    /// reference buffers it): a file body that cannot be opened can then
    /// still be answered with an error instead of a truncated response.
    held: Option<Head>,
    body: mpsc::UnboundedSender<Out>,
    shared: Arc<ReqShared>,
    log: Option<LogInfo>,
}

/// Result of a `send_*` call, as seen by Perl.
#[derive(Debug, PartialEq, Eq)]
pub enum SendState {
    /// Accepted; the caller's Future is done.
    Ready,
    /// Accepted, but over the high watermark: wait for a DRAIN record.
    Pending,
    /// The request is gone (finished, aborted or disconnected): a no-op.
    Gone,
}

pub struct ServerCore {
    pub cfg: Config,
    pub bridge: Bridge,
    reqs: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
    conns: AtomicUsize,
    shutdown: watch::Sender<u8>,
    /// Accepting resumes at this time (set after accept errors).
    accept_pause: Mutex<Option<tokio::time::Instant>>,
    /// Connections waiting for a request head (evicted at capacity).
    pub head_waiters: HeadWaiters,
}

impl ServerCore {
    pub fn new(cfg: Config) -> std::io::Result<ServerCore> {
        Ok(ServerCore {
            cfg,
            bridge: Bridge::new()?,
            reqs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            conns: AtomicUsize::new(0),
            shutdown: watch::Sender::new(RUNNING),
            accept_pause: Mutex::new(None),
            head_waiters: HeadWaiters::default(),
        })
    }

    fn reqs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.reqs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn connection_count(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    pub fn shutdown_watch(&self) -> watch::Receiver<u8> {
        self.shutdown.subscribe()
    }

    pub fn phase(&self) -> u8 {
        *self.shutdown.borrow()
    }

    pub fn pause_accept(&self, d: std::time::Duration) {
        let until = tokio::time::Instant::now() + d;
        *self.accept_pause.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// Waits out an accept pause, if one is set.
    pub async fn accept_allowed(&self) {
        let until = *self.accept_pause.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }

    pub fn connection_opened(&self) {
        self.conns.fetch_add(1, Ordering::SeqCst);
    }

    pub fn connection_closed(&self) {
        if self.conns.fetch_sub(1, Ordering::SeqCst) == 1 && self.phase() != RUNNING {
            self.bridge.push(kind::IDLE, 0, |_| {});
        }
    }

    /// Stops accepting; connections finish their current request.
    pub fn begin_shutdown(&self, phase: u8) {
        self.shutdown.send_replace(phase);
        if self.connection_count() == 0 {
            self.bridge.push(kind::IDLE, 0, |_| {});
        }
    }

    /// Registers a request; returns its id, the head receiver and the body receiver.
    pub fn register(
        &self,
        log: Option<LogInfo>,
    ) -> (
        Arc<ReqShared>,
        oneshot::Receiver<Head>,
        mpsc::UnboundedReceiver<Out>,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ReqShared::new(id));
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::unbounded_channel();
        self.reqs().insert(
            id,
            Slot {
                head: Some(head_tx),
                held: None,
                body: body_tx,
                shared: shared.clone(),
                log,
            },
        );
        (shared, head_rx, body_rx)
    }

    /// Tells Perl a request ended abnormally, once. `code` is the WebSocket
    /// close code (0: none, for HTTP); `reason` is a disconnect-reason token
    /// or a WebSocket peer's close reason.
    pub fn disconnected(&self, shared: &ReqShared, reason: &[u8], code: u16) {
        if shared.fin.swap(true, Ordering::SeqCst) {
            return;
        }
        shared.body_wake.notify_one();
        self.bridge.push(kind::DISCONNECT, shared.id, |w| {
            w.bytes(reason).u16(code);
        });
    }

    /// `len` bytes of the app's output left the process: releases a pending
    /// `$send` once the backlog is down to the low mark.
    pub fn written(&self, shared: &ReqShared, len: usize) {
        if len == 0 {
            return;
        }
        let left = shared
            .buffered
            .fetch_sub(len, Ordering::SeqCst)
            .saturating_sub(len);
        if left <= self.cfg.low_watermark && shared.want_drain.swap(false, Ordering::SeqCst) {
            self.bridge.push(kind::DRAIN, shared.id, |_| {});
        }
    }

    /// Perl has seen the end of a request (disconnect or response complete).
    pub fn forget(&self, id: u64) {
        if let Some(slot) = self.reqs().remove(&id) {
            slot.shared.finish();
        }
    }

    /// Takes the response head. A final head is held until the first body
    /// frame (see `Slot::held`); a 1xx (the WebSocket 101) goes out at once.
    pub fn send_start(&self, id: u64, status: u16, raw: &[(&[u8], &[u8])]) -> SendState {
        let headers = checked_fields(&self.bridge, raw, true);
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return SendState::Gone;
        };
        if slot.head.is_none() || slot.held.is_some() {
            return SendState::Gone;
        }
        if let Some(log) = slot.log.as_mut() {
            log.status = status;
        }
        slot.held = Some(Head { status, headers });
        if status < 200 {
            return release(slot);
        }
        SendState::Ready
    }

    /// Drops a head that is still held back, so the app can start the
    /// response afresh; false when there was none (the head is on its way).
    pub fn unstart(&self, id: u64) -> bool {
        self.reqs()
            .get_mut(&id)
            .is_some_and(|slot| slot.held.take().is_some())
    }

    /// Queues body bytes. With `fin` the response is complete: the request is
    /// forgotten and its access-log line (if logging) is returned.
    pub fn send_body(&self, id: u64, data: Bytes, fin: bool) -> (SendState, Option<String>) {
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return (SendState::Gone, None);
        };
        let mut state = SendState::Ready;
        if !data.is_empty() {
            state = self.queue_data(slot, data.len(), Out::Data(data), fin);
        }
        // Any body call, even an empty one (a flush), lets a held head go.
        release(slot);
        if !fin {
            return (state, None);
        }
        let _ = slot.body.send(Out::End);
        let slot = reqs.remove(&id);
        drop(reqs);
        let line = slot.and_then(|s| {
            s.shared.finish();
            s.log.map(|l| l.format(&self.cfg.log_format))
        });
        (SendState::Ready, line)
    }

    /// Queues app bytes, counted against the watermarks until written.
    fn queue_data(&self, slot: &mut Slot, len: usize, out: Out, fin: bool) -> SendState {
        if let Some(log) = slot.log.as_mut() {
            log.bytes += len as u64;
        }
        let mut state = SendState::Ready;
        let now = slot.shared.buffered.fetch_add(len, Ordering::SeqCst) + len;
        if !fin && now > self.cfg.high_watermark {
            slot.shared.want_drain.store(true, Ordering::SeqCst);
            state = SendState::Pending;
        }
        // A closed receiver means the connection dropped the body (HEAD, or
        // the connection ended); the disconnect path reports the latter.
        let _ = slot.body.send(out);
        state
    }

    /// Queues a WebSocket message on an accepted connection.
    pub fn ws_send(&self, id: u64, text: bool, data: Bytes) -> SendState {
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return SendState::Gone;
        };
        if slot.head.is_some() {
            return SendState::Gone; // not accepted
        }
        self.queue_data(slot, data.len(), Out::WsMessage { text, data }, false)
    }

    /// The app took a WebSocket message of `n` bytes; reading may go on.
    pub fn ws_ack(&self, id: u64, n: usize) {
        if let Some(slot) = self.reqs().get(&id) {
            let _ = slot
                .shared
                .messages
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                    Some(u.saturating_sub(1))
                });
            slot.shared.consumed(n);
        }
    }

    /// Hands a stream setting (SSE) to the connection; a held head goes
    /// with it, since the stream must start at once.
    pub fn stream_control(&self, id: u64, out: Out) -> SendState {
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return SendState::Gone;
        };
        if slot.body.send(out).is_err() {
            return SendState::Gone;
        }
        release(slot)
    }

    /// Hands a WebSocket control command (close, keepalive) to the connection.
    pub fn ws_control(&self, id: u64, out: Out) -> SendState {
        match self.reqs().get(&id) {
            Some(slot) if slot.head.is_none() && slot.body.send(out).is_ok() => SendState::Ready,
            _ => SendState::Gone,
        }
    }

    /// Queues a file body: the connection reads it, Perl never sees the bytes.
    pub fn send_file(
        &self,
        id: u64,
        file: std::fs::File,
        len: Option<u64>,
        fin: bool,
    ) -> (SendState, Option<String>) {
        use std::io::Seek;
        let size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        // A regular file is read from where it stands now, whatever the
        // app does with its handle afterwards (see file_body.rs).
        let start = size.and_then(|_| (&file).stream_position().ok());
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return (SendState::Gone, None);
        };
        if let Some(log) = slot.log.as_mut() {
            let avail = size.map(|s| s.saturating_sub(start.unwrap_or(0)));
            log.bytes += match (len, avail) {
                (Some(l), Some(a)) => l.min(a),
                (Some(l), None) => l,
                (None, Some(a)) => a,
                (None, None) => 0,
            };
        }
        let body = crate::file_body::FileBody::new(file, start, len);
        let _ = slot.body.send(Out::File(body));
        release(slot);
        drop(reqs);
        if fin {
            self.send_body(id, Bytes::new(), true)
        } else {
            (SendState::Ready, None)
        }
    }

    pub fn send_trailers(&self, id: u64, raw: &[(&[u8], &[u8])]) -> (SendState, Option<String>) {
        let fields = checked_fields(&self.bridge, raw, false);
        let Some(mut slot) = self.reqs().remove(&id) else {
            return (SendState::Gone, None);
        };
        let _ = slot.body.send(Out::Trailers(fields));
        release(&mut slot);
        let _ = slot.body.send(Out::End);
        slot.shared.finish();
        (
            SendState::Ready,
            slot.log.map(|l| l.format(&self.cfg.log_format)),
        )
    }

    /// Ends a request without a proper response: the connection is closed.
    pub fn abort(&self, id: u64) {
        if let Some(mut slot) = self.reqs().remove(&id) {
            let _ = slot.body.send(Out::Abort);
            // A started response keeps its head, as in the reference: the
            // client sees the status, then the connection closes.
            release(&mut slot);
            slot.shared.finish();
            // Dropping `slot.head` (if unsent) ends the connection's wait
            // for a head, which closes the connection.
        }
    }

    /// Response bytes queued by Perl and not yet written by the connection
    /// (0 once the request is finished or unknown).
    pub fn buffered(&self, id: u64) -> usize {
        self.reqs()
            .get(&id)
            .map_or(0, |s| s.shared.buffered.load(Ordering::SeqCst))
    }

    /// The app consumed `n` bytes of request body (0: it is waiting for the
    /// body); the reader may go on.
    pub fn body_ack(&self, id: u64, n: usize) {
        if let Some(slot) = self.reqs().get(&id) {
            slot.shared.body_wanted.store(true, Ordering::SeqCst);
            slot.shared.consumed(n);
        }
    }
}

/// Sends a held head to the connection, after the frames queued with it
/// (the connection takes those frames with the head, in one write).
fn release(slot: &mut Slot) -> SendState {
    let Some(head) = slot.held.take() else {
        return SendState::Ready;
    };
    match slot.head.take().map(|tx| tx.send(head)) {
        Some(Ok(())) => SendState::Ready,
        _ => SendState::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> ServerCore {
        let cfg =
            Config::parse("listen=tcp:127.0.0.1:0\nwrite_high_watermark=10\nwrite_low_watermark=4")
                .expect("config");
        ServerCore::new(cfg).expect("core")
    }

    #[test]
    fn send_lifecycle_and_backpressure() {
        let c = core();
        let (shared, mut head_rx, mut body_rx) = c.register(None);
        let id = shared.id;
        assert_eq!(
            c.send_start(id, 200, &[(&b"Content-Type"[..], &b"text/plain"[..])]),
            SendState::Ready
        );
        assert!(
            head_rx.try_recv().is_err(),
            "held until the first body frame"
        );
        // A second start is refused.
        assert_eq!(c.send_start(id, 500, &[]), SendState::Gone);
        assert_eq!(
            c.send_body(id, Bytes::from_static(b"12345"), false).0,
            SendState::Ready
        );
        let head = head_rx.try_recv().expect("head delivered with the body");
        assert_eq!(head.status, 200);
        assert_eq!(head.headers.len(), 1);
        assert!(!c.unstart(id), "the head is on its way");
        assert_eq!(
            c.send_body(id, Bytes::from_static(b"678901"), false).0,
            SendState::Pending
        );
        assert!(shared.want_drain.load(Ordering::SeqCst));
        assert_eq!(c.send_body(id, Bytes::new(), true).0, SendState::Ready);
        assert!(shared.fin.load(Ordering::SeqCst));
        assert_eq!(
            c.send_body(id, Bytes::from_static(b"x"), true).0,
            SendState::Gone
        );
        let mut frames = 0;
        while let Ok(f) = body_rx.try_recv() {
            frames += 1;
            if frames == 3 {
                assert!(matches!(f, Out::End));
            }
        }
        assert_eq!(frames, 3);
    }

    #[test]
    fn injected_header_values_are_dropped() {
        let c = core();
        let (shared, mut head_rx, _b) = c.register(None);
        c.send_start(
            shared.id,
            200,
            &[
                (&b"x-ok"[..], &b"fine"[..]),
                (&b"x-bad"[..], &b"a\r\nSet-Cookie: evil"[..]),
                (&b"transfer-encoding"[..], &b"chunked"[..]),
            ],
        );
        c.send_body(shared.id, Bytes::new(), false);
        let head = head_rx.try_recv().expect("head");
        let names: Vec<_> = head.headers.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, vec![&b"x-ok"[..]]);
    }

    #[test]
    fn a_held_head_can_be_taken_back_or_released() {
        let c = core();
        // Taken back (a file body could not be opened): the app starts again.
        let (shared, mut head_rx, _b) = c.register(None);
        assert_eq!(c.send_start(shared.id, 200, &[]), SendState::Ready);
        assert!(c.unstart(shared.id));
        assert!(!c.unstart(shared.id), "only once");
        assert_eq!(c.send_start(shared.id, 404, &[]), SendState::Ready);
        c.send_body(shared.id, Bytes::from_static(b"gone"), true);
        assert_eq!(head_rx.try_recv().expect("head").status, 404);

        // An abort still lets the head go out before the connection closes.
        let (shared, mut head_rx, mut body_rx) = c.register(None);
        c.send_start(shared.id, 200, &[]);
        c.abort(shared.id);
        assert_eq!(head_rx.try_recv().expect("head").status, 200);
        assert!(matches!(body_rx.try_recv(), Ok(Out::Abort)));

        // A stream setting sends the head at once, as does a 101.
        let (shared, mut head_rx, mut body_rx) = c.register(None);
        c.send_start(shared.id, 200, &[]);
        let s = crate::sse::Settings::new(0.0, Bytes::new());
        assert_eq!(c.stream_control(shared.id, Out::Sse(s)), SendState::Ready);
        assert!(head_rx.try_recv().is_ok());
        assert!(matches!(body_rx.try_recv(), Ok(Out::Sse(_))));
        let (shared, mut head_rx, _b) = c.register(None);
        c.send_start(shared.id, 101, &[]);
        assert_eq!(head_rx.try_recv().expect("head").status, 101);
    }
}
