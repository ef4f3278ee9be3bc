//! HTTP/2 (h2 by ALPN over TLS, h2c by its preface in cleartext) on the
//! `h2` crate, behind the same seam as HTTP/1.x: every stream is one
//! exchange (`stream.rs`). This file drives the connection: the settings
//! from the `h2_*` options, the flood limits (`guard.rs`), an idle
//! connection's end, and a graceful shutdown (GOAWAY, open streams finish
//! until the shutdown's force phase).

pub mod guard;
mod response;
pub mod settings;
mod stream;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::abi::level;
use crate::net::peer::Peer;
use crate::proto::h1::conn::CatchUnwind;
use crate::server::{ServerCore, FORCE, RUNNING};
use crate::slow::{evicted, HeadWait, EVICT_GRACE};
use crate::stream_io::sleep_opt;
use guard::{Tripped, Watched};

/// The connection-level receive window beyond one stream's window: several
/// streams may upload at once, and a stream whose app holds its whole
/// window unread still leaves this much to the others.
const CONNECTION_WINDOW: u32 = 1 << 20;
/// How long a final GOAWAY may take to be written.
const GOAWAY_LIMIT: Duration = Duration::from_secs(1);
/// Once the connection ends (the client went, or a forced shutdown), how
/// long its streams still run to tell their apps why, before they are
/// dropped unfinished.
const STREAMS_LAST_WORD: Duration = Duration::from_millis(200);
/// Going away, how long the client has to answer the PING that `h2` sends
/// with its first GOAWAY: a client that never answers would otherwise keep
/// a connection with no stream open (after `timeout`, or through a
/// shutdown) until it closes it.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Ends a connection at once: GOAWAY with `reason` (and the last stream
/// taken), written within GOAWAY_LIMIT.
async fn goaway_now<T>(conn: &mut h2::server::Connection<T, Bytes>, reason: h2::Reason)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    conn.abrupt_shutdown(reason);
    let flush = std::future::poll_fn(|cx| conn.poll_closed(cx));
    let _ = tokio::time::timeout(GOAWAY_LIMIT, flush).await;
}

/// Serves HTTP/2 on an admitted connection until it closes. The client
/// preface starts `pre` (bytes already read from `io`) or `io`.
pub async fn serve<T>(core: Arc<ServerCore>, io: T, pre: BytesMut, peer: Peer)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = &core.cfg.h2;
    let tripped = Arc::new(Tripped::default());
    let io = Watched::new(io, pre, s, tripped.clone());
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(s.max_concurrent_streams)
        .initial_window_size(s.initial_window_size)
        .initial_connection_window_size(
            CONNECTION_WINDOW
                .saturating_add(s.initial_window_size)
                .min(settings::MAX_WINDOW),
        )
        .max_frame_size(s.max_frame_size)
        .max_header_list_size(s.max_header_list_size);
    if s.enable_connect_protocol {
        b.enable_connect_protocol();
    }
    let limit = core.cfg.opening_limit();
    let mut conn = match tokio::time::timeout(limit, b.handshake::<_, Bytes>(io)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            core.bridge.log(
                level::DEBUG,
                &format!("HTTP/2 handshake failed: {e} (client {})", peer.log_host()),
            );
            return;
        }
        Err(_) => return,
    };
    let ctx = Arc::new(stream::Ctx {
        core: core.clone(),
        peer,
        server: response::server_value(&core.cfg.server_header),
    });
    let mut sd = core.shutdown_watch();
    let mut going_away = core.phase() != RUNNING;
    if going_away {
        conn.graceful_shutdown();
    }
    // An idle connection (no stream open) is closed after `timeout`; one
    // going away with no stream open, after GOAWAY_GRACE. Past EVICT_GRACE
    // it waits for a request like an HTTP/1 connection waits for a head,
    // and can be closed at `max_connections` to admit a new connection.
    let idle = core.cfg.idle_timeout;
    let mut since = Instant::now();
    let mut wait: Option<HeadWait<'_>> = None;
    // The streams run inside this task, polled with the connection: no
    // task per stream, and no wake-up crossing between tasks.
    let mut streams = FuturesUnordered::new();
    loop {
        let idle_at = if going_away {
            Some(since + GOAWAY_GRACE)
        } else {
            idle.map(|d| since + d)
        };
        let register_at =
            (streams.is_empty() && wait.is_none() && !going_away).then_some(since + EVICT_GRACE);
        let wake = idle_at.into_iter().chain(register_at).min();
        tokio::select! {
            Some(()) = streams.next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    since = Instant::now();
                }
            },
            () = evicted(&mut wait) => {
                goaway_now(&mut conn, h2::Reason::NO_ERROR).await;
                break;
            },
            r = conn.accept() => match r {
                Some(Ok((req, respond))) => {
                    since = Instant::now();
                    wait = None;
                    let ctx = ctx.clone();
                    streams.push(async move {
                        let core = ctx.core.clone();
                        let run = stream::serve(ctx, req, respond);
                        if let Err(msg) = CatchUnwind(Box::pin(run)).await {
                            core.bridge.log(
                                level::ERROR,
                                &format!("PAGI::Server internal error (HTTP/2 stream reset): {msg}"),
                            );
                        }
                    });
                }
                Some(Err(e)) => {
                    core.bridge.log(
                        level::DEBUG,
                        &format!("HTTP/2 connection error: {e} (client {})", ctx.peer.log_host()),
                    );
                    break;
                }
                None => break,
            },
            what = tripped.wait() => {
                core.bridge.log(
                    level::WARN,
                    &format!(
                        "HTTP/2 {} flood from {}: GOAWAY (ENHANCE_YOUR_CALM)",
                        what.name(),
                        ctx.peer.log_host()
                    ),
                );
                goaway_now(&mut conn, h2::Reason::ENHANCE_YOUR_CALM).await;
                break;
            },
            _ = sleep_opt(wake) => {
                let now = Instant::now();
                if register_at.is_some_and(|r| now >= r) {
                    wait = Some(core.head_waiters.enter(since));
                }
                if !idle_at.is_some_and(|i| now >= i) {
                    continue;
                }
                since = now;
                if conn.has_streams() {
                    continue;
                }
                if going_away {
                    // The PING went unanswered: the final GOAWAY (with the
                    // last stream taken) goes out now, and the end.
                    goaway_now(&mut conn, h2::Reason::NO_ERROR).await;
                    break;
                }
                going_away = true;
                conn.graceful_shutdown();
            },
            r = sd.changed() => {
                if r.is_err() || *sd.borrow() == FORCE {
                    break;
                }
                if !going_away {
                    going_away = true;
                    since = Instant::now();
                    conn.graceful_shutdown();
                }
            },
        }
    }
    // Streams still open see the connection's end themselves (a reset, the
    // shutdown phase) and report it with the right reason; one dropped
    // unfinished would report a server error.
    if !streams.is_empty() {
        let last_word = async { while streams.next().await.is_some() {} };
        let _ = tokio::time::timeout(STREAMS_LAST_WORD, last_word).await;
    }
}
