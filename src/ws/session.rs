//! A WebSocket session: from the accepted handshake until either side
//! closes. It runs over any byte stream, so the carrying protocol (an
//! HTTP/1.1 upgrade or an RFC 8441 stream on HTTP/2) only hands over the
//! stream once the handshake is answered.
//!
//! PAGI fixes what the session must do: the close code sent for each
//! violation and the disconnect reason the app sees, pings driven by
//! `websocket.keepalive`, and outgoing bytes counted against the write
//! watermarks until the stream takes them. A violation that arrives right
//! behind valid messages is answered once the app has answered those
//! messages (within `ANSWER_GRACE`), so what it sent for them reaches the
//! client before the close frame. With permessage-deflate agreed, the
//! app's messages go out compressed.

use std::ops::ControlFlow;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::codec::{close_frame, frame, frame_rsv1, Event, Fail, QUEUE_FULL, TOO_BIG};
use super::deflate::{Agreed, Compressor};
use super::reader::Reader;
use super::timers::{Due, Timers};
use crate::abi::level;
use crate::exchange::Exchange;
use crate::server::{Out, RUNNING};
use crate::stream_io::{fill, sleep_opt, write_out, Stop};

/// Buffer capacity kept between messages; one large message's is given back.
const KEEP_CAPACITY: usize = 1 << 16;
/// How long the close frame for a client's violation waits for the app to
/// answer the messages delivered before it.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// The byte stream a session runs over, as the carrying protocol hands it on.
pub(crate) struct Stream<R, W> {
    pub(crate) rd: R,
    pub(crate) wr: W,
    /// Bytes already read past the handshake (frames sent with it).
    pub(crate) buf: BytesMut,
    /// Bytes to write first (the handshake answer, when not yet written).
    pub(crate) out: Vec<u8>,
    /// permessage-deflate, when the handshake agreed to it.
    pub(crate) deflate: Option<Agreed>,
}

/// How a session ends: the disconnect the app is told about, if any.
struct End {
    code: u16,
    reason: Bytes,
}

impl End {
    fn from_fail(f: &Fail) -> Option<End> {
        Some(End {
            code: f.code,
            reason: Bytes::from_static(f.token.as_bytes()),
        })
    }

    fn abnormal(token: &'static str) -> Option<End> {
        Some(End {
            code: 1006,
            reason: Bytes::from_static(token.as_bytes()),
        })
    }
}

/// One accepted WebSocket.
pub(crate) struct Session<R, W> {
    /// The request the session answers; dropped with the session, it
    /// reports a disconnect unless the end was already reported.
    ex: Exchange,
    /// What the app sends (messages, close, keepalive, its end).
    rx: UnboundedReceiver<Out>,
    /// The server's shutdown phase.
    sd: watch::Receiver<u8>,
    rd: R,
    wr: W,
    buf: BytesMut,
    out: Vec<u8>,
    /// App bytes framed into `out` and not yet written: they still count
    /// against the watermarks.
    unwritten: usize,
    timers: Timers,
    /// Our close frame is in `out` or written: nothing else follows it.
    close_sent: bool,
    /// permessage-deflate as agreed (None: off, or given up after an error).
    deflate: Option<Agreed>,
    /// Compresses the app's messages; made at the first one.
    compressor: Option<Compressor>,
    /// Messages handed to the app so far.
    delivered: u64,
}

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send> Session<R, W> {
    /// A session for the request `ex`, reading the app's frames from `rx`
    /// and the shutdown phase from `sd`.
    pub(crate) fn new(
        ex: Exchange,
        rx: UnboundedReceiver<Out>,
        sd: watch::Receiver<u8>,
        stream: Stream<R, W>,
    ) -> Self {
        let timers = Timers::new(ex.core().cfg.ws_idle_timeout);
        Session {
            ex,
            rx,
            sd,
            rd: stream.rd,
            wr: stream.wr,
            buf: stream.buf,
            out: stream.out,
            unwritten: 0,
            timers,
            close_sent: false,
            deflate: stream.deflate,
            compressor: None,
            delivered: 0,
        }
    }

    /// Runs the session until either side closes it, and tells the app how
    /// it ended; when the app ended it (its end or its abort), nothing is
    /// reported here.
    pub(crate) async fn run(mut self) {
        if let Some(e) = self.session().await {
            self.ex.disconnect(&e.reason, e.code);
        }
    }

    /// Writes what is gathered; the app's bytes in it stop counting as
    /// buffered once the stream took them.
    async fn write(&mut self) -> Result<(), Stop> {
        let stall = self.ex.core().cfg.request_timeout;
        write_out(&mut self.wr, &mut self.out, stall, &mut self.sd).await?;
        self.ex.written(std::mem::take(&mut self.unwritten));
        Ok(())
    }

    /// Writes what is gathered, giving up when a timer runs out first.
    async fn flush(&mut self) -> Result<(), Option<End>> {
        let written = match self.timers.next(true) {
            None => self.write().await,
            Some((at, due)) => match tokio::time::timeout_at(at, self.write()).await {
                Ok(r) => r,
                Err(_) => return Err(self.expired(due)),
            },
        };
        written.map_err(|stop| End::abnormal(stop.reason()))?;
        self.out.shrink_to(KEEP_CAPACITY);
        Ok(())
    }

    /// A timer ran out: the end it means (pings are not handled here).
    fn expired(&self, due: Due) -> Option<End> {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        match due {
            Due::Idle => {
                self.ex.core().bridge.log(
                    level::WARN,
                    &format!(
                        "WebSocket idle timeout ({}s) - closing connection",
                        secs(self.timers.idle())
                    ),
                );
                End::abnormal("idle_timeout")
            }
            Due::Pong => {
                self.ex.core().bridge.log(
                    level::WARN,
                    &format!(
                        "WebSocket keepalive timeout - no pong received within {}s",
                        secs(self.timers.pong_within())
                    ),
                );
                End::abnormal("keepalive_timeout")
            }
            Due::CloseReply | Due::Ping => End::abnormal("client_timeout"),
        }
    }

    /// Ends the session for a client's violation, once the app has
    /// answered the messages delivered before it (the app's own end, or
    /// `ANSWER_GRACE`, ends the wait); a full receive queue is not waited
    /// for.
    async fn fail_after_answers(&mut self, f: Fail) -> Option<End> {
        if f != QUEUE_FULL {
            let until = tokio::time::Instant::now() + ANSWER_GRACE;
            // The app waits for its next message once it has answered all
            // it took; frames it sent before are queued ahead of that news.
            while self.ex.answered() < self.delivered {
                tokio::select! {
                    _ = self.ex.wake() => {}
                    o = self.rx.recv() => match o {
                        None | Some(Out::End | Out::Abort) => break,
                        Some(o) => {
                            if let ControlFlow::Break(end) = self.app_frame(o).await {
                                return end;
                            }
                        }
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
            while let Ok(o) = self.rx.try_recv() {
                if matches!(o, Out::End | Out::Abort) {
                    break;
                }
                if let ControlFlow::Break(end) = self.app_frame(o).await {
                    return end;
                }
            }
        }
        self.fail(f).await
    }

    /// Ends the session for a violation (or overflow), with a close frame
    /// unless one went out already.
    async fn fail(&mut self, f: Fail) -> Option<End> {
        if f.code == TOO_BIG.code {
            let cfg = &self.ex.core().cfg;
            self.ex.core().bridge.log(
                level::WARN,
                &format!(
                    "PAGI connection error: WebSocket message too big (max_ws_frame_size {} bytes, max_ws_message_size {} bytes) - closing connection",
                    cfg.max_ws_frame_size, cfg.max_ws_message_size
                ),
            );
        }
        if !self.close_sent {
            close_frame(&mut self.out, f.code, f.reason.as_bytes());
            if let Err(end) = self.flush().await {
                return end;
            }
        }
        End::from_fail(&f)
    }

    async fn session(&mut self) -> Option<End> {
        let core = self.ex.core().clone();
        let mut reader = Reader::new(
            core.cfg.max_ws_frame_size,
            core.cfg.max_ws_message_size,
            self.deflate.is_some(),
        );
        loop {
            // Every complete frame already here, then whatever that queued.
            loop {
                let ev = match reader.next(&mut self.buf) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(f) => return self.fail_after_answers(f).await,
                };
                match ev {
                    Event::Message { text, data } => {
                        // The app's receive queue (max_receive_queue messages),
                        // counted until the app takes each message.
                        if !self.ex.message(text, &data) {
                            return self.fail_after_answers(QUEUE_FULL).await;
                        }
                        self.delivered += 1;
                    }
                    Event::Ping(p) => frame(&mut self.out, OpCode::Control(Control::Pong), &p),
                    Event::Pong => self.timers.ponged(),
                    Event::Close(c) => {
                        if !self.close_sent {
                            match &c {
                                Some((code, reason)) => close_frame(&mut self.out, *code, reason),
                                None => frame(&mut self.out, OpCode::Control(Control::Close), b""),
                            }
                            if let Err(end) = self.flush().await {
                                return end;
                            }
                        }
                        let (code, reason) = c.unwrap_or((1005, Bytes::new()));
                        return Some(End { code, reason });
                    }
                }
            }
            if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                self.buf = BytesMut::new();
            }
            if !self.out.is_empty() {
                if let Err(end) = self.flush().await {
                    return end;
                }
            }
            if core.phase() != RUNNING {
                return self.going_away().await;
            }
            // Messages the app has not taken yet hold up reading, within a
            // window, so a slow app cannot make the server buffer without end.
            let reading = self.ex.window_open();
            let due = self.timers.next(false);
            tokio::select! {
                r = fill(&mut self.rd, &mut self.buf), if reading => match r {
                    Ok(0) | Err(_) => return End::abnormal("client_closed"),
                    Ok(_) => self.timers.active(),
                },
                _ = self.ex.wake(), if !reading => {}
                f = self.rx.recv() => {
                    // None: Perl let go of the session without ending it.
                    let Some(first) = f else { return End::abnormal("server_error") };
                    let mut next = Some(first);
                    while let Some(f) = next.take() {
                        if let ControlFlow::Break(end) = self.app_frame(f).await {
                            return end;
                        }
                        next = self.rx.try_recv().ok();
                    }
                },
                _ = sleep_opt(due.map(|(t, _)| t)) => {
                    match due {
                        Some((_, Due::Ping)) => {
                            frame(&mut self.out, OpCode::Control(Control::Ping), b"");
                            self.timers.pinged();
                        }
                        Some((_, d)) => return self.expired(d),
                        None => {}
                    }
                },
                r = self.sd.changed() => if r.is_err() {
                    return self.going_away().await;
                },
            }
        }
    }

    /// One frame from the app. `Break`: the session ends, as given.
    async fn app_frame(&mut self, f: Out) -> ControlFlow<Option<End>> {
        self.timers.active();
        match f {
            Out::WsMessage { text, data } => {
                // Nothing follows our close frame on the wire.
                if self.close_sent {
                    self.ex.written(data.len());
                } else {
                    let op = OpCode::Data(if text { Data::Text } else { Data::Binary });
                    match self.compress(&data) {
                        Some(z) => frame_rsv1(&mut self.out, op, &z, true),
                        None => frame(&mut self.out, op, &data),
                    }
                    self.unwritten += data.len();
                }
            }
            Out::WsClose { code, reason } => {
                if !self.close_sent {
                    close_frame(&mut self.out, code, &reason);
                    self.close_sent = true;
                    self.timers.closing();
                }
            }
            Out::WsKeepalive { interval, timeout } => self.timers.keepalive(interval, timeout),
            Out::End | Out::Abort => {
                // The app is done: close properly if it did not.
                if !self.close_sent {
                    let (code, why): (u16, &[u8]) = if matches!(f, Out::End) {
                        (1000, b"")
                    } else {
                        (1011, b"Internal Error")
                    };
                    close_frame(&mut self.out, code, why);
                }
                let _ = self.flush().await;
                return ControlFlow::Break(None);
            }
            // HTTP response frames have no meaning here.
            Out::Data(_) | Out::File(_) | Out::Trailers(_) | Out::Sse(_) => {}
        }
        ControlFlow::Continue(())
    }

    /// A message of the app's, compressed when permessage-deflate was
    /// agreed. Should the compressor fail, this message and all after it go
    /// out uncompressed (RFC 7692 allows that for any message).
    fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let agreed = self.deflate.as_ref()?;
        let z = self
            .compressor
            .get_or_insert_with(|| Compressor::new(agreed))
            .message(data);
        if z.is_none() {
            self.deflate = None;
            self.compressor = None;
        }
        z
    }

    /// The server is shutting down: tell the client (1001) and end; the app
    /// sees an abnormal close, as the spec asks for a shutdown.
    async fn going_away(&mut self) -> Option<End> {
        if !self.close_sent {
            close_frame(&mut self.out, 1001, b"Server shutting down");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.write()).await;
        End::abnormal("server_shutdown")
    }
}
