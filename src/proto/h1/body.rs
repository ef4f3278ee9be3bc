//! The framing of an HTTP/1.x request body as it comes off the wire
//! (Content-Length or chunked), taken piece by piece from the read buffer.

use bytes::{Bytes, BytesMut};

use crate::proto::h1::chunked::{Decoder, Step};
use crate::proto::h1::parse::{Framing, Reject};

/// Largest single chunk of a chunked request body.
const MAX_CHUNK: u64 = 10 * 1024 * 1024;

/// The request body still to come off the wire.
pub(crate) enum BodyIn {
    Length(u64),
    Chunked(Decoder),
    Done,
}

impl BodyIn {
    /// The body a request head announces.
    pub(crate) fn new(framing: Framing) -> BodyIn {
        match framing {
            Framing::Length(0) => BodyIn::Done,
            Framing::Length(n) => BodyIn::Length(n),
            Framing::Chunked => BodyIn::Chunked(Decoder::new(MAX_CHUNK)),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, BodyIn::Done)
    }

    /// The next piece of body from `buf`, with whether more follows.
    pub(crate) fn take(&mut self, buf: &mut BytesMut) -> Result<Option<(Bytes, bool)>, Reject> {
        match self {
            BodyIn::Done => Ok(None),
            BodyIn::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                *left -= n as u64;
                let more = *left > 0;
                if !more {
                    *self = BodyIn::Done;
                }
                Ok(Some((data, more)))
            }
            BodyIn::Chunked(d) => match d.step(buf)? {
                Step::Data(data) => Ok(Some((data, true))),
                Step::More => Ok(None),
                Step::Done => {
                    *self = BodyIn::Done;
                    Ok(Some((Bytes::new(), false)))
                }
            },
        }
    }
}
