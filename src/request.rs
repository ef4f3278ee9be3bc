//! Turning a hyper request into a REQUEST record, and feeding its body to
//! Perl with a bounded window of unconsumed bytes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::request::Parts;
use http::Version;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::bridge::kind;
use crate::http1::Peer;
use crate::server::{ReqShared, ServerCore};

/// Request body bytes that may wait in Perl unconsumed before reading pauses.
const BODY_WINDOW: usize = 1 << 20;

/// Flags of a REQUEST record (shared with xs/Server.xs).
pub const F_BODY_EMPTY: u8 = 1;
pub const F_PATH_UTF8: u8 = 2;
pub const F_UNIX: u8 = 4;
/// `Accept: text/event-stream` and no WebSocket upgrade: an SSE scope.
pub const F_SSE: u8 = 8;

/// The spec's SSE detection: the Accept header names text/event-stream and
/// the request is not a WebSocket upgrade.
pub fn wants_sse(headers: &http::HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, needle: &[u8]| {
        headers.get_all(name).iter().any(|v| {
            v.as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        })
    };
    has(http::header::ACCEPT, b"text/event-stream") && !has(http::header::UPGRADE, b"websocket")
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

pub fn version_code(v: Version) -> u8 {
    match v {
        Version::HTTP_10 => 10,
        Version::HTTP_2 => 20,
        _ => 11,
    }
}

pub fn push_request(
    core: &ServerCore,
    shared: &ReqShared,
    parts: &Parts,
    peer: &Peer,
    body_empty: bool,
) {
    let raw_path = parts.uri.path().as_bytes();
    let query = parts.uri.query().unwrap_or("").as_bytes();
    let path = percent_decode(raw_path);
    let mut flags = 0;
    if body_empty {
        flags |= F_BODY_EMPTY;
    }
    if std::str::from_utf8(&path).is_ok() {
        flags |= F_PATH_UTF8;
    }
    if wants_sse(&parts.headers) {
        flags |= F_SSE;
    }
    let (client_host, client_port, server_host, server_port) = match peer {
        Peer::Tcp { client, server } => (
            client.ip().to_string(),
            client.port(),
            server.map(|s| s.ip().to_string()).unwrap_or_default(),
            server.map(|s| s.port()).unwrap_or(0),
        ),
        Peer::Unix { path } => {
            flags |= F_UNIX;
            (String::new(), 0, path.to_string(), 0)
        }
    };
    core.bridge.push(kind::REQUEST, shared.id, |w| {
        w.u8(version_code(parts.version))
            .u8(flags)
            .bytes(parts.method.as_str().as_bytes())
            .bytes(&path)
            .bytes(raw_path)
            .bytes(query)
            .bytes(client_host.as_bytes())
            .u16(client_port)
            .bytes(server_host.as_bytes())
            .u16(server_port)
            .u32(parts.headers.len() as u32);
        for (name, value) in parts.headers.iter() {
            w.bytes(name.as_str().as_bytes()).bytes(value.as_bytes());
        }
    });
}

/// Streams the request body to Perl as BODY records; the last has more=0.
pub async fn read_body(core: Arc<ServerCore>, shared: Arc<ReqShared>, mut body: Incoming) {
    loop {
        if shared.fin.load(Ordering::SeqCst) {
            return;
        }
        if shared.unacked.load(Ordering::SeqCst) >= BODY_WINDOW {
            shared.body_wake.notified().await;
            continue;
        }
        let frame = tokio::select! {
            f = body.frame() => f,
            // Woken by an ack or by the request ending: re-check above.
            _ = shared.body_wake.notified() => continue,
        };
        match frame {
            None => {
                core.bridge.push(kind::BODY, shared.id, |w| {
                    w.bytes(b"").u8(0);
                });
                return;
            }
            // The client went away mid-body. hyper keeps the connection
            // until the handler gives up, so report it here.
            Some(Err(_)) => {
                core.disconnected(&shared, "client_closed");
                return;
            }
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                let end = hyper::body::Body::is_end_stream(&body);
                if data.is_empty() && !end {
                    continue;
                }
                if !end {
                    shared.unacked.fetch_add(data.len(), Ordering::SeqCst);
                }
                core.bridge.push(kind::BODY, shared.id, |w| {
                    w.bytes(&data).u8(u8::from(!end));
                });
                if end {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_sse_requests() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_sse(&h));
        h.insert(
            http::header::ACCEPT,
            "text/html, Text/Event-Stream".parse().expect("value"),
        );
        assert!(wants_sse(&h));
        h.insert(http::header::UPGRADE, "WebSocket".parse().expect("value"));
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
