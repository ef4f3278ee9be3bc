//! Turning a parsed request head into a REQUEST record for Perl.

use crate::abi::kind;
use crate::abi::req_flag::{BODY_EMPTY, EXPECT, PATH_UTF8, SSE, UNIX, WEBSOCKET};
use crate::head::Head;
use crate::net::peer::Peer;
use crate::server::{ReqShared, ServerCore};

/// Request body bytes that may wait in Perl unconsumed before reading pauses.
pub const BODY_WINDOW: usize = 1 << 20;

/// The spec's SSE detection: the Accept header names text/event-stream and
/// the request is not a WebSocket upgrade.
pub fn wants_sse(headers: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let has = |name: &[u8], needle: &[u8]| {
        headers.iter().any(|(n, v)| {
            n == name
                && v.windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
        })
    };
    has(b"accept", b"text/event-stream") && !has(b"upgrade", b"websocket")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `%XX` sequences; malformed ones are kept literally and
/// `+` stays `+` (it is not a space in a path).
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// `websocket`: the request is a WebSocket upgrade (`Head::websocket_key`).
pub fn push_request(
    core: &ServerCore,
    shared: &ReqShared,
    head: &Head,
    peer: &Peer,
    websocket: bool,
) {
    let path = percent_decode(&head.raw_path);
    let mut flags = 0;
    if head.framing.is_empty() {
        flags |= BODY_EMPTY;
    } else if head.expect_continue {
        flags |= EXPECT;
    }
    if std::str::from_utf8(&path).is_ok() {
        flags |= PATH_UTF8;
    }
    if websocket {
        flags |= WEBSOCKET;
    } else if wants_sse(&head.headers) {
        flags |= SSE;
    }
    let (client_host, client_port, server_host, server_port) = match peer {
        Peer::Tcp { client, server } => (
            client.ip().to_string(),
            client.port(),
            server.map(|s| s.ip().to_string()).unwrap_or_default(),
            server.map(|s| s.port()).unwrap_or(0),
        ),
        Peer::Unix { path } => {
            flags |= UNIX;
            (String::new(), 0, path.to_string(), 0)
        }
    };
    core.bridge.push(kind::REQUEST, shared.id, |w| {
        w.u8(head.version)
            .u8(flags)
            .bytes(head.method.as_bytes())
            .bytes(&path)
            .bytes(&head.raw_path)
            .bytes(&head.query)
            .bytes(client_host.as_bytes())
            .u16(client_port)
            .bytes(server_host.as_bytes())
            .u16(server_port)
            .len(head.headers.len());
        for (name, value) in &head.headers {
            w.bytes(name).bytes(value);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_sse_requests() {
        let mut h = vec![(b"accept".to_vec(), b"text/html".to_vec())];
        assert!(!wants_sse(&h));
        h.push((b"accept".to_vec(), b"Text/Event-Stream".to_vec()));
        assert!(wants_sse(&h));
        h.push((b"upgrade".to_vec(), b"WebSocket".to_vec()));
        assert!(!wants_sse(&h));
    }

    #[test]
    fn decodes_percent_sequences_only() {
        assert_eq!(percent_decode(b"/caf%C3%A9/x%20y"), "/café/x y".as_bytes());
        assert_eq!(percent_decode(b"/a+b"), b"/a+b");
        assert_eq!(percent_decode(b"/bad%FF"), b"/bad\xff");
        assert_eq!(percent_decode(b"/trail%2"), b"/trail%2");
        assert_eq!(percent_decode(b"/x%zz%"), b"/x%zz%");
        assert_eq!(percent_decode(b"%41"), b"A");
    }
}
