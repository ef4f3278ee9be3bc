//! The byte streams a protocol module is handed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// A connected byte stream that splits into a read half and a write half
/// usable at the same time (a protocol reads the next request while it
/// writes a response). TCP and Unix sockets split into owned halves with no
/// lock; a stream that cannot (a TLS session) implements this with
/// `tokio::io::split`.
pub trait Split: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half.
    type R: AsyncRead + Unpin + Send + 'static;
    /// The write half.
    type W: AsyncWrite + ZeroCopy + Unpin + Send + 'static;
    /// Splits the stream.
    fn halves(self) -> (Self::R, Self::W);

    /// The first byte the peer sent, left unread; None when the stream
    /// cannot tell or closed first. A TLS listener tells plain HTTP from a
    /// ClientHello by it.
    fn peek_first(&self) -> impl std::future::Future<Output = Option<u8>> + Send + '_ {
        std::future::ready(None)
    }
}

impl Split for TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    async fn peek_first(&self) -> Option<u8> {
        let mut b = [0u8; 1];
        match self.peek(&mut b).await {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }
}

impl Split for UnixStream {
    type R = tokio::net::unix::OwnedReadHalf;
    type W = tokio::net::unix::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
}

/// A write half that may send file bytes straight from the page cache
/// (sendfile(2)) instead of reading them into the process first.
pub trait ZeroCopy {
    /// The socket underneath, when the bytes written are the bytes sent;
    /// None when they must pass through the process (a TLS session
    /// encrypts them).
    fn socket(&self) -> Option<Socket<'_>> {
        None
    }
}

/// A socket file bytes can be sent to with sendfile(2).
#[derive(Clone, Copy)]
pub enum Socket<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
}

impl ZeroCopy for tokio::net::tcp::OwnedWriteHalf {
    fn socket(&self) -> Option<Socket<'_>> {
        Some(Socket::Tcp(self.as_ref()))
    }
}

impl ZeroCopy for tokio::net::unix::OwnedWriteHalf {
    fn socket(&self) -> Option<Socket<'_>> {
        Some(Socket::Unix(self.as_ref()))
    }
}

/// A stream split by `tokio::io::split` (a TLS session; test streams).
impl<T> ZeroCopy for tokio::io::WriteHalf<T> {}

impl<'a> Socket<'a> {
    /// Sends up to `count` bytes of `file` from `offset` once the socket
    /// takes some; returns how many went (0: `offset` is at the end of the
    /// file). The call runs on the connection's own thread, through the
    /// runtime's readiness (as nginx does without aio): a socket that takes
    /// nothing is waited on until the runtime hears it is writable, and a
    /// wait is never lost to a readiness cleared after the news came. A
    /// file not in the page cache is read from disk during the call.
    pub async fn sendfile(self, file: &Arc<File>, offset: u64, count: usize) -> io::Result<usize> {
        let send = || sendfile(self.fd(), file, offset, count);
        loop {
            let r = match self {
                Socket::Tcp(s) => {
                    s.writable().await?;
                    s.try_io(Interest::WRITABLE, send)
                }
                Socket::Unix(s) => {
                    s.writable().await?;
                    s.try_io(Interest::WRITABLE, send)
                }
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    fn fd(self) -> BorrowedFd<'a> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

/// One sendfile(2) call on a non-blocking socket; EINTR is tried again.
fn sendfile(out: BorrowedFd<'_>, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: both descriptors are open for the call; `off` is a live
        // local the kernel updates.
        let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    /// Plain sockets take file bytes by sendfile; a stream split by
    /// `tokio::io::split` (how a TLS session is split) never does.
    #[tokio::test]
    async fn plain_sockets_send_files_split_streams_do_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (mut rd, _w) = client.expect("connect").into_split();
        let (_r, wr) = accepted.expect("accept").0.into_split();
        let Some(sock) = wr.socket() else {
            panic!("a TCP write half is a socket");
        };

        let path = std::env::temp_dir().join(format!("pagi-sendfile-{}", std::process::id()));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        File::create(&path)
            .and_then(|mut f| f.write_all(&data))
            .expect("fixture");
        let file = Arc::new(File::open(&path).expect("open"));
        let (off, len) = (1234usize, 200_000usize);
        let reader = tokio::spawn(async move {
            let mut got = vec![0; len];
            rd.read_exact(&mut got).await.map(|_| got)
        });
        let mut sent = 0;
        while sent < len {
            let n = sock
                .sendfile(&file, (off + sent) as u64, len - sent)
                .await
                .expect("sendfile");
            assert!(n > 0, "the file has these bytes");
            sent += n;
        }
        let got = reader.await.expect("join").expect("read");
        assert!(got == data[off..off + len], "the range arrives intact");
        // At the end of the file: nothing more.
        assert_eq!(
            sock.sendfile(&file, data.len() as u64, 10)
                .await
                .expect("eof"),
            0
        );
        let _ = std::fs::remove_file(&path);

        let (a, _b) = tokio::io::duplex(64);
        let (_r, w) = tokio::io::split(a);
        assert!(w.socket().is_none(), "split streams go through write");
    }
}
