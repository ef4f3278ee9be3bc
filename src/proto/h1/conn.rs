//! HTTP/1.x connections: request heads and bodies are read here and handed
//! to Perl as records; the response Perl sends back is framed and written.
//!
//! This is not hyper's HTTP/1 server: hyper answers 400 itself for an
//! unknown Transfer-Encoding (the reference answers 501), sends trailers
//! only when declared up front and requested with `TE: trailers`, and cannot
//! write header names in the app's case.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::abi::level;
use crate::exchange::{Exchange, Replies, Upgrade};
use crate::net::peer::Peer;
use crate::net::stream::{Split, ZeroCopy};
use crate::proto::h1::body::BodyIn;
use crate::proto::h1::encode::{self, ReqInfo, Writer};
use crate::proto::h1::parse::{self, Head, Reject, PAYLOAD_TOO_LARGE, REQUEST_TIMEOUT};
use crate::server::{Reply, ServerCore, FORCE, RUNNING};
use crate::slow::{evicted, BodyClock, HeadWait, EVICT_GRACE_PARTIAL};
use crate::stream_io::{fill, fill_lazy, sleep_opt, write_out, Stop};
use crate::ws::accept;
use crate::ws::session::{Session, Stream as WsStream};

/// Bytes read ahead (pipelined requests) while a response is in progress.
const READ_AHEAD: usize = 64 * 1024;
/// A body of at most this many bytes (Content-Length) is read, as far as it
/// has already arrived, before its request goes to Perl: the app then gets
/// it in one piece, with the request (see `gather`).
const GATHER: u64 = 256 * 1024;
/// After the server closes its side, input still arriving is read and
/// dropped for this long (at most `LINGER_BYTES`) instead of being answered
/// with a reset that could destroy the response before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// At a graceful shutdown, how long a connection that has not sent its
/// first request yet may still send it: the kernel accepted it before we
/// stopped, so its client rightly expects an answer. (An idle keep-alive
/// connection is closed at once; its client may retry, RFC 9112 9.3.1.)
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Runs a future, turning a panic into an error message instead of unwinding.
pub struct CatchUnwind(pub Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<(), String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p.map(Ok),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

thread_local! {
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Replaces Rust's default panic printing (straight to stderr, past Perl's
/// `warn` and `quiet`): the location is kept for `panic_message`, and every
/// catch site logs through the bridge or croaks.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANIC_AT.with(|p| *p.borrow_mut() = at);
        }));
    });
}

pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    };
    let at = PANIC_AT.with(|p| std::mem::take(&mut *p.borrow_mut()));
    format!("{msg}{at}")
}

/// Capacity reserved for a response head, taken when one is written: `out`
/// has none while the connection waits for a request.
const HEAD_RESERVE: usize = 1024;

/// Runs HTTP/1.x on an admitted connection until it closes. `pre`: bytes
/// already read from it (while telling h2c from HTTP/1.x).
///
/// A connection waiting for its next request costs little: it holds no
/// read or write buffer then (see `next_head`), and the state of a request
/// in progress (`exchange`) is boxed, so only a request being served pays
/// for it. (Not an `async fn`: its arguments would stay in the future
/// beside the `Conn` made of them, and `run` takes `&mut self` for the
/// same reason.)
pub fn serve<S: Split>(
    core: Arc<ServerCore>,
    stream: S,
    peer: Peer,
    pre: BytesMut,
) -> impl Future<Output = ()> + Send {
    let (rd, wr) = stream.halves();
    let mut conn = Conn {
        sd: core.shutdown_watch(),
        core,
        peer,
        rd,
        wr,
        buf: pre,
        out: Vec::new(),
        unwritten: 0,
        sse: None,
        idle: crate::sse::IdleClock::new(None),
        since: Instant::now(),
        served: false,
        eof: false,
        linger: false,
    };
    async move { conn.run().await }
}

pub(crate) struct Conn<R, W> {
    pub(crate) core: Arc<ServerCore>,
    peer: Peer,
    pub(crate) rd: R,
    pub(crate) wr: W,
    pub(crate) buf: BytesMut,
    pub(crate) out: Vec<u8>,
    /// App bytes framed into `out` and not yet written: they still count
    /// against the watermarks.
    pub(crate) unwritten: usize,
    pub(crate) sd: watch::Receiver<u8>,
    /// The response in progress is an SSE stream (see `sse.rs`).
    pub(crate) sse: Option<crate::sse::Stream>,
    /// The idle clock of the request in progress (never runs out unless it
    /// is an SSE request and `sse_idle_timeout` is on).
    pub(crate) idle: crate::sse::IdleClock,
    /// When the wait for the next request head began (the connection
    /// opened, or the previous response ended).
    since: Instant,
    /// A request has been answered on this connection.
    served: bool,
    /// The client has ended its side: nothing more will be read.
    eof: bool,
    /// Close by lingering (we answered and close; the client may still send).
    linger: bool,
}

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + ZeroCopy + Unpin + Send> Conn<R, W> {
    async fn run(&mut self) {
        let mut refused = None;
        loop {
            // Nothing is awaited while the result of `next_head` is alive:
            // a `Head` kept here would take room in this future while it
            // waits for the next request.
            let head = match self.next_head().await {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(r) => {
                    refused = Some(r);
                    break;
                }
            };
            let keep = Box::pin(self.exchange(head)).await;
            self.served = true;
            if !keep || self.eof || self.core.phase() != RUNNING {
                break;
            }
            self.since = Instant::now();
        }
        if let Some(r) = refused {
            // Boxed, like `exchange`: only a refused head pays for its answer.
            Box::pin(self.refuse(r, false)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.shutdown()).await;
        if self.linger && !self.eof {
            self.linger().await;
        }
    }

    /// Reads and drops what the client still sends after our close, briefly.
    async fn linger(&mut self) {
        let end = Instant::now() + LINGER;
        let mut left = LINGER_BYTES;
        while left > 0 {
            self.buf.clear();
            tokio::select! {
                r = fill(&mut self.rd, &mut self.buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                },
                _ = tokio::time::sleep_until(end) => break,
            }
        }
    }

    /// Waits for the next request head. `Ok(None)`: the connection ends
    /// quietly (closed, idle too long, evicted at capacity, or the server is
    /// shutting down).
    async fn next_head(&mut self) -> Result<Option<Head>, Reject> {
        let core = self.core.clone();
        // The whole head must arrive within `timeout` of `since`: bytes
        // trickling in do not move this deadline.
        let since = self.since;
        let deadline = core.cfg.idle_timeout.map(|d| since + d);
        // Only a connection still waiting past the shortest eviction grace
        // can be evicted, so it joins the registry then: a prompt keep-alive
        // request never takes the registry's lock.
        let register_at = since + EVICT_GRACE_PARTIAL;
        let mut wait: Option<HeadWait<'_>> = None;
        loop {
            if !self.buf.is_empty() {
                if let Some((h, n)) = parse::parse(&self.buf, &core.cfg.limits)? {
                    let _ = self.buf.split_to(n);
                    return Ok(Some(h));
                }
            } else if core.phase() != RUNNING
                && (self.served || Instant::now() >= since + FIRST_REQUEST_GRACE)
            {
                return Ok(None);
            } else {
                self.release_buffers();
            }
            if wait.is_none() && Instant::now() >= register_at {
                wait = Some(core.head_waiters.enter(since));
            }
            if let (Some(w), false) = (wait.as_mut(), self.buf.is_empty()) {
                w.partial();
            }
            let grace = (self.buf.is_empty() && !self.served && core.phase() != RUNNING)
                .then_some(since + FIRST_REQUEST_GRACE);
            tokio::select! {
                r = read_more(&mut self.rd, &mut self.buf, true) => match r {
                    Ok(0) | Err(_) => return Ok(None),
                    Ok(_) => {}
                },
                // One timer: the registration time first, then the deadline,
                // or sooner the end of a first request's grace in a graceful
                // shutdown (checked at the top of the loop).
                _ = sleep_opt(earliest(next_wake(deadline, register_at, wait.is_none()), grace)) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return if self.buf.is_empty() { Ok(None) } else { Err(REQUEST_TIMEOUT) };
                    }
                },
                _ = evicted(&mut wait) => return Ok(None),
                r = self.sd.changed() => {
                    if r.is_err() || *self.sd.borrow() == FORCE {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Reads what has already arrived of a `len`-byte body, without
    /// waiting: nothing is there yet, the end of the stream or an error
    /// stop it, and the body loop of `exchange` sees to those.
    fn gather(&mut self, len: usize) {
        use futures_util::FutureExt;
        self.buf.reserve(len.saturating_sub(self.buf.len()));
        while self.buf.len() < len {
            match fill(&mut self.rd, &mut self.buf).now_or_never() {
                Some(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Serves one request; returns whether the connection may be reused.
    async fn exchange(&mut self, head: Head) -> bool {
        let core = self.core.clone();
        let (head, h1) = head.into_request(self.peer.scheme());
        if let Some(p) = core.cfg.panic_path.as_deref() {
            if head.path == p.as_bytes() {
                panic!("test panic requested for {p}");
            }
        }
        let max_body = core.cfg.max_body_size;
        if max_body > 0 && h1.content_length.is_some_and(|n| n > max_body) {
            self.refuse(PAYLOAD_TOO_LARGE, false).await;
            return false;
        }
        if let (parse::Framing::Length(n @ 1..=GATHER), false) = (h1.framing, head.expect_continue)
        {
            self.gather(n as usize);
        }
        let (mut ex, replies) = Exchange::open(&core, &head, &self.peer);
        let Replies {
            head: mut head_rx,
            out: mut body_rx,
        } = replies;
        // A WebSocket handshake is answered by the app: an accept switches
        // the connection over; any other response ends it.
        let ws_key = head
            .upgrade
            .as_ref()
            .map(|Upgrade::WebSocket { key }| key.as_slice())
            .map(|key| (key, accept::agree(core.cfg.ws_compression, &head.headers)));
        let mut upgraded = false;
        // An SSE request's connection closes after its response, whether a
        // stream or a declining answer (as the reference does).
        let sse_scope = head.is_sse();
        let client_keeps = h1.keep_alive;
        let req = ReqInfo {
            version: head.version.code(),
            is_head: head.method == "HEAD",
            keep_alive: h1.keep_alive && ws_key.is_none() && !sse_scope,
        };
        let mut body = BodyIn::new(h1.framing);
        let mut received: u64 = 0;
        // With Expect: 100-continue the client waits for a go-ahead, given
        // when the app first asks for the body.
        let mut gated = head.expect_continue && !body.is_done();
        let stall = core.cfg.request_timeout;
        let mut last_io = Instant::now();
        let mut clock = BodyClock::new(stall, core.cfg.min_body_rate, last_io);
        let mut writer: Option<Writer> = None;
        self.sse = None;
        self.idle =
            crate::sse::IdleClock::new(sse_scope.then_some(core.cfg.sse_idle_timeout).flatten());

        let outcome: Result<(), Stop> = 'req: loop {
            // A graceful shutdown ends an SSE stream at once (see sse.rs).
            if self.sse.is_some() && core.phase() != RUNNING {
                break Err(self.sse_going_away(writer.as_mut(), &ex).await);
            }
            // Hand over what body is already buffered, within the window.
            while !gated && !body.is_done() && ex.window_open() && !ex.finished() {
                match body.take(&mut self.buf) {
                    Ok(Some((data, more))) => {
                        received += data.len() as u64;
                        if max_body > 0 && received > max_body {
                            break 'req Err(self.refuse(PAYLOAD_TOO_LARGE, writer.is_some()).await);
                        }
                        if let Some(c) = clock.as_mut() {
                            c.received(data.len());
                        }
                        ex.body(&data, more);
                    }
                    Ok(None) => break,
                    Err(r) => break 'req Err(self.refuse(r, writer.is_some()).await),
                }
            }
            if gated && ex.body_wanted() {
                gated = false;
                if writer.is_none() {
                    self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    if let Err(s) =
                        write_out(&mut self.wr, &mut self.out, stall, &mut self.sd).await
                    {
                        break Err(s);
                    }
                }
                continue;
            }
            let body_blocked = !body.is_done() && (gated || !ex.window_open());
            let want_read = !self.eof
                && if body.is_done() {
                    self.buf.len() < READ_AHEAD // watch for the client going away
                } else {
                    !body_blocked
                };
            // A started SSE stream may rightly be quiet for long: it has
            // its own idle clock, and each write still has the stall limit.
            let deadline = stall.filter(|_| self.sse.is_none()).map(|d| last_io + d);
            let too_slow = clock.as_mut().and_then(|c| {
                c.reading(want_read && !body.is_done(), Instant::now());
                c.deadline()
            });
            tokio::select! {
                // With the body all in and nothing buffered, this read only
                // watches for the client going away (or pipelining): it
                // takes no buffer until bytes come.
                r = read_more(&mut self.rd, &mut self.buf, body.is_done()), if want_read => match r {
                    // A half-close after a complete request: the client
                    // still reads, so the response goes out, then we close.
                    Ok(0) if body.is_done() => {
                        self.eof = true;
                        ex.eof();
                    }
                    Ok(0) | Err(_) => break Err(Stop::Closed),
                    Ok(_) => last_io = Instant::now(),
                },
                _ = ex.wake(), if body_blocked => {}
                h = &mut head_rx, if writer.is_none() => match h {
                    // HTTP/1.1 answers an accepted handshake with a 101
                    // that switches the connection over to the session.
                    Ok(Reply::WsAccept(a)) => {
                        // Perl accepts only requests it saw as WebSocket.
                        let Some((key, deflate)) = &ws_key else { break Err(Stop::Closed) };
                        a.write_h1(&mut self.out, key, deflate.as_ref());
                        upgraded = true;
                        break Ok(());
                    }
                    Ok(Reply::Response(h)) => {
                        self.idle.reset();
                        let closing = core.phase() != RUNNING || self.eof;
                        self.out.reserve(HEAD_RESERVE);
                        writer = Some(encode::write_head(&mut self.out, &h, &req, &core.cfg.server_header, closing));
                        // Frames already queued go out with the head.
                        match self.pump(&mut body_rx, writer.as_mut(), &ex).await {
                            Ok(true) => break Ok(()),
                            Ok(false) => last_io = Instant::now(),
                            Err(s) => break Err(s),
                        }
                    }
                    // Perl dropped the request without a response.
                    Err(_) => break Err(Stop::Closed),
                },
                f = body_rx.recv(), if writer.is_some() => {
                    let Some(f) = f else { break Err(Stop::Closed) };
                    self.idle.reset();
                    match self.frame(f, writer.as_mut(), &ex).await {
                        Ok(false) => {}
                        Ok(true) => break Ok(()),
                        Err(s) => break Err(s),
                    }
                    match self.pump(&mut body_rx, writer.as_mut(), &ex).await {
                        Ok(true) => break Ok(()),
                        Ok(false) => last_io = Instant::now(),
                        Err(s) => break Err(s),
                    }
                },
                _ = sleep_opt(self.sse.as_ref().and_then(crate::sse::Stream::due)) => {
                    match self.sse_keepalive(writer.as_mut(), &ex).await {
                        Ok(()) => last_io = Instant::now(),
                        Err(s) => break Err(s),
                    }
                },
                _ = sleep_opt(self.idle.deadline(ex.touched())) => {
                    if self.idle.expired(ex.touched(), Instant::now()) {
                        break Err(self.sse_idle());
                    }
                },
                _ = sleep_opt(deadline) => {
                    core.bridge.log(level::WARN, &format!(
                        "Request stall timeout ({}s) - closing connection",
                        stall.map_or(0.0, |d| d.as_secs_f64())
                    ));
                    break Err(Stop::Stalled);
                },
                _ = sleep_opt(too_slow) => {
                    core.bridge.log(level::WARN, &format!(
                        "Request body too slow (under {} bytes/s after {}s) - closing connection",
                        clock.as_ref().map_or(0, BodyClock::rate),
                        stall.map_or(0.0, |d| d.as_secs_f64())
                    ));
                    break Err(Stop::Stalled);
                },
                r = self.sd.changed() => if r.is_err() || *self.sd.borrow() == FORCE {
                    break Err(Stop::Shutdown);
                },
            }
        };
        match outcome {
            Err(stop) => {
                ex.set_reason(if sse_scope {
                    stop.sse_reason()
                } else {
                    stop.reason()
                });
                false
            }
            Ok(()) if upgraded => {
                // The 101 is still in `out`; frames that came with the
                // handshake are in `buf`.
                let stream = WsStream {
                    rd: &mut self.rd,
                    wr: &mut self.wr,
                    buf: std::mem::take(&mut self.buf),
                    out: std::mem::take(&mut self.out),
                    deflate: ws_key.and_then(|(_, d)| d),
                };
                // Dropping the exchange with the session reports the end
                // unless the session or the app already did.
                Session::new(ex, body_rx, self.sd.clone(), stream)
                    .run()
                    .await;
                // What the client still sends (its answer to our close
                // frame) is read and dropped before the socket closes: a
                // reset could destroy our last frames before it read them.
                self.linger = true;
                false
            }
            Ok(()) => {
                ex.set_reason("client_closed");
                let Some(w) = writer else { return false };
                // A body the app left unread can be skipped if it is all here.
                while let Ok(Some(_)) = body.take(&mut self.buf) {}
                let keep = w.keep_alive && body.is_done() && !self.eof;
                // A client that asked for the close sends nothing more, so
                // there is nothing to linger for once its request is read.
                let asked = !client_keeps && body.is_done() && self.buf.is_empty();
                self.linger = !keep && !asked;
                keep
            }
        }
    }

    /// Gives back the read and write buffers while nothing is in them: a
    /// connection waiting for its next request holds none (after a large
    /// request they may be large), and `read_more` reads into the stack
    /// until bytes come.
    fn release_buffers(&mut self) {
        // An empty `buf` may still hold the allocation its last bytes were
        // split from, with no capacity left: replaced all the same.
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    /// A refused request: answered (head errors, oversized or bad bodies)
    /// unless a response has started; the connection closes either way.
    async fn refuse(&mut self, r: Reject, started: bool) -> Stop {
        // A client too slow to send its head is not waited for any longer.
        self.linger = r != REQUEST_TIMEOUT;
        if !started {
            self.out =
                encode::error_response(r.status, r.message, &self.core.cfg.server_header, r.field);
            let _ = write_out(
                &mut self.wr,
                &mut self.out,
                Some(Duration::from_secs(5)),
                &mut self.sd,
            )
            .await;
        }
        Stop::Closed
    }
}

/// Reads more from the client. Between requests (`between`) with nothing
/// buffered, without taking a buffer until bytes come (`fill_lazy`);
/// otherwise (part of a head is in, or a body is being read) straight into
/// `buf` with room to spare.
async fn read_more<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    between: bool,
) -> std::io::Result<usize> {
    if between && buf.is_empty() {
        fill_lazy(rd, buf).await
    } else {
        fill(rd, buf).await
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When a connection waiting for its head next has something to do: join
/// the eviction registry (while not in it), or give up at the deadline.
fn next_wake(
    deadline: Option<Instant>,
    register_at: Instant,
    unregistered: bool,
) -> Option<Instant> {
    match (deadline, unregistered) {
        (Some(d), true) => Some(d.min(register_at)),
        (None, true) => Some(register_at),
        (d, false) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

    fn conn(stream: DuplexStream) -> Conn<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>> {
        let cfg = crate::config::Config::parse("listen=tcp:127.0.0.1:0").expect("config");
        let core = Arc::new(ServerCore::new(cfg).expect("core"));
        let (rd, wr) = tokio::io::split(stream);
        Conn {
            sd: core.shutdown_watch(),
            core,
            peer: Peer::Unix {
                path: "test".into(),
            },
            rd,
            wr,
            buf: BytesMut::new(),
            out: Vec::new(),
            unwritten: 0,
            sse: None,
            idle: crate::sse::IdleClock::new(None),
            since: Instant::now(),
            served: true,
            eof: false,
            linger: false,
        }
    }

    #[test]
    fn a_connection_waiting_for_a_request_holds_no_buffer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut c = conn(server);
            // As after a large request: both buffers grown, both empty.
            c.buf = BytesMut::with_capacity(1 << 20);
            c.out = Vec::with_capacity(1 << 20);
            let waited = tokio::time::timeout(Duration::from_millis(20), c.next_head()).await;
            assert!(waited.is_err(), "nothing was sent");
            assert_eq!(c.buf.capacity(), 0, "read buffer given back");
            assert_eq!(c.out.capacity(), 0, "write buffer given back");

            // Pipelined requests: the first is taken, the second stays
            // buffered (not given back) and is taken without a read.
            client
                .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let a = c.next_head().await.expect("a head").expect("a request");
            assert_eq!(a.raw_path, b"/a");
            assert!(!c.buf.is_empty());
            assert!(c.buf.capacity() <= crate::stream_io::LAZY_READ);
            let b = c.next_head().await.expect("a head").expect("a request");
            assert_eq!(b.raw_path, b"/b");
            assert!(c.buf.is_empty());

            // A head in pieces is put together.
            client
                .write_all(b"GET /c HTTP/1.1\r\nHo")
                .await
                .expect("write");
            let waited = tokio::time::timeout(Duration::from_millis(20), c.next_head()).await;
            assert!(waited.is_err(), "half a head");
            client.write_all(b"st: x\r\n\r\n").await.expect("write");
            let h = c.next_head().await.expect("a head").expect("a request");
            assert_eq!(h.raw_path, b"/c");

            // The client going away ends the wait quietly.
            drop(client);
            assert!(c.next_head().await.expect("no error").is_none());
        });
    }
}
