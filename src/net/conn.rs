//! The one path every accepted connection takes, whatever its listener:
//! admitted or refused at `max_connections`, carried by the listener's
//! transport, then handed to the protocol that speaks on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use tokio::io::AsyncWriteExt;

use super::peer::Peer;
use super::sniff::{self, Heard};
use super::stream::Split;
use super::tls::Acceptor;
use crate::abi::level;
use crate::proto::h1::conn::{self, CatchUnwind};
use crate::proto::h1::encode::{AT_CAPACITY, PLAIN_TO_TLS};
use crate::server::ServerCore;
use crate::slow::evicted;
use tokio_rustls::server::TlsStream;

/// How a listener's connections carry their bytes.
#[derive(Clone)]
pub enum Transport {
    /// The socket's bytes are the protocol's bytes.
    Plain,
    /// A TLS handshake first (in `accept`'s task), then the protocol runs
    /// over the TLS session.
    Tls(Arc<Acceptor>),
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
    // One task per transport: a task is as large as the largest state of
    // its future, and a TLS session's would make every plain connection's
    // task several KiB larger than it needs.
    match transport {
        Transport::Plain => {
            tokio::spawn(plain(core, sock, peer, admitted));
        }
        Transport::Tls(acceptor) => {
            tokio::spawn(over_tls(core, acceptor, sock, peer, admitted));
        }
    }
}

/// The task of a connection on a plain listener. (A plain `fn`: an
/// `async fn` would keep its arguments in the task for its whole life.)
fn plain<S: Split>(
    core: Arc<ServerCore>,
    sock: S,
    peer: Peer,
    admitted: bool,
) -> impl Future<Output = ()> + Send {
    let run = serve(&core, sock, peer, admitted, None);
    async move {
        run.await;
        if admitted {
            core.connection_closed();
        }
    }
}

/// The task of a connection on a TLS listener: the handshake, then the
/// protocol ALPN chose.
async fn over_tls<S: Split>(
    core: Arc<ServerCore>,
    acceptor: Arc<Acceptor>,
    sock: S,
    peer: Peer,
    admitted: bool,
) {
    if let Some((tls, peer)) = handshake(&core, &acceptor, sock, peer, admitted).await {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        serve(&core, tls, peer, admitted, Some(h2)).await;
    }
    if admitted {
        core.connection_closed();
    }
}

/// A protocol running on a connection.
type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the protocol on an admitted connection, or refuses it. `alpn_h2`:
/// over TLS, whether ALPN chose h2; in cleartext (None) with `http2` on,
/// the client preface decides. The opening (the refusal, or the sniffing
/// of h2c) runs boxed, so that once the protocol is chosen the connection's
/// task holds only the protocol's own future.
fn serve<S: Split>(
    core: &Arc<ServerCore>,
    stream: S,
    peer: Peer,
    admitted: bool,
    alpn_h2: Option<bool>,
) -> impl Future<Output = ()> + Send {
    let opening = Box::pin(open(core.clone(), stream, peer, admitted, alpn_h2));
    let core = core.clone();
    async move {
        let Some(run) = opening.await else { return };
        if let Err(msg) = CatchUnwind(run).await {
            core.bridge.log(
                level::ERROR,
                &format!("PAGI::Server internal error (connection closed): {msg}"),
            );
        }
    }
}

/// The opening of `serve`: None when the connection was refused.
async fn open<S: Split>(
    core: Arc<ServerCore>,
    mut stream: S,
    peer: Peer,
    admitted: bool,
    alpn_h2: Option<bool>,
) -> Option<Running> {
    if !admitted {
        refuse(stream, AT_CAPACITY).await;
        return None;
    }
    let mut pre = BytesMut::new();
    let h2 = match alpn_h2 {
        Some(h2) => h2,
        None if core.cfg.http2 => {
            let limit = core.cfg.opening_limit();
            match sniff::hear(&mut stream, &mut pre, limit).await {
                Heard::H2c => true,
                Heard::Http1 => false,
                Heard::Neither => {
                    refuse(stream, sniff::BAD_PREFACE).await;
                    return None;
                }
            }
        }
        None => false,
    };
    Some(if h2 {
        Box::pin(crate::proto::h2::serve(core.clone(), stream, pre, peer))
    } else {
        Box::pin(conn::serve(core, stream, peer, pre))
    })
}

/// The server side of a TLS handshake, bounded by `timeout` (or
/// 60 s when off), and by `REFUSAL_LIMIT` for a connection that only
/// gets a refusal. While it runs an admitted connection can be evicted at
/// capacity like one trickling its request head (a refused one is not
/// counted, so evicting it would admit one too many). A failure is logged
/// at debug level only (it is the client's business) and closes the
/// connection.
async fn handshake<S: Split>(
    core: &ServerCore,
    acceptor: &Acceptor,
    sock: S,
    peer: Peer,
    admitted: bool,
) -> Option<(TlsStream<S>, Peer)> {
    let limit = if admitted {
        core.cfg.opening_limit()
    } else {
        REFUSAL_LIMIT
    };
    let mut wait = admitted.then(|| core.head_waiters.enter(tokio::time::Instant::now()));
    if let Some(w) = wait.as_mut() {
        w.partial();
    }
    let attempt = async {
        // A ClientHello starts with 22; a request line with a capital.
        if sock
            .peek_first()
            .await
            .is_some_and(|b| b.is_ascii_uppercase())
        {
            return Err(sock);
        }
        Ok(acceptor.accept(sock).await)
    };
    let done = tokio::select! {
        r = tokio::time::timeout(limit, attempt) => r,
        () = evicted(&mut wait) => return None,
    };
    drop(wait);
    match done {
        Ok(Err(plain)) => {
            core.bridge.log(
                level::DEBUG,
                &format!(
                    "Plain HTTP on a TLS listener (client {}): answered 400",
                    peer.log_host()
                ),
            );
            refuse(plain, PLAIN_TO_TLS).await;
            None
        }
        Ok(Ok(Ok(tls))) => {
            let facts = acceptor.facts(tls.get_ref().1);
            Some((tls, peer.over_tls(facts)))
        }
        Ok(Ok(Err(e))) => {
            core.bridge.log(
                level::DEBUG,
                &format!("SSL handshake failed: {e} (client {})", peer.log_host()),
            );
            None
        }
        Err(_) => {
            core.bridge.log(
                level::DEBUG,
                &format!(
                    "SSL handshake timed out after {:.1}s (client {})",
                    limit.as_secs_f64(),
                    peer.log_host()
                ),
            );
            None
        }
    }
}

/// How long a refused connection may take to be told so.
const REFUSAL_LIMIT: Duration = Duration::from_secs(5);

/// Writes a canned answer and closes the connection: the 503 over
/// `max_connections`, through the same stream a protocol would have been
/// given (so over TLS on a TLS listener, never in plaintext), or the 400
/// to plain HTTP on a TLS listener.
async fn refuse<S: Split>(mut stream: S, answer: &[u8]) {
    let write = async {
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(REFUSAL_LIMIT, write).await;
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
            refuse(server, AT_CAPACITY).await;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, AT_CAPACITY);
        });
    }

    /// What an idle plain connection costs lies mostly in two futures: its
    /// task's and the protocol's (boxed). Neither may grow back to holding
    /// a request's state (the HTTP/1.1 one was 3.9 KiB with `exchange`
    /// inline) or a TLS session's (the task was 8 KiB with it).
    #[test]
    fn a_plain_connection_is_two_small_futures() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cfg = crate::config::Config::parse("listen=tcp:127.0.0.1:0").expect("config");
            let core = Arc::new(ServerCore::new(cfg).expect("core"));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("address");
            let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (sock, client) = l.accept().await.expect("accept");
            let peer = Peer::Tcp {
                client,
                server: Some(addr),
                tls: None,
            };
            let task = plain(core.clone(), sock, peer.clone(), true);
            assert!(
                std::mem::size_of_val(&task) <= 256,
                "task {}",
                std::mem::size_of_val(&task)
            );
            drop(task);
            let (sock, _) = {
                let _c = tokio::net::TcpStream::connect(addr).await.expect("connect");
                l.accept().await.expect("accept")
            };
            let h1 = conn::serve(core, sock, peer, BytesMut::new());
            assert!(
                std::mem::size_of_val(&h1) <= 1536,
                "HTTP/1.1 {}",
                std::mem::size_of_val(&h1)
            );
        });
    }
}
