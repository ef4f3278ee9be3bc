//! The one path every accepted connection takes, whatever its listener:
//! admitted or refused at `max_connections`, carried by the listener's
//! transport, then handed to the protocol that speaks on it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::peer::Peer;
use super::stream::Split;
use crate::abi::level;
use crate::proto::h1::conn::{self, CatchUnwind};
use crate::proto::h1::encode::AT_CAPACITY;
use crate::server::ServerCore;

/// How a listener's connections carry their bytes. Every listener is plain
/// today; TLS adds a variant holding the acceptor, and its handshake runs in
/// `accept`'s task before the protocol is picked.
#[derive(Clone, Copy)]
pub enum Transport {
    /// The socket's bytes are the protocol's bytes.
    Plain,
}

/// The protocol spoken on a connection.
enum Protocol {
    /// HTTP/1.0 and HTTP/1.1 (`proto::h1`).
    Http1,
}

/// Only HTTP/1.x is spoken today; ALPN (after a TLS handshake) or the h2c
/// preface is where a second protocol will be chosen.
fn pick_protocol() -> Protocol {
    Protocol::Http1
}

/// Takes one accepted connection: decides at once (on the accept task, so
/// the connection count stays exact) whether it is admitted, then runs its
/// transport and protocol on a task of its own.
pub fn accept<S: Split>(core: &Arc<ServerCore>, sock: S, peer: Peer, transport: Transport) {
    let admitted = !at_capacity(core);
    if admitted {
        core.connection_opened();
    } else {
        core.bridge.log(
            level::WARN,
            &format!(
                "Connection rejected: at capacity ({}/{})",
                core.connection_count(),
                core.cfg.max_connections
            ),
        );
    }
    let core = core.clone();
    tokio::spawn(async move {
        let stream = match transport {
            Transport::Plain => sock,
        };
        if !admitted {
            refuse(stream).await;
            return;
        }
        let run = match pick_protocol() {
            Protocol::Http1 => conn::serve(core.clone(), stream, peer),
        };
        if let Err(msg) = CatchUnwind(Box::pin(run)).await {
            core.bridge.log(
                level::ERROR,
                &format!("PAGI::Server internal error (connection closed): {msg}"),
            );
        }
        core.connection_closed();
    });
}

/// Answers a connection over `max_connections` with a 503 and closes it,
/// through the same stream a protocol would have been given (so over TLS
/// on a TLS listener, never in plaintext).
async fn refuse<S: Split>(mut stream: S) {
    let write = async {
        let _ = stream.write_all(AT_CAPACITY).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

/// At `max_connections`, a new connection is refused unless one that has
/// waited past the grace for its request head can be closed to make room
/// (so idle or trickling connections cannot lock real clients out).
fn at_capacity(core: &ServerCore) -> bool {
    if core.connection_count() < core.cfg.max_connections {
        return false;
    }
    if core
        .head_waiters
        .evict_oldest(tokio::time::Instant::now())
        .is_none()
    {
        return true;
    }
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = core.head_waiters.evictions_to_log(now_secs);
    if n > 0 {
        core.bridge.log(
            level::WARN,
            &format!(
                "At capacity ({}/{}): closed {n} connection(s) waiting longest for a request head to admit new ones",
                core.connection_count(),
                core.cfg.max_connections
            ),
        );
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream, ReadHalf, WriteHalf};

    /// A stream with no owned halves, as a TLS session will be.
    impl Split for DuplexStream {
        type R = ReadHalf<DuplexStream>;
        type W = WriteHalf<DuplexStream>;
        fn halves(self) -> (Self::R, Self::W) {
            tokio::io::split(self)
        }
    }

    #[test]
    fn the_refusal_is_written_through_the_stream_given() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (server, mut client) = tokio::io::duplex(4096);
            refuse(server).await;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, AT_CAPACITY);
        });
    }
}
