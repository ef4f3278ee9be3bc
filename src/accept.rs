//! Accept loops: one task per listener, stopped by the shutdown watch.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::abi::level;
use crate::http1::{self, Peer};
use crate::server::{ServerCore, RUNNING};

/// Accept errors such as EMFILE are transient: pause instead of spinning.
async fn accept_failed(core: &ServerCore, e: std::io::Error) {
    let fd_exhausted = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
    if fd_exhausted {
        core.bridge.log(
            level::WARN,
            &format!("Accept error (FD exhaustion): {e} - pausing accept for 100ms"),
        );
    } else {
        core.bridge.log(level::ERROR, &format!("Accept error: {e}"));
    }
    core.pause_accept(Duration::from_millis(100));
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

pub async fn tcp_loop(core: Arc<ServerCore>, l: TcpListener) {
    let mut sd = core.shutdown_watch();
    while *sd.borrow() == RUNNING {
        tokio::select! {
            r = async { core.accept_allowed().await; l.accept().await } => match r {
                Ok((s, _)) if at_capacity(&core) => http1::reject_busy(&core, s),
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    let local = s.local_addr().ok();
                    http1::spawn(core.clone(), s, Peer::Tcp { client: peer, server: local });
                }
                Err(e) => accept_failed(&core, e).await,
            },
            r = sd.changed() => if r.is_err() { break },
        }
    }
}

pub async fn unix_loop(core: Arc<ServerCore>, l: UnixListener, path: String) {
    let path: Arc<str> = path.into();
    let mut sd = core.shutdown_watch();
    while *sd.borrow() == RUNNING {
        tokio::select! {
            r = async { core.accept_allowed().await; l.accept().await } => match r {
                Ok((s, _)) if at_capacity(&core) => http1::reject_busy(&core, s),
                Ok((s, _)) => http1::spawn(core.clone(), s, Peer::Unix { path: path.clone() }),
                Err(e) => accept_failed(&core, e).await,
            },
            r = sd.changed() => if r.is_err() { break },
        }
    }
}
