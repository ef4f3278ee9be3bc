//! The WebSocket (RFC 6455) wire format: server frames, the frame reader
//! with its close codes for each violation, and the HTTP/1.1 handshake answer.
//!
//! Frame headers are read and written with tungstenite's frame layer and the
//! accept key comes from its handshake helper; tungstenite's `WebSocket` is
//! not used because PAGI fixes the close code sent for each violation and
//! the disconnect reason the app sees.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Largest number of frames one fragmented message may span.
pub(crate) const MAX_FRAGMENTS: usize = 128;
/// Control frames carry at most this many payload bytes.
const MAX_CONTROL: u64 = 125;
/// Bytes reserved ahead for a frame still arriving.
pub(crate) const RESERVE_STEP: usize = 1 << 20;

/// Client payloads are XORed with their 4-byte mask (RFC 6455 section 5.3).
fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Writes the HTTP/1.1 handshake response that switches the connection over.
pub fn switching_protocols(out: &mut Vec<u8>, key: &[u8], headers: &[(Vec<u8>, Vec<u8>)]) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(tungstenite::handshake::derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // The three handshake fields above are the server's.
        let own = [&b"upgrade"[..], b"connection", b"sec-websocket-accept"];
        if own.iter().any(|o| name.eq_ignore_ascii_case(o)) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One unmasked, final frame from the server.
pub(crate) fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let head = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Formatting into a Vec cannot fail.
    let _ = head.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A close frame; the reason is cut to fit a control frame, on a character
/// boundary.
pub(crate) fn close_frame(out: &mut Vec<u8>, code: u16, reason: &[u8]) {
    let mut n = reason.len().min(MAX_CONTROL as usize - 2);
    while n > 0 && std::str::from_utf8(&reason[..n]).is_err() {
        n -= 1;
    }
    let mut payload = Vec::with_capacity(2 + n);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason[..n]);
    frame(out, OpCode::Control(Control::Close), &payload);
}

/// What a client frame (or fragmented message) amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Message {
        text: bool,
        data: Bytes,
    },
    Ping(Bytes),
    Pong,
    /// The peer's close code and reason; None when the frame had no payload.
    Close(Option<(u16, Bytes)>),
}

/// A client violation: the close frame sent and the app's disconnect reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Fail {
    pub code: u16,
    pub reason: &'static str,
    pub token: &'static str,
}

const fn protocol(reason: &'static str) -> Fail {
    Fail {
        code: 1002,
        reason,
        token: "protocol_error",
    }
}

pub(crate) const TOO_BIG: Fail = Fail {
    code: 1009,
    reason: "Message too big",
    token: "body_too_large",
};

pub(crate) const QUEUE_FULL: Fail = Fail {
    code: 1008,
    reason: "Message queue overflow",
    token: "queue_overflow",
};

const BAD_UTF8: Fail = Fail {
    code: 1007,
    reason: "Invalid UTF-8",
    token: "protocol_error",
};

struct Partial {
    text: bool,
    data: BytesMut,
    frames: usize,
}

/// Turns the bytes a client sends into events, frame by frame. Unmasked
/// frames are accepted, as the reference server accepts them.
pub struct Reader {
    /// Largest frame payload; 0 = unlimited.
    max_frame: u64,
    partial: Option<Partial>,
}

impl Reader {
    pub fn new(max_frame: u64) -> Reader {
        Reader {
            max_frame,
            partial: None,
        }
    }

    /// The next event in `buf` (consumed from it), or None until more bytes
    /// arrive.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Fail> {
        loop {
            let mut cur = Cursor::new(&buf[..]);
            let (head, len) = match FrameHeader::parse(&mut cur) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(protocol("Reserved opcode")),
            };
            let head_len = cur.position() as usize;
            if head.rsv1 || head.rsv2 || head.rsv3 {
                return Err(protocol("RSV bits must be 0"));
            }
            if let OpCode::Control(_) = head.opcode {
                if len > MAX_CONTROL {
                    return Err(protocol("Control frame too large"));
                }
                if !head.is_final {
                    return Err(protocol("Fragmented control frame"));
                }
            }
            if self.max_frame > 0 && len > self.max_frame {
                return Err(TOO_BIG);
            }
            let len = usize::try_from(len).map_err(|_| TOO_BIG)?;
            let Some(total) = head_len.checked_add(len) else {
                return Err(TOO_BIG);
            };
            if buf.len() < total {
                // Room for the rest of the frame, a step at a time: a claimed
                // length is not trusted with one huge allocation.
                buf.reserve((total - buf.len()).min(RESERVE_STEP));
                return Ok(None);
            }
            let _ = buf.split_to(head_len);
            let mut payload = buf.split_to(len);
            if let Some(mask) = head.mask {
                apply_mask(&mut payload, mask);
            }
            match head.opcode {
                OpCode::Control(Control::Ping) => return Ok(Some(Event::Ping(payload.freeze()))),
                OpCode::Control(Control::Pong) => return Ok(Some(Event::Pong)),
                OpCode::Control(Control::Close) => return close_event(payload.freeze()).map(Some),
                OpCode::Data(Data::Continue) => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(protocol("Unexpected continuation frame"));
                    };
                    p.frames += 1;
                    if p.frames > MAX_FRAGMENTS {
                        return Err(TOO_BIG);
                    }
                    p.data.extend_from_slice(&payload);
                    if head.is_final {
                        let p = self.partial.take().ok_or(TOO_BIG)?;
                        return message(p.text, p.data).map(Some);
                    }
                }
                OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                    if self.partial.is_some() {
                        return Err(protocol("Expected continuation frame"));
                    }
                    let text = d == Data::Text;
                    if head.is_final {
                        return message(text, payload).map(Some);
                    }
                    self.partial = Some(Partial {
                        text,
                        data: payload,
                        frames: 1,
                    });
                }
                _ => return Err(protocol("Reserved opcode")),
            }
        }
    }
}

fn message(text: bool, data: BytesMut) -> Result<Event, Fail> {
    if text && std::str::from_utf8(&data).is_err() {
        return Err(BAD_UTF8);
    }
    Ok(Event::Message {
        text,
        data: data.freeze(),
    })
}

/// RFC 6455 section 7.4 codes a peer may send (as the reference counts them).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

fn close_event(payload: Bytes) -> Result<Event, Fail> {
    match payload.len() {
        0 => Ok(Event::Close(None)),
        1 => Err(protocol("Invalid close frame")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(protocol("Invalid close code"));
            }
            let reason = payload.slice(2..);
            if std::str::from_utf8(&reason).is_err() {
                return Err(Fail {
                    reason: "Invalid UTF-8 in close reason",
                    ..BAD_UTF8
                });
            }
            Ok(Event::Close(Some((code, reason))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked when `mask` is given.
    fn client(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![first];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut p = payload.to_vec();
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            apply_mask(&mut p, k);
        }
        out.extend_from_slice(&p);
        out
    }

    fn read_all(bytes: &[u8], max: u64) -> Vec<Result<Event, Fail>> {
        let mut r = Reader::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match r.next(&mut buf) {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => return out,
                Err(f) => {
                    out.push(Err(f));
                    return out;
                }
            }
        }
    }

    fn text(s: &str) -> Result<Event, Fail> {
        Ok(Event::Message {
            text: true,
            data: Bytes::copy_from_slice(s.as_bytes()),
        })
    }

    #[test]
    fn reads_masked_and_unmasked_messages() {
        let mut wire = client(0x81, "héllo".as_bytes(), Some([1, 2, 3, 4]));
        wire.extend(client(0x82, &[0, 255, 7], None));
        let got = read_all(&wire, 65536);
        assert_eq!(got[0], text("héllo"));
        assert_eq!(
            got[1],
            Ok(Event::Message {
                text: false,
                data: Bytes::from_static(&[0, 255, 7])
            })
        );
    }

    #[test]
    fn waits_for_a_whole_frame() {
        let wire = client(0x81, b"abcdef", Some([9, 9, 9, 9]));
        let mut r = Reader::new(0);
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert_eq!(r.next(&mut buf), Ok(None));
        buf.extend_from_slice(&wire[wire.len() - 1..]);
        assert_eq!(r.next(&mut buf), text("abcdef").map(Some));
        assert!(buf.is_empty());
    }

    #[test]
    fn joins_fragments_around_control_frames() {
        let k = Some([5, 6, 7, 8]);
        let mut wire = client(0x01, b"ab", k);
        wire.extend(client(0x89, b"p", k));
        wire.extend(client(0x80, b"cd", k));
        let got = read_all(&wire, 3);
        assert_eq!(got[0], Ok(Event::Ping(Bytes::from_static(b"p"))));
        assert_eq!(got[1], text("abcd"));
    }

    #[test]
    fn refuses_protocol_violations() {
        let code = |wire: Vec<u8>| {
            read_all(&wire, 10)
                .pop()
                .map(|r| r.map_err(|f| (f.code, f.token)))
        };
        assert_eq!(
            code(client(0x83, b"", None)),
            Some(Err((1002, "protocol_error")))
        );
        assert_eq!(
            code(client(0xC1, b"x", None)),
            Some(Err((1002, "protocol_error")))
        );
        assert_eq!(
            code(client(0x89, &[0; 126], None)),
            Some(Err((1002, "protocol_error")))
        );
        assert_eq!(
            code(client(0x09, b"", None)),
            Some(Err((1002, "protocol_error")))
        );
        assert_eq!(
            code(client(0x80, b"x", None)),
            Some(Err((1002, "protocol_error")))
        );
        assert_eq!(
            code(client(0x81, &[0xff, 0xfe], None)),
            Some(Err((1007, "protocol_error")))
        );
        assert_eq!(
            code(client(0x81, &[b'a'; 11], None)),
            Some(Err((1009, "body_too_large")))
        );
        // A claimed 2^64-1 byte payload fails at once, with nothing allocated.
        let mut huge = vec![0x81, 0x7f];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(code(huge), Some(Err((1009, "body_too_large"))));
    }

    #[test]
    fn checks_close_frames() {
        let close = |p: &[u8]| read_all(&client(0x88, p, Some([1, 1, 1, 1])), 0).pop();
        assert_eq!(close(b""), Some(Ok(Event::Close(None))));
        let mut ok = 1000u16.to_be_bytes().to_vec();
        ok.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(
            close(&ok),
            Some(Ok(Event::Close(Some((
                1000,
                Bytes::from("bye ✓".as_bytes())
            )))))
        );
        assert_eq!(close(b"x").map(|r| r.map_err(|f| f.code)), Some(Err(1002)));
        assert_eq!(
            close(&1005u16.to_be_bytes()).map(|r| r.map_err(|f| f.code)),
            Some(Err(1002))
        );
        let mut bad = 4000u16.to_be_bytes().to_vec();
        bad.push(0xff);
        assert_eq!(close(&bad).map(|r| r.map_err(|f| f.code)), Some(Err(1007)));
    }

    #[test]
    fn writes_server_frames() {
        let mut out = Vec::new();
        frame(&mut out, OpCode::Data(Data::Text), b"hi");
        assert_eq!(out, b"\x81\x02hi");
        out.clear();
        close_frame(&mut out, 1000, "é".repeat(100).as_bytes());
        // 2 code bytes + 61 two-byte characters: never a split character.
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn answers_the_handshake() {
        let mut out = Vec::new();
        let hdrs = vec![
            (b"Sec-WebSocket-Protocol".to_vec(), b"chat".to_vec()),
            (b"connection".to_vec(), b"keep-alive".to_vec()),
        ];
        switching_protocols(&mut out, b"dGhlIHNhbXBsZSBub25jZQ==", &hdrs);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(!text.contains("keep-alive"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
