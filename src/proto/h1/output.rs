//! Writing a response on an HTTP/1.x connection: frames from Perl are
//! framed by `encode::Writer` into `Conn::out` and written in batches
//! (large ones written in place, see `WRITE_IN_PLACE`),
//! file bodies are read here (never through Perl), and a pending `$send` is
//! released once the bytes left the process.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::abi::level;
use crate::exchange::Exchange;
use crate::file_body::FileBody;
use crate::net::stream::ZeroCopy;
use crate::proto::h1::conn::Conn;
use crate::proto::h1::encode::{self, Writer};
use crate::server::Out;
use crate::stream_io::{sendfile_out, write_out_with, Stop};

/// Response bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// A regular file goes to sendfile(2) this many bytes at a time (one chunk
/// each when chunked).
const SENDFILE_PIECE: usize = 1 << 20;
/// A body frame at least this large is not copied into `Conn::out`: it is
/// written in place, in one vectored write with what is gathered and its
/// framing.
const WRITE_IN_PLACE: usize = 16 * 1024;

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + ZeroCopy + Unpin + Send> Conn<R, W> {
    /// Handles one response frame. `Ok(true)`: the response is complete.
    pub(crate) async fn frame(
        &mut self,
        f: Out,
        writer: Option<&mut Writer>,
        ex: &Exchange,
    ) -> Result<bool, Stop> {
        let Some(w) = writer else {
            return Err(Stop::Closed);
        };
        match f {
            Out::Data(d) => {
                self.unwritten += d.len();
                if d.len() < WRITE_IN_PLACE {
                    w.data(&mut self.out, &d);
                } else {
                    // Written from where it lies, after what is gathered.
                    let (n, suffix) = w.frame(&mut self.out, d.len());
                    self.flush_with(ex, [&d[..n], suffix]).await?;
                }
            }
            Out::Trailers(t) => w.trailers(&mut self.out, &t),
            Out::End => {
                w.end(&mut self.out);
                self.flush(ex).await?;
                return Ok(true);
            }
            Out::Abort => {
                // What the app sent before it failed still goes out, if the
                // client takes it soon.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.flush(ex)).await;
                return Err(Stop::Closed);
            }
            Out::File(body) => self.send_file(w, body, ex).await?,
            Out::Sse(s) => match self.sse.as_mut() {
                Some(st) => st.configure(s),
                None => self.sse = Some(crate::sse::Stream::new(s)),
            },
            // WebSocket frames only follow a 101.
            Out::WsMessage { .. } | Out::WsClose { .. } | Out::WsKeepalive { .. } => {}
        }
        if self.out.len() >= WRITE_BATCH {
            self.flush(ex).await?;
        }
        Ok(false)
    }

    /// Takes every frame already queued, then writes what was gathered.
    /// `Ok(true)`: the response is complete.
    pub(crate) async fn pump(
        &mut self,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Out>,
        mut writer: Option<&mut Writer>,
        ex: &Exchange,
    ) -> Result<bool, Stop> {
        while let Ok(f) = rx.try_recv() {
            if self.frame(f, writer.as_deref_mut(), ex).await? {
                return Ok(true);
            }
        }
        self.flush(ex).await?;
        Ok(false)
    }

    /// Writes what is gathered; the app's bytes in it stop counting as
    /// buffered once the socket took them. Each write may stall for
    /// `request_timeout`, or for an SSE request's idle limit if shorter.
    pub(crate) async fn flush(&mut self, ex: &Exchange) -> Result<(), Stop> {
        self.flush_with(ex, [&[], &[]]).await
    }

    /// As `flush`, with `tail` written after what is gathered.
    async fn flush_with(&mut self, ex: &Exchange, tail: [&[u8]; 2]) -> Result<(), Stop> {
        let (limit, idle) = self.idle.write_limit(self.core.cfg.request_timeout);
        match write_out_with(&mut self.wr, &mut self.out, tail, limit, &mut self.sd).await {
            Err(Stop::WriteStalled) if idle => return Err(self.sse_idle()),
            r => r?,
        }
        let app_bytes = std::mem::take(&mut self.unwritten);
        if app_bytes > 0 {
            self.idle.reset();
        }
        ex.written(app_bytes);
        Ok(())
    }

    /// Streams a file body, read here in pieces (it never passes through
    /// Perl); a regular file on a plain socket goes by sendfile(2).
    pub(crate) async fn send_file(
        &mut self,
        w: &mut Writer,
        mut body: FileBody,
        ex: &Exchange,
    ) -> Result<(), Stop> {
        self.flush(ex).await?;
        if w.framing == encode::Framing::None {
            return Ok(());
        }
        if zero_copy(&self.wr, &body) {
            return self.sendfile(w, body).await;
        }
        let mut piece = Vec::with_capacity(crate::file_body::PIECE);
        loop {
            piece = match body.next_piece(piece, &self.core.bridge).await {
                Some(p) if p.is_empty() => break,
                Some(p) => p,
                None => return Err(Stop::Closed),
            };
            w.data(&mut self.out, &piece);
            self.flush(ex).await?;
        }
        Ok(())
    }

    /// Sends a regular file by sendfile(2), in pieces of `SENDFILE_PIECE`
    /// (each a chunk when chunked), its bytes never read into the process.
    /// A file that ends before what it had when its piece began (it shrank
    /// meanwhile) closes the connection: that piece's framing is broken.
    async fn sendfile(&mut self, w: &mut Writer, mut body: FileBody) -> Result<(), Stop> {
        loop {
            let Some((file, pos, left)) = body.regular() else {
                return Err(Stop::Closed);
            };
            let file = file.clone();
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(SENDFILE_PIECE);
            // Nothing when the file is done or past a Content-Length.
            let (n, suffix) = w.frame(&mut self.out, want);
            if n == 0 {
                return Ok(());
            }
            let (limit, idle) = self.idle.write_limit(self.core.cfg.request_timeout);
            // The chunk header (and the last piece's CRLF) first.
            match write_out_with(&mut self.wr, &mut self.out, [&[], &[]], limit, &mut self.sd).await
            {
                Err(Stop::WriteStalled) if idle => return Err(self.sse_idle()),
                r => r?,
            }
            let Some(sock) = self.wr.socket() else {
                return Err(Stop::Closed);
            };
            let sent = match sendfile_out(sock, &file, pos, n, limit, &mut self.sd).await {
                Err(Stop::WriteStalled) if idle => return Err(self.sse_idle()),
                r => r?,
            };
            body.advance(sent as u64);
            if sent < n {
                self.core.bridge.log(
                    level::ERROR,
                    "PAGI::Server: the file body ended early (did it shrink?); closing the connection",
                );
                return Err(Stop::Closed);
            }
            self.out.extend_from_slice(suffix);
        }
    }
}

/// Whether a file body goes out by sendfile(2): a regular file, and a
/// socket whose bytes are the bytes sent (not a TLS session).
fn zero_copy<W: ZeroCopy>(wr: &W, body: &FileBody) -> bool {
    wr.socket().is_some() && body.regular().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    /// The path a file body takes: sendfile for a regular file on a plain
    /// socket, reads otherwise (a pipe; a TLS session, split like the
    /// duplex stream here).
    #[tokio::test]
    async fn sendfile_for_regular_files_on_plain_sockets_only() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (client, _accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let (_r, tcp) = client.expect("connect").into_split();
        let (a, _b) = tokio::io::duplex(64);
        let (_r, split) = tokio::io::split(a);

        let path = std::env::temp_dir().join(format!("pagi-zero-copy-{}", std::process::id()));
        File::create(&path).expect("fixture");
        let regular = || FileBody::new(File::open(&path).expect("open"), Some(0), None);
        let piped = || FileBody::new(File::open(&path).expect("open"), None, None);
        assert!(zero_copy(&tcp, &regular()));
        assert!(!zero_copy(&tcp, &piped()));
        assert!(!zero_copy(&split, &regular()));
        let _ = std::fs::remove_file(&path);
    }
}
