//! The seam between protocol modules and the bridge: the protocol-neutral
//! request head that HTTP/1 (and next HTTP/2) produce, from which the one
//! REQUEST record encoder (`request::push_request`) builds what Perl sees,
//! and the `Exchange` handle a protocol holds for each request.

mod handle;

pub(crate) use handle::{Exchange, Replies};

/// The URL scheme a request arrived under (a fact of its connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// Over TLS.
    Https,
}

impl Scheme {
    /// The scope's `scheme`: `http`/`https`, or `ws`/`wss` for a WebSocket.
    pub fn scope_name(self, websocket: bool) -> &'static str {
        match (self, websocket) {
            (Scheme::Http, false) => "http",
            (Scheme::Https, false) => "https",
            (Scheme::Http, true) => "ws",
            (Scheme::Https, true) => "wss",
        }
    }
}

/// The HTTP version a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    #[allow(dead_code)] // the HTTP/2 module produces it (issue #9)
    Http2,
}

impl Version {
    /// The number the REQUEST record carries (10, 11, 20).
    pub fn code(self) -> u8 {
        match self {
            Version::Http10 => 10,
            Version::Http11 => 11,
            Version::Http2 => 20,
        }
    }

    /// As the scope's `http_version` and the access log spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
            Version::Http2 => "2",
        }
    }
}

/// What the head says about the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHint {
    /// No body at all.
    None,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// HTTP/1.1 chunked: the length is known only at its end.
    Chunked,
    /// A body of unannounced length (an HTTP/2 stream without
    /// content-length, ended by END_STREAM).
    #[allow(dead_code)] // the HTTP/2 module produces it (issue #9)
    Unknown,
}

/// A protocol switch the client asked for in its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// A WebSocket handshake; the app answers it.
    WebSocket {
        /// The client's `Sec-WebSocket-Key` (HTTP/1.1; an RFC 8441 stream
        /// has none and leaves it empty).
        key: Vec<u8>,
    },
}

/// One request head, whatever protocol carried it.
#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub scheme: Scheme,
    /// The target's authority when the protocol carries it apart from the
    /// header fields (HTTP/2 `:authority`); it reaches Perl as the `host`
    /// header. `None` on HTTP/1, whose Host stays among `headers`.
    pub authority: Option<Vec<u8>>,
    /// The path as sent (still percent-encoded), never empty.
    pub path: Vec<u8>,
    /// What followed `?`, without it.
    pub query: Vec<u8>,
    pub version: Version,
    /// Lower-cased names, in wire order; several Cookie lines are one.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: BodyHint,
    /// The client waits for a go-ahead before sending the body.
    pub expect_continue: bool,
    pub upgrade: Option<Upgrade>,
}

impl RequestHead {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether this is a WebSocket handshake.
    pub fn is_websocket(&self) -> bool {
        matches!(self.upgrade, Some(Upgrade::WebSocket { .. }))
    }

    /// The spec's SSE detection: an `Accept` header names
    /// text/event-stream and the request is no WebSocket upgrade (nor
    /// names one in an `Upgrade` header). Its scope type is then `sse`.
    pub fn is_sse(&self) -> bool {
        let has = |name: &[u8], needle: &[u8]| {
            self.headers.iter().any(|(n, v)| {
                n == name
                    && v.windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle))
            })
        };
        !self.is_websocket()
            && has(b"accept", b"text/event-stream")
            && !has(b"upgrade", b"websocket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_and_versions() {
        assert_eq!(Scheme::Http.scope_name(false), "http");
        assert_eq!(Scheme::Https.scope_name(true), "wss");
        assert_eq!(Scheme::Http.scope_name(true), "ws");
        assert_eq!(Scheme::Https.scope_name(false), "https");
        assert_eq!(
            [Version::Http10, Version::Http11, Version::Http2].map(Version::code),
            [10, 11, 20]
        );
        assert_eq!(Version::Http2.as_str(), "2");
    }

    #[test]
    fn detects_sse_requests() {
        let mut head = RequestHead {
            method: "POST".into(),
            scheme: Scheme::Http,
            authority: None,
            path: b"/".to_vec(),
            query: Vec::new(),
            version: Version::Http11,
            headers: vec![(b"accept".to_vec(), b"text/html".to_vec())],
            body: BodyHint::Length(3),
            expect_continue: false,
            upgrade: None,
        };
        assert!(!head.is_sse());
        head.headers
            .push((b"accept".to_vec(), b"Text/Event-Stream".to_vec()));
        assert!(head.is_sse(), "any method, a second Accept line");
        head.upgrade = Some(Upgrade::WebSocket { key: Vec::new() });
        assert!(!head.is_sse());
        head.upgrade = None;
        head.headers
            .push((b"upgrade".to_vec(), b"WebSocket".to_vec()));
        assert!(!head.is_sse());
    }
}
