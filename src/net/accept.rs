//! Accept loops: one task per listener, stopped by the shutdown watch. Every
//! connection they accept goes through `conn::accept`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use super::conn::{self, Transport};
use super::listener::Bound;
use super::peer::Peer;
use super::tls::Acceptor;
use crate::abi::level;
use crate::server::{ServerCore, RUNNING};

/// Serves every bound listener (in the order of `core.cfg.listen`, whose
/// `tls` flags pick the transport) until the core shuts down.
pub fn start(
    core: &Arc<ServerCore>,
    rt: &tokio::runtime::Handle,
    bound: Vec<Bound>,
    tls: Option<&Arc<Acceptor>>,
) -> std::io::Result<()> {
    let _enter = rt.enter();
    for (b, l) in bound.into_iter().zip(&core.cfg.listen) {
        let transport = match (l.tls, tls) {
            (false, _) => Transport::Plain,
            (true, Some(a)) => Transport::Tls(a.clone()),
            (true, None) => {
                return Err(std::io::Error::other("a TLS listener without TLS settings"))
            }
        };
        match b {
            Bound::Tcp(std, _) => {
                let l = TcpListener::from_std(std)?;
                rt.spawn(tcp_loop(core.clone(), l, transport));
            }
            Bound::Unix(std, path) => {
                let l = UnixListener::from_std(std)?;
                rt.spawn(unix_loop(core.clone(), l, path, transport));
            }
        }
    }
    rt.spawn(crate::memory::give_back_when_quiet(core.clone()));
    Ok(())
}

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

async fn tcp_loop(core: Arc<ServerCore>, l: TcpListener, transport: Transport) {
    let mut sd = core.shutdown_watch();
    while *sd.borrow() == RUNNING {
        tokio::select! {
            r = async { core.accept_allowed().await; l.accept().await } => match r {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    let local = s.local_addr().ok();
                    let peer = Peer::Tcp { client: peer, server: local, tls: None };
                    conn::accept(&core, s, peer, transport.clone());
                }
                Err(e) => accept_failed(&core, e).await,
            },
            r = sd.changed() => if r.is_err() { break },
        }
    }
}

async fn unix_loop(core: Arc<ServerCore>, l: UnixListener, path: String, transport: Transport) {
    let path: Arc<str> = path.into();
    let mut sd = core.shutdown_watch();
    while *sd.borrow() == RUNNING {
        tokio::select! {
            r = async { core.accept_allowed().await; l.accept().await } => match r {
                Ok((s, _)) => {
                    let peer = Peer::Unix { path: path.clone() };
                    conn::accept(&core, s, peer, transport.clone());
                }
                Err(e) => accept_failed(&core, e).await,
            },
            r = sd.changed() => if r.is_err() { break },
        }
    }
}
