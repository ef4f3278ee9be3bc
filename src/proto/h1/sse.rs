//! SSE streams on an HTTP/1.x connection: writing a due keepalive comment,
//! ending the stream at a graceful shutdown, and closing an idle one.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::exchange::Exchange;
use crate::net::stream::ZeroCopy;
use crate::proto::h1::conn::Conn;
use crate::proto::h1::encode::Writer;
use crate::stream_io::Stop;

impl<R: AsyncRead + Unpin + Send, W: AsyncWrite + ZeroCopy + Unpin + Send> Conn<R, W> {
    /// Writes a due keepalive comment. It is the server's own traffic, so
    /// it does not count against the app's watermarks.
    pub(crate) async fn sse_keepalive(
        &mut self,
        writer: Option<&mut Writer>,
        ex: &Exchange,
    ) -> Result<(), Stop> {
        let (Some(w), Some(st)) = (writer, self.sse.as_mut()) else {
            return Ok(());
        };
        if let Some(frame) = st.tick(Instant::now()) {
            w.data(&mut self.out, &frame);
            self.flush(ex).await?;
        }
        Ok(())
    }

    /// The request's idle clock ran out (see `crate::sse`): the connection
    /// is closed without the terminating chunk, so that the client sees an
    /// incomplete response rather than a stream the app ended.
    pub(crate) fn sse_idle(&self) -> Stop {
        let secs = self.idle.limit().map_or(0.0, |d| d.as_secs_f64());
        self.core.bridge.log(
            crate::abi::level::WARN,
            &format!("SSE idle timeout ({secs}s) - closing connection"),
        );
        Stop::Idle
    }

    /// The server is shutting down: the stream ends properly (terminating
    /// chunk) and the app sees a disconnect with reason `server_shutdown`,
    /// as a WebSocket gets close code 1001.
    pub(crate) async fn sse_going_away(
        &mut self,
        writer: Option<&mut Writer>,
        ex: &Exchange,
    ) -> Stop {
        self.sse = None;
        if let Some(w) = writer {
            w.end(&mut self.out);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.flush(ex)).await;
        Stop::Shutdown
    }
}
