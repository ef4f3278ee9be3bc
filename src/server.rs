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
use crate::bridge::queue::Bridge;
use crate::config::Config;
use crate::slow::HeadWaiters;

/// The shutdown phases the core broadcasts (defined in the leaf `phase`).
pub use crate::phase::{FORCE, GRACEFUL, RUNNING};

use crate::fields::checked_fields;
pub use crate::fields::Fields;

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

/// How the app answers a request, once, on the request's head channel.
pub enum Reply {
    /// A response head (for a WebSocket handshake: a denial).
    Response(Head),
    /// The WebSocket handshake is accepted; the protocol writes its answer.
    WsAccept(crate::ws::accept::Accept),
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
    /// WebSocket messages the app had taken when it last waited for the
    /// next one: it has answered them all.
    pub answered: AtomicU64,
    /// The app has asked for the body (gates `100 Continue`).
    pub body_wanted: AtomicBool,
    pub body_wake: Notify,
    /// When the app last sent an event that stays in Perl (SSE idle clock).
    pub touched: crate::sse::Touched,
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
            answered: AtomicU64::new(0),
            body_wanted: AtomicBool::new(false),
            body_wake: Notify::new(),
            touched: crate::sse::Touched::default(),
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
    head: Option<oneshot::Sender<Reply>>,
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
    /// Accepted, but the backlog was already at the high watermark: wait
    /// for a DRAIN record.
    Pending,
    /// The request is gone (finished, aborted or disconnected): a no-op.
    Gone,
}

/// Hashes request ids: the server counts them out itself (no client
/// chooses one), so a multiply that spreads them over the table's bits
/// does instead of SipHash, which was most of the cost of each lookup.
#[derive(Default, Clone, Copy)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys come here; anything else still hashes.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, id: u64) {
        // The table takes its buckets from the low bits, which ids counted
        // out one by one fill evenly as they are, and its tags from the
        // top seven, which a Fibonacci multiply spreads.
        self.0 = id ^ (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFE00_0000_0000_0000);
    }
}

pub struct ServerCore {
    pub cfg: Config,
    pub bridge: Bridge,
    reqs: Mutex<HashMap<u64, Slot, IdHash>>,
    next_id: AtomicU64,
    conns: AtomicUsize,
    shutdown: watch::Sender<u8>,
    /// Accepting resumes at this time (set after accept errors).
    accept_pause: Mutex<Option<tokio::time::Instant>>,
    /// Connections waiting for a request head (evicted at capacity).
    pub head_waiters: HeadWaiters,
    /// Sends held back while Perl works through a batch of records.
    pub batch: crate::batch::Batch<Out, Reply>,
    /// Perl scalars the connections read bodies from, given back once done
    /// with, for the Perl thread to free (see `held`).
    pub held: Arc<crate::held::Returns>,
}

impl ServerCore {
    pub fn new(cfg: Config) -> std::io::Result<ServerCore> {
        Ok(ServerCore {
            cfg,
            bridge: Bridge::new()?,
            reqs: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            conns: AtomicUsize::new(0),
            shutdown: watch::Sender::new(RUNNING),
            accept_pause: Mutex::new(None),
            head_waiters: HeadWaiters::default(),
            batch: crate::batch::Batch::default(),
            held: Arc::default(),
        })
    }

    fn reqs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot, IdHash>> {
        self.reqs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn connection_count(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Requests opened so far (a count that only grows).
    pub fn requests_opened(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
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
        oneshot::Receiver<Reply>,
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

    /// Perl has seen the end of a request (disconnect or response complete).
    pub fn forget(&self, id: u64) {
        if let Some(slot) = self.reqs().remove(&id) {
            slot.shared.finish();
        }
    }

    /// Takes the response head. A final head is held until the first body
    /// frame (see `Slot::held`); a 1xx goes out at once.
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
            return self.release(slot);
        }
        SendState::Ready
    }

    /// Accepts a WebSocket handshake with the app's extra fields and
    /// subprotocol; the connection's protocol writes the answer.
    pub fn ws_accept(
        &self,
        id: u64,
        subprotocol: Option<&[u8]>,
        raw: &[(&[u8], &[u8])],
    ) -> SendState {
        let mut raw = raw.to_vec();
        raw.extend(subprotocol.map(|sp| (&b"Sec-WebSocket-Protocol"[..], sp)));
        let fields = checked_fields(&self.bridge, &raw, true);
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return SendState::Gone;
        };
        if slot.held.is_some() {
            return SendState::Gone;
        }
        let Some(tx) = slot.head.take() else {
            return SendState::Gone;
        };
        // The access log shows the handshake's HTTP/1.1 status.
        if let Some(log) = slot.log.as_mut() {
            log.status = 101;
        }
        if tx.is_closed() {
            return SendState::Gone;
        }
        self.batch
            .head(tx, Reply::WsAccept(crate::ws::accept::Accept::new(fields)));
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
        if !fin {
            // Any body call, even an empty one (a flush), lets a held head go.
            self.release(slot);
            return (state, None);
        }
        // The end is queued before the head goes: a protocol woken by the
        // head sees the whole response (HTTP/2 then ends the stream on its
        // last DATA frame instead of an empty one after it).
        self.batch.body(&slot.body, Out::End);
        self.release(slot);
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
        let before = slot.shared.buffered.fetch_add(len, Ordering::SeqCst);
        if !fin && before + len >= self.cfg.high_watermark {
            // At the mark: a DRAIN record tells Perl when the backlog is
            // back at the low one, for a waiting send or for the transport
            // state's on_drain (which an app may wait on with no send).
            slot.shared.want_drain.store(true, Ordering::SeqCst);
            // As the reference decides: a write waits only when the backlog
            // it joins had already reached the mark. An app that sends
            // chunks of the mark's size then waits every other chunk, not
            // after each (each wait is a round trip through Perl).
            if before >= self.cfg.high_watermark {
                state = SendState::Pending;
            }
        }
        // A closed receiver means the connection dropped the body (HEAD, or
        // the connection ended); the disconnect path reports the latter.
        self.batch.body(&slot.body, out);
        state
    }

    /// Sends a held head to the connection, after the frames queued with
    /// it (the connection takes those frames with the head, in one write).
    fn release(&self, slot: &mut Slot) -> SendState {
        let Some(head) = slot.held.take() else {
            return SendState::Ready;
        };
        match slot.head.take() {
            Some(tx) if !tx.is_closed() => {
                self.batch.head(tx, Reply::Response(head));
                SendState::Ready
            }
            _ => SendState::Gone,
        }
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

    /// The app waits for its next WebSocket message, having taken `taken`
    /// so far: what it sent before is queued ahead of this news.
    pub fn ws_waiting(&self, id: u64, taken: u64) {
        // The answers to those messages go before a close frame this lets
        // the connection send.
        self.batch.deliver();
        if let Some(slot) = self.reqs().get(&id) {
            slot.shared.answered.store(taken, Ordering::SeqCst);
            slot.shared.body_wake.notify_one();
        }
    }

    /// Hands a stream setting (SSE) to the connection; a held head goes
    /// with it, since the stream must start at once.
    pub fn stream_control(&self, id: u64, out: Out) -> SendState {
        let mut reqs = self.reqs();
        let Some(slot) = reqs.get_mut(&id) else {
            return SendState::Gone;
        };
        if slot.body.is_closed() {
            return SendState::Gone;
        }
        self.batch.body(&slot.body, out);
        self.release(slot)
    }

    /// The app sent an event that Perl keeps for now (the SSE idle clock
    /// starts again; see `sse.rs`).
    pub fn touch(&self, id: u64) {
        if let Some(slot) = self.reqs().get(&id) {
            slot.shared.touched.touch();
        }
    }

    /// Hands a WebSocket control command (close, keepalive) to the connection.
    pub fn ws_control(&self, id: u64, out: Out) -> SendState {
        match self.reqs().get(&id) {
            Some(slot) if slot.head.is_none() && !slot.body.is_closed() => {
                self.batch.body(&slot.body, out);
                SendState::Ready
            }
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
        self.batch.body(&slot.body, Out::File(body));
        self.release(slot);
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
        self.batch.body(&slot.body, Out::Trailers(fields));
        self.release(&mut slot);
        self.batch.body(&slot.body, Out::End);
        slot.shared.finish();
        (
            SendState::Ready,
            slot.log.map(|l| l.format(&self.cfg.log_format)),
        )
    }

    /// Ends a request without a proper response: the connection is closed.
    pub fn abort(&self, id: u64) {
        if let Some(mut slot) = self.reqs().remove(&id) {
            self.batch.body(&slot.body, Out::Abort);
            // A started response keeps its head, as in the reference: the
            // client sees the status, then the connection closes.
            self.release(&mut slot);
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

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
