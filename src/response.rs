//! The response body hyper pulls from: frames Perl queued through `send_*`.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

use crate::bridge::kind;
use crate::server::{Out, ReqShared, ServerCore};

#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response aborted by the application")
    }
}

impl std::error::Error for Aborted {}

pub struct RespBody {
    rx: mpsc::UnboundedReceiver<Out>,
    shared: Arc<ReqShared>,
    core: Arc<ServerCore>,
    done: bool,
}

impl RespBody {
    pub fn new(
        rx: mpsc::UnboundedReceiver<Out>,
        shared: Arc<ReqShared>,
        core: Arc<ServerCore>,
    ) -> RespBody {
        RespBody {
            rx,
            shared,
            core,
            done: false,
        }
    }

    /// hyper took `len` bytes: release Perl's pending `$send` at the low mark.
    fn taken(&self, len: usize) {
        let left = self.shared.buffered.fetch_sub(len, Ordering::SeqCst) - len;
        if left <= self.core.cfg.low_watermark
            && self.shared.want_drain.swap(false, Ordering::SeqCst)
        {
            self.core.bridge.push(kind::DRAIN, self.shared.id, |_| {});
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Out::Data(b))) => {
                self.taken(b.len());
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Out::Trailers(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Some(Out::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            // A dropped sender without End means the request was forgotten.
            Poll::Ready(Some(Out::Abort)) | Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(Aborted)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
