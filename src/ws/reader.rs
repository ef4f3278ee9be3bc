//! The client's frames (RFC 6455 section 5), read as their bytes arrive:
//! a data frame's payload is taken piece by piece, so a text message that
//! stops being UTF-8 is refused at the byte where it stops, not when its
//! frame or message ends, and a message's size is judged by its bytes,
//! however many frames carry it. Compressed messages (RFC 7692) are
//! inflated as they arrive, never past the message limit.
//!
//! Frame headers are read with tungstenite's frame layer.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::codec::{close_event, protocol, Event, Fail, BAD_UTF8, MAX_CONTROL, TOO_BIG};
use super::deflate::{Decompressor, InflateError};

/// Client payloads are XORed with their 4-byte mask (RFC 6455 section
/// 5.3); `at` is the offset of `payload` in its frame's payload.
pub(crate) fn apply_mask(payload: &mut [u8], mask: [u8; 4], at: usize) {
    let m: [u8; 4] = std::array::from_fn(|i| mask[(at + i) & 3]);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// Checks the bytes of a text message past `*checked`; a character still
/// cut off at the end is left for the bytes that follow.
fn check_utf8(data: &[u8], checked: &mut usize) -> Result<(), Fail> {
    let rest = data.get(*checked..).unwrap_or_default();
    match std::str::from_utf8(rest) {
        Ok(_) => *checked = data.len(),
        Err(e) if e.error_len().is_none() => *checked += e.valid_up_to(),
        Err(_) => return Err(BAD_UTF8),
    }
    Ok(())
}

fn inflate_fail(e: InflateError) -> Fail {
    match e {
        InflateError::TooBig => TOO_BIG,
        InflateError::Corrupt => protocol("Invalid compressed data"),
    }
}

/// A data frame whose payload is still arriving.
struct Payload {
    mask: [u8; 4],
    /// Payload bytes taken so far (the mask's phase).
    at: usize,
    left: u64,
    fin: bool,
}

/// The message being put together.
struct Message {
    text: bool,
    compressed: bool,
    /// The message's bytes so far (inflated when compressed).
    data: Vec<u8>,
    /// Payload bytes came (a compressed message with none is empty).
    fed: bool,
    /// How much of `data` is known to be whole UTF-8 characters.
    checked: usize,
}

/// What taking a payload came to.
enum Took {
    /// Its bytes are not all here yet.
    Wait,
    /// The frame is complete; the message goes on.
    Frame,
    Message(Event),
}

/// Turns the bytes a client sends into events.
pub(crate) struct Reader {
    /// Largest frame payload; 0 = unlimited.
    max_frame: u64,
    /// Largest message, inflated; `usize::MAX` = unlimited.
    max_message: usize,
    /// permessage-deflate was agreed: RSV1 marks a compressed message.
    deflate: bool,
    inflater: Option<Decompressor>,
    payload: Option<Payload>,
    message: Option<Message>,
}

impl Reader {
    /// A reader with the session's limits (0 = unlimited); `deflate`: the
    /// handshake agreed to permessage-deflate.
    pub(crate) fn new(max_frame: u64, max_message: u64, deflate: bool) -> Reader {
        Reader {
            max_frame,
            max_message: match usize::try_from(max_message) {
                Ok(0) | Err(_) => usize::MAX,
                Ok(n) => n,
            },
            deflate,
            inflater: None,
            payload: None,
            message: None,
        }
    }

    /// The next event in `buf` (what it used is taken from it), or None
    /// until more bytes arrive.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Fail> {
        loop {
            if self.payload.is_some() {
                match self.take_payload(buf)? {
                    Took::Wait => return Ok(None),
                    Took::Frame => continue,
                    Took::Message(ev) => return Ok(Some(ev)),
                }
            }
            let mut cur = Cursor::new(&buf[..]);
            let (head, len) = match FrameHeader::parse(&mut cur) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(protocol("Reserved opcode")),
            };
            let head_len = usize::try_from(cur.position()).map_err(|_| TOO_BIG)?;
            let mask = self.check(&head, len)?;
            let len_usize = usize::try_from(len).map_err(|_| TOO_BIG)?;
            let whole = buf.len() - head_len >= len_usize;
            match head.opcode {
                OpCode::Control(c) => {
                    // At most 125 bytes: taken whole.
                    if !whole {
                        return Ok(None);
                    }
                    let _ = buf.split_to(head_len);
                    let mut p = buf.split_to(len_usize);
                    apply_mask(&mut p, mask, 0);
                    return match c {
                        Control::Ping => Ok(Some(Event::Ping(p.freeze()))),
                        Control::Pong => Ok(Some(Event::Pong)),
                        Control::Close => close_event(p.freeze()).map(Some),
                        Control::Reserved(_) => Err(protocol("Reserved opcode")),
                    };
                }
                OpCode::Data(d) => {
                    let text = d == Data::Text;
                    if whole && head.is_final && !head.rsv1 && d != Data::Continue {
                        // The usual case, a whole message in one frame that
                        // is all here: its bytes are handed on as they are.
                        let _ = buf.split_to(head_len);
                        let mut p = buf.split_to(len_usize);
                        apply_mask(&mut p, mask, 0);
                        if text && std::str::from_utf8(&p).is_err() {
                            return Err(BAD_UTF8);
                        }
                        return Ok(Some(Event::Message {
                            text,
                            data: p.freeze(),
                        }));
                    }
                    let _ = buf.split_to(head_len);
                    if d != Data::Continue {
                        self.message = Some(Message {
                            text,
                            compressed: head.rsv1,
                            data: Vec::new(),
                            fed: false,
                            checked: 0,
                        });
                    }
                    self.payload = Some(Payload {
                        mask,
                        at: 0,
                        left: len,
                        fin: head.is_final,
                    });
                }
            }
        }
    }

    /// Checks a frame header against the protocol and the limits; the
    /// frame's mask when it may be read.
    fn check(&self, head: &FrameHeader, len: u64) -> Result<[u8; 4], Fail> {
        if head.rsv2 || head.rsv3 {
            return Err(protocol("RSV bits must be 0"));
        }
        let Some(mask) = head.mask else {
            return Err(protocol("Client frame not masked"));
        };
        // RFC 6455 section 5.2: the most significant bit must be 0.
        if len >> 63 != 0 {
            return Err(protocol("Invalid frame length"));
        }
        let mut so_far = 0;
        match head.opcode {
            OpCode::Control(_) => {
                if head.rsv1 {
                    return Err(protocol("RSV bits must be 0"));
                }
                if len > MAX_CONTROL {
                    return Err(protocol("Control frame too large"));
                }
                if !head.is_final {
                    return Err(protocol("Fragmented control frame"));
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(m) = self.message.as_ref() else {
                    return Err(protocol("Unexpected continuation frame"));
                };
                if head.rsv1 {
                    return Err(protocol("RSV1 set on a continuation frame"));
                }
                if !m.compressed {
                    so_far = m.data.len();
                }
            }
            OpCode::Data(_) => {
                if head.rsv1 && !self.deflate {
                    return Err(protocol("RSV bits must be 0"));
                }
                if self.message.is_some() {
                    return Err(protocol("Expected continuation frame"));
                }
            }
        }
        if self.max_frame > 0 && len > self.max_frame {
            return Err(TOO_BIG);
        }
        // A compressed message is judged by what it inflates to.
        let judged = match head.opcode {
            OpCode::Data(Data::Continue) => self.message.as_ref().is_some_and(|m| !m.compressed),
            OpCode::Data(_) => !head.rsv1,
            OpCode::Control(_) => false,
        };
        if judged && (so_far as u64).saturating_add(len) > self.max_message as u64 {
            return Err(TOO_BIG);
        }
        Ok(mask)
    }

    /// Takes what is here of the payload in progress.
    fn take_payload(&mut self, buf: &mut BytesMut) -> Result<Took, Fail> {
        let Some(p) = self.payload.as_mut() else {
            return Ok(Took::Frame);
        };
        let n = usize::try_from(p.left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 && p.left > 0 {
            return Ok(Took::Wait);
        }
        let mut chunk = buf.split_to(n);
        apply_mask(&mut chunk, p.mask, p.at);
        p.at += n;
        p.left -= n as u64;
        let (done, fin) = (p.left == 0, p.fin);
        if done {
            self.payload = None;
        }
        self.append(&chunk)?;
        if !done {
            return Ok(Took::Wait);
        }
        if !fin {
            return Ok(Took::Frame);
        }
        self.finish().map(Took::Message)
    }

    /// Adds payload bytes to the message, inflated when it is compressed.
    fn append(&mut self, chunk: &[u8]) -> Result<(), Fail> {
        let Some(m) = self.message.as_mut() else {
            return Err(protocol("Unexpected continuation frame"));
        };
        m.fed |= !chunk.is_empty();
        if m.compressed {
            self.inflater
                .get_or_insert_with(Decompressor::new)
                .inflate(chunk, &mut m.data, self.max_message)
                .map_err(inflate_fail)?;
        } else {
            m.data.extend_from_slice(chunk);
        }
        if m.text {
            check_utf8(&m.data, &mut m.checked)?;
        }
        Ok(())
    }

    /// The message is complete.
    fn finish(&mut self) -> Result<Event, Fail> {
        let Some(mut m) = self.message.take() else {
            return Err(protocol("Unexpected continuation frame"));
        };
        // A compressed message with no payload at all is empty: a sender
        // whose compressor made nothing of it had nothing to strip.
        if m.compressed && m.fed {
            self.inflater
                .get_or_insert_with(Decompressor::new)
                .finish(&mut m.data, self.max_message)
                .map_err(inflate_fail)?;
        }
        if m.text {
            check_utf8(&m.data, &mut m.checked)?;
            // A character cut off at the very end.
            if m.checked != m.data.len() {
                return Err(BAD_UTF8);
            }
        }
        Ok(Event::Message {
            text: m.text,
            data: Bytes::from(m.data),
        })
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
