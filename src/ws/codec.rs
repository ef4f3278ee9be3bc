//! The WebSocket (RFC 6455) wire format: server frames, what a client's
//! frames amount to (`Event`) with the close code for each violation
//! (`Fail`), and the HTTP/1.1 handshake answer. The client's frames are
//! read by `reader`.
//!
//! Frame headers are written with tungstenite's frame layer and the accept
//! key comes from its handshake helper; tungstenite's `WebSocket` is not
//! used because PAGI fixes the close code sent for each violation and the
//! disconnect reason the app sees.

use bytes::Bytes;
use tungstenite::protocol::frame::coding::{Control, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Control frames carry at most this many payload bytes.
pub(crate) const MAX_CONTROL: u64 = 125;

/// Header fields of a handshake answer that are the server's own: the
/// app's are dropped.
pub(crate) fn server_owned(name: &[u8]) -> bool {
    let own = [
        &b"upgrade"[..],
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
    ];
    own.iter().any(|o| name.eq_ignore_ascii_case(o))
}

/// Writes the HTTP/1.1 handshake response that switches the connection
/// over; `extensions`: the agreed `Sec-WebSocket-Extensions` value.
pub fn switching_protocols(
    out: &mut Vec<u8>,
    key: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(tungstenite::handshake::derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ext) = extensions {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(ext.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if server_owned(name) {
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
    frame_rsv1(out, opcode, payload, false);
}

/// One unmasked, final frame from the server; `rsv1`: a compressed
/// message (RFC 7692).
pub(crate) fn frame_rsv1(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], rsv1: bool) {
    let head = FrameHeader {
        opcode,
        rsv1,
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
    /// A whole message (inflated when it came compressed).
    Message {
        text: bool,
        data: Bytes,
    },
    /// A ping, with its payload for the pong.
    Ping(Bytes),
    Pong,
    /// The peer's close code and reason; None when the frame had no payload.
    Close(Option<(u16, Bytes)>),
}

/// A client violation: the close frame sent and the app's disconnect reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Fail {
    /// The close code sent.
    pub code: u16,
    /// The close frame's reason.
    pub reason: &'static str,
    /// The disconnect reason the app sees.
    pub token: &'static str,
}

/// A framing violation (1002), with the close frame's reason.
pub(crate) const fn protocol(reason: &'static str) -> Fail {
    Fail {
        code: 1002,
        reason,
        token: "protocol_error",
    }
}

/// A frame or message over its limit.
pub(crate) const TOO_BIG: Fail = Fail {
    code: 1009,
    reason: "Message too big",
    token: "body_too_large",
};

/// More messages waiting for the app than `max_receive_queue`.
pub(crate) const QUEUE_FULL: Fail = Fail {
    code: 1008,
    reason: "Message queue overflow",
    token: "queue_overflow",
};

/// Text (or a close reason) that is not UTF-8.
pub(crate) const BAD_UTF8: Fail = Fail {
    code: 1007,
    reason: "Invalid UTF-8",
    token: "protocol_error",
};

/// RFC 6455 section 7.4 codes a peer may send (as the reference counts them).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// What a client's close frame (unmasked `payload`) amounts to.
pub(crate) fn close_event(payload: Bytes) -> Result<Event, Fail> {
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
    use tungstenite::protocol::frame::coding::Data;

    #[test]
    fn writes_server_frames() {
        let mut out = Vec::new();
        frame(&mut out, OpCode::Data(Data::Text), b"hi");
        assert_eq!(out, b"\x81\x02hi");
        out.clear();
        frame_rsv1(&mut out, OpCode::Data(Data::Binary), b"z", true);
        assert_eq!(out, b"\xc2\x01z");
        out.clear();
        close_frame(&mut out, 1000, "é".repeat(100).as_bytes());
        // 2 code bytes + 61 two-byte characters: never a split character.
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn checks_close_payloads() {
        assert_eq!(close_event(Bytes::new()), Ok(Event::Close(None)));
        let mut ok = 1000u16.to_be_bytes().to_vec();
        ok.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(
            close_event(Bytes::from(ok)),
            Ok(Event::Close(Some((1000, Bytes::from("bye ✓".as_bytes())))))
        );
        let code = |p: &[u8]| close_event(Bytes::copy_from_slice(p)).map_err(|f| f.code);
        assert_eq!(code(b"x"), Err(1002));
        assert_eq!(code(&1005u16.to_be_bytes()), Err(1002));
        assert_eq!(code(&[0x0f, 0xa0, 0xff]), Err(1007));
    }

    #[test]
    fn answers_the_handshake() {
        let mut out = Vec::new();
        let hdrs = vec![
            (b"Sec-WebSocket-Protocol".to_vec(), b"chat".to_vec()),
            (b"connection".to_vec(), b"keep-alive".to_vec()),
            (b"Sec-WebSocket-Extensions".to_vec(), b"x-app-own".to_vec()),
        ];
        switching_protocols(
            &mut out,
            b"dGhlIHNhbXBsZSBub25jZQ==",
            &hdrs,
            Some("permessage-deflate"),
        );
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
        assert!(!text.contains("keep-alive"));
        assert!(
            !text.contains("x-app-own"),
            "the server owns the extensions field"
        );
        assert!(text.ends_with("\r\n\r\n"));
    }
}
