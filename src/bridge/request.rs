//! Turning a protocol-neutral request head into a REQUEST record for Perl
//! (and into the facts its access-log line needs).

use std::time::Instant;

use crate::abi::kind;
use crate::abi::req_flag::{BODY_EMPTY, EXPECT, PATH_UTF8, SSE, TLS, UNIX, WEBSOCKET};
use crate::access_log::LogInfo;
use crate::bridge::queue::RecordWriter;
use crate::exchange::{BodyHint, RequestHead};
use crate::net::peer::Peer;
use crate::server::{ReqShared, ServerCore};

/// Request body bytes that may wait in Perl unconsumed before reading pauses.
pub const BODY_WINDOW: usize = 1 << 20;

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

/// The access-log facts of a request (the response fills in the rest).
pub fn log_info(core: &ServerCore, head: &RequestHead, peer: &Peer) -> LogInfo {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    LogInfo {
        client: peer.log_host(),
        method: head.method.clone(),
        path: text(&head.path),
        query: text(&head.query),
        version: head.version.as_str().into(),
        headers: core
            .cfg
            .log_format
            .headers
            .iter()
            .map(|name| {
                let lower = name.to_ascii_lowercase();
                head.header(lower.as_bytes()).map(text)
            })
            .collect(),
        start: Instant::now(),
        status: 0,
        bytes: 0,
    }
}

/// The one encoder of REQUEST records: what Perl builds the scope from.
/// An `authority` (HTTP/2) takes the place of any `host` header, or is
/// added as one.
pub fn push_request(core: &ServerCore, shared: &ReqShared, head: &RequestHead, peer: &Peer) {
    core.bridge
        .push(kind::REQUEST, shared.id, request_record(head, peer));
}

/// The REQUEST record's fields (the layout `build_scope` in xs/Server.xs
/// reads), prepared before the bridge's lock is taken to write them.
fn request_record<'a>(
    head: &'a RequestHead,
    peer: &'a Peer,
) -> impl FnOnce(&mut RecordWriter<'_>) + 'a {
    let path = percent_decode(&head.path);
    let websocket = head.is_websocket();
    let mut flags = 0;
    if head.body == BodyHint::None {
        flags |= BODY_EMPTY;
    } else if head.expect_continue {
        flags |= EXPECT;
    }
    if std::str::from_utf8(&path).is_ok() {
        flags |= PATH_UTF8;
    }
    if websocket {
        flags |= WEBSOCKET;
    } else if head.is_sse() {
        flags |= SSE;
    }
    let (client_host, client_port, server_host, server_port) = match peer {
        Peer::Tcp { client, server, .. } => (
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
    // Borrowed: the connection's facts are read, never copied, per request.
    let tls = peer.tls();
    if tls.is_some() {
        flags |= TLS;
    }
    let authority = head.authority.as_deref();
    let added_host = authority.is_some() && head.header(b"host").is_none();
    move |w| {
        w.u8(head.version.code())
            .u8(flags)
            .bytes(head.scheme.scope_name(websocket).as_bytes())
            .bytes(head.method.as_bytes())
            .bytes(&path)
            .bytes(&head.path)
            .bytes(&head.query)
            .bytes(client_host.as_bytes())
            .u16(client_port)
            .bytes(server_host.as_bytes())
            .u16(server_port)
            .len(head.headers.len() + usize::from(added_host));
        for (name, value) in &head.headers {
            let value = match authority {
                Some(a) if name == b"host" => a,
                _ => value,
            };
            w.bytes(name).bytes(value);
        }
        if let (true, Some(a)) = (added_host, authority) {
            w.bytes(b"host").bytes(a);
        }
        if let Some(t) = tls {
            w.u16(t.version)
                .u16(t.cipher)
                .bytes(t.server_cert.as_bytes())
                .u8(u8::from(t.client_name.is_some()))
                .bytes(t.client_name.as_deref().unwrap_or("").as_bytes())
                .len(t.client_chain.len());
            for c in &t.client_chain {
                w.bytes(c.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Scheme, Upgrade, Version};

    /// A REQUEST record read back as XS reads it.
    struct Record {
        version: u8,
        flags: u8,
        /// Scheme, method, path, raw path, query, client host, server host.
        texts: Vec<Vec<u8>>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    }

    struct Cursor<'a>(&'a [u8]);

    impl Cursor<'_> {
        fn take(&mut self, len: usize) -> Vec<u8> {
            let (head, tail) = self.0.split_at(len);
            self.0 = tail;
            head.to_vec()
        }
        fn len(&mut self) -> usize {
            let n = u64::from_ne_bytes(self.take(8).try_into().expect("8 bytes"));
            usize::try_from(n).expect("a short length")
        }
        fn bytes(&mut self) -> Vec<u8> {
            let n = self.len();
            self.take(n)
        }
    }

    fn read_back(buf: &[u8]) -> Record {
        let mut c = Cursor(buf);
        let (version, flags) = (c.take(1)[0], c.take(1)[0]);
        let mut texts: Vec<_> = (0..6).map(|_| c.bytes()).collect();
        c.take(2); // client port
        texts.push(c.bytes());
        c.take(2); // server port
        let headers = (0..c.len()).map(|_| (c.bytes(), c.bytes())).collect();
        assert!(c.0.is_empty(), "{} bytes left over", c.0.len());
        Record {
            version,
            flags,
            texts,
            headers,
        }
    }

    fn head() -> RequestHead {
        RequestHead {
            method: "POST".into(),
            scheme: Scheme::Http,
            authority: None,
            path: b"/a%20b".to_vec(),
            query: b"q=1".to_vec(),
            version: Version::Http11,
            headers: vec![(b"host".to_vec(), b"h".to_vec())],
            body: BodyHint::Chunked,
            expect_continue: true,
            upgrade: None,
        }
    }

    fn record(head: &RequestHead) -> Record {
        let peer = Peer::Unix {
            path: "/tmp/s".into(),
        };
        let mut buf = Vec::new();
        request_record(head, &peer)(&mut RecordWriter::over(&mut buf));
        read_back(&buf)
    }

    #[test]
    fn encodes_the_request_record() {
        let r = record(&head());
        assert_eq!((r.version, r.flags), (11, EXPECT | PATH_UTF8 | UNIX));
        let want: [&[u8]; 7] = [b"http", b"POST", b"/a b", b"/a%20b", b"q=1", b"", b"/tmp/s"];
        assert_eq!(r.texts, want);
        assert_eq!(r.headers, vec![(b"host".to_vec(), b"h".to_vec())]);
        let mut ws = head();
        ws.upgrade = Some(Upgrade::WebSocket { key: b"k".to_vec() });
        ws.body = BodyHint::None;
        let r = record(&ws);
        assert_eq!(r.flags, BODY_EMPTY | PATH_UTF8 | UNIX | WEBSOCKET);
        assert_eq!(r.texts[0], b"ws");
    }

    #[test]
    fn an_authority_becomes_the_host_header() {
        let mut h = head();
        h.authority = Some(b"example.test".to_vec());
        let host = (b"host".to_vec(), b"example.test".to_vec());
        assert_eq!(record(&h).headers, vec![host.clone()]);
        h.headers = vec![(b"x".to_vec(), b"y".to_vec())];
        assert_eq!(
            record(&h).headers,
            vec![(b"x".to_vec(), b"y".to_vec()), host]
        );
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
