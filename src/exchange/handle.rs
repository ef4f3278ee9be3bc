//! The one handle a protocol holds per request: everything a protocol loop
//! tells Perl about a request goes through it, so no protocol module pushes
//! bridge records itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, oneshot};

use super::RequestHead;
use crate::abi::kind;
use crate::bridge::request::{self, BODY_WINDOW};
use crate::net::peer::Peer;
use crate::server::{Out, Reply, ReqShared, ServerCore};

/// What the app sends back for a request: its response head or WebSocket
/// accept, and its frames (body, trailers, WebSocket messages, end).
pub(crate) struct Replies {
    pub(crate) head: oneshot::Receiver<Reply>,
    pub(crate) out: mpsc::UnboundedReceiver<Out>,
}

/// One request in progress. Dropping it (the connection ended, or panicked)
/// tells Perl, with the reason last set, unless the request already finished.
pub(crate) struct Exchange {
    core: Arc<ServerCore>,
    shared: Arc<ReqShared>,
    reason: &'static str,
}

impl Exchange {
    /// Registers a request and hands its REQUEST record to Perl.
    pub(crate) fn open(
        core: &Arc<ServerCore>,
        head: &RequestHead,
        peer: &Peer,
    ) -> (Exchange, Replies) {
        let log = core
            .cfg
            .access_log
            .then(|| request::log_info(core, head, peer));
        let (shared, head_rx, out_rx) = core.register(log);
        request::push_request(core, &shared, head, peer);
        let ex = Exchange {
            core: core.clone(),
            shared,
            reason: "server_error",
        };
        (
            ex,
            Replies {
                head: head_rx,
                out: out_rx,
            },
        )
    }

    /// The server this request belongs to (its config, its log).
    #[inline]
    pub(crate) fn core(&self) -> &Arc<ServerCore> {
        &self.core
    }

    /// The disconnect reason reported if the exchange is dropped unfinished.
    #[inline]
    pub(crate) fn set_reason(&mut self, reason: &'static str) {
        self.reason = reason;
    }

    /// Hands a piece of the request body to Perl; `more`: not the last one
    /// (the piece then counts against the window until the app takes it).
    #[inline]
    pub(crate) fn body(&self, data: &[u8], more: bool) {
        if more {
            self.shared.unacked.fetch_add(data.len(), Ordering::SeqCst);
        }
        self.core.bridge.push(kind::BODY, self.shared.id, |w| {
            w.bytes(data).u8(u8::from(more));
        });
    }

    /// The client ended its side after a complete request.
    #[inline]
    pub(crate) fn eof(&self) {
        self.core.bridge.push(kind::EOF, self.shared.id, |_| {});
    }

    /// Hands a WebSocket message to Perl. `false`: the app's receive queue
    /// (`max_receive_queue` messages) is full and nothing was delivered.
    #[inline]
    pub(crate) fn message(&self, text: bool, data: &[u8]) -> bool {
        let max = self.core.cfg.max_receive_queue;
        if max > 0 && self.shared.messages.load(Ordering::SeqCst) >= max {
            return false;
        }
        self.shared.messages.fetch_add(1, Ordering::SeqCst);
        self.shared.unacked.fetch_add(data.len(), Ordering::SeqCst);
        self.core
            .bridge
            .push(kind::WS_MESSAGE, self.shared.id, |w| {
                w.u8(u8::from(text)).bytes(data);
            });
        true
    }

    /// How many WebSocket messages the app has answered: it had taken
    /// that many when it last waited for the next one.
    #[inline]
    pub(crate) fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Whether more input may be delivered: what Perl holds unconsumed is
    /// under the window.
    #[inline]
    pub(crate) fn window_open(&self) -> bool {
        self.shared.unacked.load(Ordering::SeqCst) < BODY_WINDOW
    }

    /// Input bytes delivered to Perl and not yet taken by the app.
    #[inline]
    pub(crate) fn unconsumed(&self) -> usize {
        self.shared.unacked.load(Ordering::SeqCst)
    }

    /// Wakes when the app consumed input, asked for the body, or the
    /// request finished.
    #[inline]
    pub(crate) fn wake(&self) -> Notified<'_> {
        self.shared.body_wake.notified()
    }

    /// The app has asked for the body (the go-ahead for `100 Continue`).
    #[inline]
    pub(crate) fn body_wanted(&self) -> bool {
        self.shared.body_wanted.load(Ordering::SeqCst)
    }

    /// When the app last sent an event that Perl keeps (see `sse.rs`).
    #[inline]
    pub(crate) fn touched(&self) -> Option<tokio::time::Instant> {
        self.shared.touched.at()
    }

    /// The request finished (its final frame went to Perl's side, or it was
    /// abandoned): no more input is wanted.
    #[inline]
    pub(crate) fn finished(&self) -> bool {
        self.shared.fin.load(Ordering::SeqCst)
    }

    /// `len` bytes of the app's output left the process: releases a pending
    /// `$send` (a DRAIN record) once the backlog is down to the low mark.
    #[inline]
    pub(crate) fn written(&self, len: usize) {
        if len == 0 {
            return;
        }
        let left = self
            .shared
            .buffered
            .fetch_sub(len, Ordering::SeqCst)
            .saturating_sub(len);
        if left <= self.core.cfg.low_watermark
            && self.shared.want_drain.swap(false, Ordering::SeqCst)
        {
            self.core.bridge.push(kind::DRAIN, self.shared.id, |_| {});
        }
    }

    /// Tells Perl the request ended abnormally, once. `code` is the
    /// WebSocket close code (0: none, for HTTP); `reason` is a
    /// disconnect-reason token or a WebSocket peer's close reason.
    pub(crate) fn disconnect(&self, reason: &[u8], code: u16) {
        if self.shared.fin.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.body_wake.notify_one();
        self.core
            .bridge
            .push(kind::DISCONNECT, self.shared.id, |w| {
                w.bytes(reason).u16(code);
            });
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.disconnect(self.reason.as_bytes(), 0);
        // Its body scalars came back: Perl frees them at its next drain,
        // which this makes sure comes (see `held`).
        if self.core.held.waiting() {
            self.core.bridge.push(kind::RETURNED, 0, |_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::Config;
    use crate::exchange::{BodyHint, Scheme, Version};
    use crate::server::SendState;

    fn core() -> Arc<ServerCore> {
        let cfg =
            Config::parse("listen=tcp:127.0.0.1:0\nwrite_high_watermark=10\nwrite_low_watermark=4")
                .expect("config");
        Arc::new(ServerCore::new(cfg).expect("core"))
    }

    fn open(core: &Arc<ServerCore>) -> (Exchange, Replies) {
        let head = RequestHead {
            method: "GET".into(),
            scheme: Scheme::Http,
            authority: None,
            path: b"/".to_vec(),
            query: Vec::new(),
            version: Version::Http11,
            headers: Vec::new(),
            body: BodyHint::None,
            expect_continue: false,
            upgrade: None,
        };
        let peer = Peer::Unix {
            path: "/tmp/s".into(),
        };
        Exchange::open(core, &head, &peer)
    }

    /// The kinds of the records pushed since the last call.
    fn kinds(core: &ServerCore) -> Vec<u8> {
        let mut out = Vec::new();
        core.bridge.drain(&mut out);
        let mut kinds = Vec::new();
        let mut rest = out.as_slice();
        while let Some((&k, tail)) = rest.split_first() {
            kinds.push(k);
            // Only the fixed-size records this test reads past.
            let body = match k {
                kind::DRAIN | kind::EOF => 0,
                kind::BODY => 8 + 1 + 1,
                _ => tail.len() - 8,
            };
            rest = &tail[8 + body..];
        }
        kinds
    }

    #[test]
    fn delivers_releases_and_reports_the_end_once() {
        let c = core();
        let (mut ex, _replies) = open(&c);
        assert_eq!(kinds(&c), [kind::REQUEST]);
        ex.body(b"x", true);
        assert!(ex.window_open());
        ex.eof();
        assert_eq!(kinds(&c), [kind::BODY, kind::EOF]);
        let id = ex.shared.id;
        assert_eq!(c.send_start(id, 200, &[]), SendState::Ready);
        let big = Bytes::from_static(b"123456789012");
        assert_eq!(
            c.send_body(id, big.clone(), false).0,
            SendState::Ready,
            "the backlog was empty"
        );
        assert_eq!(
            c.send_body(id, big, false).0,
            SendState::Pending,
            "it was at the high mark"
        );
        ex.written(17);
        assert_eq!(kinds(&c), [], "still over the low mark");
        ex.written(7);
        ex.written(0);
        assert_eq!(kinds(&c), [kind::DRAIN], "released once");
        // A write that only brings the backlog to the mark waits for
        // nothing, but its drain is still reported (for on_drain).
        let mark = Bytes::from_static(b"1234567890");
        assert_eq!(c.send_body(id, mark, false).0, SendState::Ready);
        ex.written(10);
        assert_eq!(kinds(&c), [kind::DRAIN], "the drain after the mark");
        ex.set_reason("client_timeout");
        drop(ex);
        let mut out = Vec::new();
        c.bridge.drain(&mut out);
        assert_eq!(out[0], kind::DISCONNECT);
        assert_eq!(&out[17..31], b"client_timeout");

        // Events Perl keeps mark the request as touched (the SSE idle clock).
        let (ex, _replies) = open(&c);
        assert_eq!(ex.touched(), None);
        c.touch(ex.shared.id + 1000); // unknown: nothing happens
        assert_eq!(ex.touched(), None);
        c.touch(ex.shared.id);
        assert!(ex.touched().is_some());
        assert_eq!(kinds(&c), [kind::REQUEST], "no record for a touch");
        c.send_start(ex.shared.id, 200, &[]);
        c.send_body(ex.shared.id, Bytes::new(), true);
        drop(ex);
        assert_eq!(kinds(&c), []);

        // A request that finished reports nothing when dropped.
        let (ex, _replies) = open(&c);
        c.send_start(ex.shared.id, 200, &[]);
        c.send_body(ex.shared.id, Bytes::new(), true);
        drop(ex);
        assert_eq!(kinds(&c), [kind::REQUEST]);
    }
}
