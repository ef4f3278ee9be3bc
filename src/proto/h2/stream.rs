//! One HTTP/2 stream as one PAGI request: its head becomes a
//! `RequestHead`, its DATA frames the request body (the client's window is
//! given back only as the app reads, so a slow app holds back its own
//! stream and no other), and the app's frames go out as HEADERS, DATA and
//! trailers, each DATA piece waiting for flow-control capacity so that the
//! app's `$send` feels the client's pace. An RFC 8441 stream accepted as a
//! WebSocket is handed to the same session HTTP/1.1 upgrades use.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::response;
use super::tunnel::{TunnelRead, TunnelWrite};
use crate::abi::level;
use crate::exchange::{BodyHint, Exchange, Replies, RequestHead, Scheme, Upgrade, Version};
use crate::net::peer::Peer;
use crate::server::{Head, Out, Reply, ServerCore, FORCE, RUNNING};
use crate::stream_io::{sleep_opt, Stop};
use crate::ws::accept;
use crate::ws::deflate::Agreed;
use crate::ws::handshake;
use crate::ws::session::{Session, Stream as WsStream};

/// What every stream of a connection shares.
pub(super) struct Ctx {
    pub(super) core: Arc<ServerCore>,
    pub(super) peer: Peer,
    /// The `server` header, made once per connection.
    pub(super) server: Option<http::HeaderValue>,
}

/// The head of a stream the server answers itself.
struct Refusal {
    status: u16,
    message: &'static str,
    /// A header field the answer carries (name, value).
    field: Option<(&'static str, &'static str)>,
}

/// The stream's request head as the seam's `RequestHead`. `ended`: the
/// client sent END_STREAM with its headers (no body).
fn request_head(
    req: &Request<RecvStream>,
    scheme: Scheme,
    ended: bool,
) -> Result<RequestHead, Refusal> {
    let websocket = req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if req.method() == Method::CONNECT && !websocket {
        return Err(Refusal {
            status: 501,
            message: "CONNECT method not supported",
            field: None,
        });
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = if path.is_empty() { "/" } else { path };
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(req.headers().len());
    // RFC 9113 8.2.3: cookie crumbs in several fields are one header.
    let mut cookie: Option<usize> = None;
    for (name, value) in req.headers() {
        if name == http::header::COOKIE {
            if let Some(i) = cookie {
                headers[i].1.extend_from_slice(b"; ");
                headers[i].1.extend_from_slice(value.as_bytes());
                continue;
            }
            cookie = Some(headers.len());
        }
        headers.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    let length = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = match length {
        _ if ended || websocket => BodyHint::None,
        Some(n) if n > 0 => BodyHint::Length(n),
        _ => BodyHint::Unknown,
    };
    // RFC 8441 section 5: Sec-WebSocket-Version as in RFC 6455 (no key).
    if websocket && !handshake::version_ok(&headers) {
        let r = handshake::WRONG_VERSION;
        return Err(Refusal {
            status: r.status,
            message: r.message,
            field: r.field,
        });
    }
    let expect_continue = !ended
        && req
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    Ok(RequestHead {
        method: req.method().as_str().to_string(),
        scheme,
        authority: req
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes().to_vec()),
        path: path.as_bytes().to_vec(),
        query: query.as_bytes().to_vec(),
        version: Version::Http2,
        headers,
        body,
        expect_continue,
        upgrade: websocket.then(|| Upgrade::WebSocket { key: Vec::new() }),
    })
}

/// Where the response side of the stream is.
enum Resp {
    /// No head sent yet.
    Waiting(SendResponse<Bytes>),
    /// Head sent; body, trailers or the end may follow.
    Open(SendStream<Bytes>),
    /// The stream ended on the wire (a bodyless response); the app's body
    /// frames are taken and dropped until its end.
    Closed,
}

/// Resolves when the client resets the stream (or the connection fails).
async fn client_reset(resp: &mut Resp) {
    poll_fn(|cx| match resp {
        Resp::Waiting(r) => r.poll_reset(cx).map(|_| ()),
        Resp::Open(s) => s.poll_reset(cx).map(|_| ()),
        Resp::Closed => Poll::Pending,
    })
    .await;
}

/// Writes `data` as DATA frames, each piece when the client's window has
/// room for it. `ex`: the app's bytes, counted off its backlog as they go.
async fn send_data(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    stall: Option<Duration>,
    ex: Option<&Exchange>,
) -> Result<(), Stop> {
    if data.is_empty() {
        if end {
            tx.send_data(data, true).map_err(|_| Stop::Closed)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let mut cap = tx.capacity();
        if cap == 0 {
            let wait = poll_fn(|cx| tx.poll_capacity(cx));
            cap = match stall {
                Some(d) => tokio::time::timeout(d, wait)
                    .await
                    .map_err(|_| Stop::WriteStalled)?,
                None => wait.await,
            }
            .and_then(Result::ok)
            .ok_or(Stop::Closed)?;
        }
        let piece = data.split_to(cap.min(data.len()));
        let len = piece.len();
        tx.send_data(piece, end && data.is_empty())
            .map_err(|_| Stop::Closed)?;
        if let Some(ex) = ex {
            ex.written(len);
        }
    }
    Ok(())
}

/// The app's next frame: one taken early, or the next queued.
async fn next_frame(ahead: &mut Option<Out>, rx: &mut UnboundedReceiver<Out>) -> Option<Out> {
    match ahead.take() {
        Some(f) => Some(f),
        None => rx.recv().await,
    }
}

/// One stream in progress.
struct Task {
    core: Arc<ServerCore>,
    server: Option<http::HeaderValue>,
    ex: Exchange,
    body: RecvStream,
    body_done: bool,
    /// Body bytes taken from the stream and not yet given back to the
    /// client's window.
    held: usize,
    received: u64,
    resp: Resp,
    is_head: bool,
    sse: Option<crate::sse::Stream>,
    /// The request is an SSE one (its disconnect reasons name writes).
    sse_scope: bool,
    /// Its idle clock (runs out only for an SSE request, see `crate::sse`).
    idle: crate::sse::IdleClock,
    sd: watch::Receiver<u8>,
    /// A frame taken early to see whether the one before it was the last.
    ahead: Option<Out>,
}

/// Serves one stream until its response is complete or it is reset.
pub(super) async fn serve(
    ctx: Arc<Ctx>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let core = ctx.core.clone();
    let ended = req.body().is_end_stream();
    let head = match request_head(&req, ctx.peer.scheme(), ended) {
        Ok(h) => h,
        Err(r) => {
            let (mut head, body) = response::plain(r.status, r.message, ctx.server.as_ref());
            if let Some((n, v)) = r.field {
                head.headers_mut()
                    .insert(n, http::HeaderValue::from_static(v));
            }
            if let Ok(mut tx) = respond.send_response(head, false) {
                let _ = tx.send_data(body, true);
            }
            return;
        }
    };
    if let Some(p) = core.cfg.panic_path.as_deref() {
        if head.path == p.as_bytes() {
            panic!("test panic requested for {p}");
        }
    }
    let max = core.cfg.max_body_size;
    if let BodyHint::Length(n) = head.body {
        if max > 0 && n > max {
            answer(&mut respond, 413, "Payload Too Large", ctx.server.as_ref());
            return;
        }
    }
    let (ex, replies) = Exchange::open(&core, &head, &ctx.peer);
    let sse_scope = head.is_sse();
    let idle = sse_scope.then_some(core.cfg.sse_idle_timeout).flatten();
    let task = Task {
        core,
        server: ctx.server.clone(),
        ex,
        body: req.into_body(),
        body_done: head.body == BodyHint::None,
        held: 0,
        received: 0,
        resp: Resp::Waiting(respond),
        is_head: head.method == "HEAD",
        sse: None,
        sse_scope,
        idle: crate::sse::IdleClock::new(idle),
        sd: ctx.core.shutdown_watch(),
        ahead: None,
    };
    // permessage-deflate, as agreed should the app accept the WebSocket.
    let deflate = head
        .is_websocket()
        .then(|| accept::agree(task.core.cfg.ws_compression, &head.headers))
        .flatten();
    task.run(replies, head.expect_continue, head.is_websocket(), deflate)
        .await;
}

/// A response the server makes itself, ending the stream.
fn answer(
    respond: &mut SendResponse<Bytes>,
    status: u16,
    message: &str,
    server: Option<&http::HeaderValue>,
) {
    let (head, body) = response::plain(status, message, server);
    if let Ok(mut tx) = respond.send_response(head, false) {
        let _ = tx.send_data(body, true);
    }
}

impl Task {
    async fn run(
        mut self,
        replies: Replies,
        mut gated: bool,
        websocket: bool,
        deflate: Option<Agreed>,
    ) {
        let Replies {
            head: mut head_rx,
            out: mut out_rx,
        } = replies;
        let core = self.core.clone();
        let stall = core.cfg.request_timeout;
        let mut last_io = Instant::now();
        let mut upgraded: Option<SendStream<Bytes>> = None;
        let outcome: Result<(), Stop> = loop {
            self.give_back();
            if self.sse.is_some() && core.phase() != RUNNING {
                break Err(self.sse_going_away());
            }
            if gated && self.ex.body_wanted() {
                gated = false;
                if let Resp::Waiting(r) = &mut self.resp {
                    let mut go = Response::new(());
                    *go.status_mut() = http::StatusCode::CONTINUE;
                    let _ = r.send_informational(go);
                }
            }
            let want_body =
                !self.body_done && !gated && self.ex.window_open() && !self.ex.finished();
            let waiting = matches!(self.resp, Resp::Waiting(_));
            // A started SSE stream may rightly be quiet for long: it has
            // its own idle clock, and each write still has the stall limit.
            let deadline = stall.filter(|_| self.sse.is_none()).map(|d| last_io + d);
            tokio::select! {
                d = self.body.data(), if want_body => match d {
                    Some(Ok(chunk)) => {
                        last_io = Instant::now();
                        if let Err(s) = self.deliver(&chunk) {
                            break Err(s);
                        }
                    }
                    None => {
                        self.body_done = true;
                        self.ex.body(&[], false);
                    }
                    Some(Err(_)) => break Err(Stop::Closed),
                },
                // The app read some body (its window goes back to the
                // client at the top of the loop), or asked for it.
                _ = self.ex.wake(), if !self.body_done || self.held > 0 => {}
                h = &mut head_rx, if waiting => match h {
                    Ok(Reply::Response(h)) => match self.start(h, &mut out_rx).await {
                        Ok(true) => break Ok(()),
                        Ok(false) => last_io = Instant::now(),
                        Err(s) => break Err(s),
                    },
                    Ok(Reply::WsAccept(a)) => {
                        // Perl accepts only requests it saw as WebSocket.
                        if !websocket {
                            break Err(Stop::Closed);
                        }
                        match self.accept(&a.h2_fields(deflate.as_ref())) {
                            Some(tx) => {
                                upgraded = Some(tx);
                                break Ok(());
                            }
                            None => break Err(Stop::Closed),
                        }
                    }
                    Err(_) => break Err(Stop::Closed),
                },
                f = next_frame(&mut self.ahead, &mut out_rx), if !waiting => {
                    let Some(f) = f else { break Err(Stop::Closed) };
                    self.idle.reset();
                    match self.frame(f, &mut out_rx).await {
                        Ok(true) => break Ok(()),
                        Ok(false) => last_io = Instant::now(),
                        Err(s) => break Err(s),
                    }
                },
                () = client_reset(&mut self.resp) => break Err(Stop::Closed),
                _ = sleep_opt(self.sse.as_ref().and_then(crate::sse::Stream::due)) => {
                    if let Err(s) = self.sse_keepalive().await {
                        break Err(s);
                    }
                },
                _ = sleep_opt(self.idle.deadline(self.ex.touched())) => {
                    if self.idle.expired(self.ex.touched(), Instant::now()) {
                        break Err(self.sse_idle());
                    }
                },
                _ = sleep_opt(deadline) => {
                    core.bridge.log(level::WARN, &format!(
                        "Request stall timeout ({}s) - resetting HTTP/2 stream",
                        stall.map_or(0.0, |d| d.as_secs_f64())
                    ));
                    break Err(Stop::Stalled);
                },
                r = self.sd.changed() => if r.is_err() || *self.sd.borrow() == FORCE {
                    break Err(Stop::Shutdown);
                },
            }
        };
        let Task {
            mut ex,
            mut body,
            held,
            resp,
            sd,
            sse_scope,
            ..
        } = self;
        let _ = body.flow_control().release_capacity(held);
        match outcome {
            Ok(()) => {
                if let Some(tx) = upgraded {
                    let stream = WsStream {
                        rd: TunnelRead::new(body),
                        wr: TunnelWrite::new(tx),
                        buf: BytesMut::new(),
                        out: Vec::new(),
                        deflate,
                    };
                    Session::new(ex, out_rx, sd, stream).run().await;
                } else {
                    ex.set_reason("client_closed");
                }
            }
            Err(stop) => {
                ex.set_reason(if sse_scope {
                    stop.sse_reason()
                } else {
                    stop.reason()
                });
                match resp {
                    Resp::Open(mut tx) => tx.send_reset(h2::Reason::CANCEL),
                    Resp::Waiting(mut r) => r.send_reset(h2::Reason::CANCEL),
                    Resp::Closed => {}
                }
            }
        }
    }

    /// Gives the client's window back for what the app has read (and for
    /// the final piece, which is never held against the app).
    fn give_back(&mut self) {
        let unread = self.ex.unconsumed();
        if self.held > unread {
            let _ = self
                .body
                .flow_control()
                .release_capacity(self.held - unread);
            self.held = unread;
        }
    }

    /// Hands a DATA frame's bytes to the app, within `max_body_size`.
    fn deliver(&mut self, chunk: &Bytes) -> Result<(), Stop> {
        self.held += chunk.len();
        self.received += chunk.len() as u64;
        let max = self.core.cfg.max_body_size;
        if max > 0 && self.received > max {
            if let Resp::Waiting(r) = &mut self.resp {
                answer(r, 413, "Payload Too Large", self.server.as_ref());
                self.resp = Resp::Closed;
            }
            return Err(Stop::Closed);
        }
        let more = !self.body.is_end_stream();
        self.body_done = !more;
        self.ex.body(chunk, more);
        Ok(())
    }

    /// Sends the app's response head, with what it queued behind it: a
    /// response that is already complete goes out in as few frames as
    /// possible. `Ok(true)`: the response is complete.
    async fn start(&mut self, h: Head, rx: &mut UnboundedReceiver<Out>) -> Result<bool, Stop> {
        let Resp::Waiting(mut respond) = std::mem::replace(&mut self.resp, Resp::Closed) else {
            return Err(Stop::Closed);
        };
        self.idle.reset();
        let bodyless = response::bodyless(h.status, self.is_head);
        let head = response::head(&h, self.server.as_ref());
        let first = rx.try_recv().ok();
        let ends_now = bodyless || matches!(first, Some(Out::End));
        let tx = respond
            .send_response(head, ends_now)
            .map_err(|_| Stop::Closed)?;
        if !ends_now {
            self.resp = Resp::Open(tx);
        }
        match first {
            Some(f) => self.frame(f, rx).await,
            None => Ok(false),
        }
    }

    /// Accepts an RFC 8441 WebSocket: `200` with the app's fields.
    fn accept(&mut self, fields: &crate::fields::Fields) -> Option<SendStream<Bytes>> {
        let Resp::Waiting(mut respond) = std::mem::replace(&mut self.resp, Resp::Closed) else {
            return None;
        };
        let h = Head {
            status: 200,
            headers: fields.clone(),
        };
        let head = response::head(&h, self.server.as_ref());
        respond.send_response(head, false).ok()
    }

    /// Handles one frame from the app. `Ok(true)`: the response is complete.
    async fn frame(&mut self, f: Out, rx: &mut UnboundedReceiver<Out>) -> Result<bool, Stop> {
        let (stall, idle) = self.idle.write_limit(self.core.cfg.request_timeout);
        match f {
            Out::Data(d) => {
                let Resp::Open(tx) = &mut self.resp else {
                    self.ex.written(d.len());
                    return Ok(false);
                };
                // END_STREAM rides on the last DATA frame when the app's
                // end is already queued.
                if self.ahead.is_none() {
                    self.ahead = rx.try_recv().ok();
                }
                let last = matches!(self.ahead, Some(Out::End));
                match send_data(tx, d, last, stall, Some(&self.ex)).await {
                    Err(Stop::WriteStalled) if idle => return Err(self.sse_idle()),
                    r => r?,
                }
                self.idle.reset();
                if last {
                    self.ahead = None;
                    self.resp = Resp::Closed;
                    return Ok(true);
                }
            }
            Out::File(body) => self.send_file(body).await?,
            Out::Trailers(t) => {
                if let Resp::Open(tx) = &mut self.resp {
                    tx.send_trailers(response::trailers(&t))
                        .map_err(|_| Stop::Closed)?;
                    self.resp = Resp::Closed;
                }
            }
            Out::End => {
                if let Resp::Open(tx) = &mut self.resp {
                    tx.send_data(Bytes::new(), true).map_err(|_| Stop::Closed)?;
                }
                self.resp = Resp::Closed;
                return Ok(true);
            }
            Out::Abort => {
                if let Resp::Open(tx) = &mut self.resp {
                    tx.send_reset(h2::Reason::INTERNAL_ERROR);
                }
                self.resp = Resp::Closed;
                return Err(Stop::Closed);
            }
            Out::Sse(s) => match self.sse.as_mut() {
                Some(st) => st.configure(s),
                None => self.sse = Some(crate::sse::Stream::new(s)),
            },
            // WebSocket frames only follow an accept.
            Out::WsMessage { .. } | Out::WsClose { .. } | Out::WsKeepalive { .. } => {}
        }
        Ok(false)
    }

    /// Streams a file body, read here in pieces (it never passes through Perl).
    async fn send_file(&mut self, mut body: crate::file_body::FileBody) -> Result<(), Stop> {
        let stall = self.core.cfg.request_timeout;
        let Resp::Open(tx) = &mut self.resp else {
            return Ok(());
        };
        loop {
            let piece = Vec::with_capacity(crate::file_body::PIECE);
            match body.next_piece(piece, &self.core.bridge).await {
                Some(p) if p.is_empty() => return Ok(()),
                Some(p) => send_data(tx, Bytes::from(p), false, stall, None).await?,
                None => return Err(Stop::Closed),
            }
        }
    }

    /// Writes a due SSE keepalive comment (the server's own traffic: not
    /// counted against the app's watermarks).
    async fn sse_keepalive(&mut self) -> Result<(), Stop> {
        let (stall, idle) = self.idle.write_limit(self.core.cfg.request_timeout);
        let (Resp::Open(tx), Some(st)) = (&mut self.resp, self.sse.as_mut()) else {
            return Ok(());
        };
        let Some(frame) = st.tick(Instant::now()) else {
            return Ok(());
        };
        match send_data(tx, frame, false, stall, None).await {
            Err(Stop::WriteStalled) if idle => Err(self.sse_idle()),
            r => r,
        }
    }

    /// The request's idle clock ran out (see `crate::sse`): the stream is
    /// reset, so that the client sees it cut off rather than ended.
    fn sse_idle(&self) -> Stop {
        let secs = self.idle.limit().map_or(0.0, |d| d.as_secs_f64());
        self.core.bridge.log(
            level::WARN,
            &format!("SSE idle timeout ({secs}s) - resetting HTTP/2 stream"),
        );
        Stop::Idle
    }

    /// The server is shutting down: the SSE stream ends cleanly and the
    /// app sees a disconnect with reason `server_shutdown`.
    fn sse_going_away(&mut self) -> Stop {
        self.sse = None;
        if let Resp::Open(tx) = &mut self.resp {
            let _ = tx.send_data(Bytes::new(), true);
        }
        self.resp = Resp::Closed;
        Stop::Shutdown
    }
}
