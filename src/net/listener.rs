//! Binding listening sockets.
//!
//! Sockets are bound synchronously on the calling (Perl) thread so that
//! errors such as "address in use" come back from `listen` at once, and so
//! that no resolver thread is ever spawned from the Perl thread.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixListener as StdUnixListener;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Listen, ListenSpec};

pub enum Bound {
    Tcp(std::net::TcpListener, SocketAddr),
    Unix(StdUnixListener, String),
}

impl Bound {
    /// Gives up the socket, leaving its descriptor open for the caller.
    pub fn into_raw_fd(self) -> i32 {
        use std::os::fd::IntoRawFd;
        match self {
            Bound::Tcp(l, _) => l.into_raw_fd(),
            Bound::Unix(l, _) => l.into_raw_fd(),
        }
    }

    /// One line for Perl: `tcp HOST PORT` or `unix PATH`.
    pub fn describe(&self) -> String {
        match self {
            Bound::Tcp(_, a) => format!("tcp {} {}", a.ip(), a.port()),
            Bound::Unix(_, p) => format!("unix {p}"),
        }
    }
}

fn bind_tcp(host: &str, port: u16, backlog: i32, reuseport: bool) -> io::Result<Bound> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for addr in addrs {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if reuseport {
            sock.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        if let Err(e) = sock.bind(&addr.into()) {
            last = e;
            continue;
        }
        sock.listen(backlog)?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        let std: std::net::TcpListener = sock.into();
        let local = std.local_addr()?;
        return Ok(Bound::Tcp(std, local));
    }
    Err(last)
}

fn bind_unix(path: &std::path::Path) -> io::Result<Bound> {
    // A file left at the path (a previous run's socket) would make bind fail.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = StdUnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(Bound::Unix(l, path.to_string_lossy().into_owned()))
}

/// A private close-on-exec duplicate of a descriptor someone else owns.
pub fn dup_cloexec(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl on a descriptor number only reads the process table.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) })
}

/// Serves a listening socket bound elsewhere, through a duplicate of its fd
/// (the owner keeps and eventually closes the original).
fn adopt_fd(fd: i32) -> io::Result<Bound> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = Socket::from(dup_cloexec(fd)?);
    sock.set_nonblocking(true)?;
    let local = sock.local_addr()?;
    if let Some(addr) = local.as_socket() {
        return Ok(Bound::Tcp(sock.into(), addr));
    }
    let path = local
        .as_pathname()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    // SAFETY: ownership moves from `sock` to the listener.
    let l = unsafe { StdUnixListener::from_raw_fd(sock.into_raw_fd()) };
    Ok(Bound::Unix(l, path))
}

/// Binds every listener or none: on error the ones already bound are closed.
/// `reuseport`: TCP sockets get SO_REUSEPORT (a worker's own socket beside
/// its siblings' on the same port).
pub fn bind_all(listen: &[Listen], backlog: i32, reuseport: bool) -> Result<Vec<Bound>, String> {
    listen
        .iter()
        .map(|l| match &l.spec {
            ListenSpec::Fd(fd) => {
                adopt_fd(*fd).map_err(|e| format!("Cannot use inherited socket fd {fd}: {e}"))
            }
            ListenSpec::Tcp { host, port } => bind_tcp(host, *port, backlog, reuseport)
                .map_err(|e| format!("Cannot listen on {host}:{port}: {e}")),
            ListenSpec::Unix { path } => {
                bind_unix(path).map_err(|e| format!("Cannot listen on {}: {e}", path.display()))
            }
        })
        .zip(listen)
        .map(|(b, l)| match b {
            Ok(Bound::Unix(_, path)) if l.tls => Err(format!(
                "Cannot serve TLS on the Unix socket {path}: Unix sockets stay plaintext"
            )),
            other => other,
        })
        .collect()
}

/// A plaintext listener of `spec` (for tests).
#[cfg(test)]
fn plain(spec: ListenSpec) -> Listen {
    Listen { spec, tls: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_unix_socket_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("pagi-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("s.sock");
        std::fs::write(&path, b"stale").expect("stale file");
        let b = bind_all(&[plain(ListenSpec::Unix { path: path.clone() })], 16, false)
            .expect("bind over stale file");
        assert_eq!(b[0].describe(), format!("unix {}", path.display()));
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&path)
            .expect("socket")
            .file_type()
            .is_socket());
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn port_zero_gets_a_real_port_and_conflicts_are_reported() {
        let b = bind_all(
            &[plain(ListenSpec::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            })],
            16,
            false,
        )
        .expect("bind");
        let Bound::Tcp(_, addr) = &b[0] else {
            panic!("tcp expected")
        };
        assert_ne!(addr.port(), 0);
        assert_eq!(b[0].describe(), format!("tcp 127.0.0.1 {}", addr.port()));
        let again = bind_all(
            &[plain(ListenSpec::Tcp {
                host: "127.0.0.1".into(),
                port: addr.port(),
            })],
            16,
            false,
        );
        let err = again.err().expect("second bind must fail");
        assert!(err.contains("in use"), "{err}");
    }

    #[test]
    fn reuseport_sockets_share_a_port() {
        let tcp = |port| {
            plain(ListenSpec::Tcp {
                host: "127.0.0.1".into(),
                port,
            })
        };
        let first = bind_all(&[tcp(0)], 16, true).expect("bind");
        let Bound::Tcp(_, addr) = &first[0] else {
            panic!("tcp expected")
        };
        let second = bind_all(&[tcp(addr.port())], 16, true).expect("second reuseport bind");
        assert_eq!(second[0].describe(), first[0].describe());
    }
}
