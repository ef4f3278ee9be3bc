//! One HTTP/1.x request head: parsed with httparse, then checked against the
//! server's limits and the framing rules, with the status code and message
//! each kind of bad input gets.

use crate::exchange::{BodyHint, RequestHead, Scheme, Upgrade, Version};
use crate::ws::handshake;

/// Limits from the server options (`max_request_line_size` is internal to the
/// reference and fixed at 8192 there).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_size: usize,
    pub max_header_count: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8192,
            max_header_size: 8192,
            max_header_count: 100,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

impl Framing {
    pub fn is_empty(self) -> bool {
        self == Framing::Length(0)
    }
}

#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub raw_path: Vec<u8>,
    pub query: Vec<u8>,
    /// 10 or 11.
    pub version: u8,
    /// Lower-cased names, in wire order; several Cookie lines become one.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub framing: Framing,
    pub content_length: Option<u64>,
    pub expect_continue: bool,
    /// The client allows the connection to stay open after this request.
    pub keep_alive: bool,
}

impl Head {
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether this is a WebSocket handshake: `Upgrade: websocket`, a
    /// Connection header naming upgrade among its tokens (`keep-alive,
    /// Upgrade` as Firefox sends it), and no request body.
    pub fn wants_websocket(&self) -> bool {
        let has = |name: &[u8], token: &[u8]| {
            self.headers
                .iter()
                .any(|(n, v)| n == name && has_token(v, token))
        };
        has(b"upgrade", b"websocket") && has(b"connection", b"upgrade") && self.framing.is_empty()
    }

    /// The client's `Sec-WebSocket-Key` when this is a WebSocket handshake
    /// (`parse` has checked it).
    pub fn websocket_key(&self) -> Option<&[u8]> {
        if !self.wants_websocket() {
            return None;
        }
        self.header(b"sec-websocket-key").map(<[u8]>::trim_ascii)
    }
}

/// What HTTP/1 keeps for itself once the neutral head is handed on.
#[derive(Debug, Clone, Copy)]
pub struct H1Facts {
    pub framing: Framing,
    pub content_length: Option<u64>,
    pub keep_alive: bool,
}

impl Head {
    /// The protocol-neutral head (its buffers moved, not copied) and the
    /// HTTP/1 connection facts; `scheme` is the connection's.
    pub fn into_request(self, scheme: Scheme) -> (RequestHead, H1Facts) {
        let upgrade = self
            .websocket_key()
            .map(|key| Upgrade::WebSocket { key: key.to_vec() });
        let body = match self.framing {
            Framing::Length(0) => BodyHint::None,
            Framing::Length(n) => BodyHint::Length(n),
            Framing::Chunked => BodyHint::Chunked,
        };
        let facts = H1Facts {
            framing: self.framing,
            content_length: self.content_length,
            keep_alive: self.keep_alive,
        };
        let head = RequestHead {
            method: self.method,
            scheme,
            authority: None,
            path: self.raw_path,
            query: self.query,
            version: if self.version == 10 {
                Version::Http10
            } else {
                Version::Http11
            },
            headers: self.headers,
            body,
            expect_continue: self.expect_continue,
            upgrade,
        };
        (head, facts)
    }
}

/// A request refused before the app sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub message: &'static str,
    /// A header field the answer carries (name, value).
    pub field: Option<(&'static str, &'static str)>,
}

pub const fn reject_with(status: u16, message: &'static str) -> Reject {
    Reject {
        status,
        message,
        field: None,
    }
}

pub const BAD_REQUEST: Reject = reject_with(400, "Bad Request");
pub const URI_TOO_LONG: Reject = reject_with(414, "URI Too Long");
pub const HEADERS_TOO_LARGE: Reject = reject_with(431, "Request Header Fields Too Large");
pub const PAYLOAD_TOO_LARGE: Reject = reject_with(413, "Payload Too Large");
/// The head did not arrive within `timeout`.
pub const REQUEST_TIMEOUT: Reject = reject_with(408, "Request Timeout");
/// PAGI has no event to carry a tunnel's bytes, so no app can take a
/// CONNECT; what follows its head is never parsed as HTTP.
const CONNECT_UNSUPPORTED: Reject = reject_with(501, "CONNECT method not supported");
const TE_NOT_FINAL: Reject = reject_with(400, "chunked must be the final Transfer-Encoding");
const TE_UNSUPPORTED: Reject = reject_with(501, "Unsupported Transfer-Encoding");
const TE_AND_CL: Reject = reject_with(
    400,
    "Transfer-Encoding and Content-Length are mutually exclusive",
);

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete (and within
/// the limits so far). `Ok(Some((head, n)))`: the head took `n` bytes.
pub fn parse(buf: &[u8], lim: &Limits) -> Result<Option<(Head, usize)>, Reject> {
    let line_len = match buf.iter().position(|&b| b == b'\n') {
        Some(p) => p.saturating_sub(usize::from(p > 0 && buf[p - 1] == b'\r')),
        // A last CR may be the start of the line's end.
        None => buf.len() - usize::from(buf.last() == Some(&b'\r')),
    };
    if line_len > lim.max_request_line {
        return Err(URI_TOO_LONG);
    }
    // One slot more than allowed, so "too many" is told apart from "too big";
    // on the stack for the usual limits, since this runs for every request.
    let want = lim.max_header_count.saturating_add(1).min(4096);
    let mut stack = [httparse::EMPTY_HEADER; 128];
    let mut heap = Vec::new();
    let slots = if want <= stack.len() {
        &mut stack[..want]
    } else {
        heap.resize(want, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(slots);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > lim.max_header_size.saturating_add(4) {
                return Err(HEADERS_TOO_LARGE);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HEADERS_TOO_LARGE),
        Err(_) => return Err(BAD_REQUEST),
    };
    if n.saturating_sub(4) > lim.max_header_size {
        return Err(HEADERS_TOO_LARGE);
    }
    if req.headers.len() > lim.max_header_count {
        return Err(HEADERS_TOO_LARGE);
    }
    let version = if req.version == Some(0) { 10 } else { 11 };
    if req.method == Some("CONNECT") {
        return Err(CONNECT_UNSUPPORTED);
    }
    let method = req.method.unwrap_or("GET").to_string();
    let target = req.path.unwrap_or("/").as_bytes();
    // Absolute form (`http://host/p?q`): the app sees the path part.
    let target = match target.windows(3).position(|w| w == b"://") {
        Some(i) if target[..i].iter().all(u8::is_ascii_alphabetic) => {
            let rest = &target[i + 3..];
            match rest.iter().position(|&b| b == b'/' || b == b'?') {
                Some(p) if rest[p] == b'/' => &rest[p..],
                Some(p) => &rest[p..],
                None => b"/",
            }
        }
        _ => target,
    };
    let (raw_path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let raw_path = if raw_path.is_empty() { b"/" } else { raw_path };

    let mut headers = Vec::with_capacity(req.headers.len());
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut content_length: Option<u64> = None;
    let mut cl_bad = false;
    let mut cl_huge = false;
    // Transfer codings are not kept as a list (a field of commas would cost
    // memory per comma): only whether there were any, whether the last is
    // chunked, and whether chunked came at all.
    let (mut te_seen, mut chunked, mut any_chunked) = (false, false, false);
    let mut hosts = 0;
    let mut expect_continue = false;
    let mut conn_close = false;
    let mut conn_keep = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes().to_ascii_lowercase();
        let value = h.value;
        match name.as_slice() {
            b"cookie" => {
                cookies.push(value);
                continue;
            }
            b"content-length" => {
                // httparse trims trailing blanks; the value must be bare digits.
                let end =
                    (value.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize) + value.len();
                let padded = buf.get(end).is_some_and(|&b| b != b'\r' && b != b'\n');
                if padded || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                    cl_bad = true;
                } else if value.len() > 10 {
                    cl_huge = true;
                } else {
                    let v: u64 = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u64::MAX);
                    if v > 2_147_483_647 {
                        cl_huge = true;
                    }
                    match content_length {
                        Some(prev) if prev != v => cl_bad = true,
                        Some(_) => continue, // an exact repeat says nothing new
                        None => content_length = Some(v),
                    }
                }
            }
            // An empty coding (a blank field) is no coding we support.
            b"transfer-encoding" => {
                te_seen = true;
                for coding in value.split(|&b| b == b',') {
                    chunked = coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
                    any_chunked |= chunked;
                }
            }
            b"host" => hosts += 1,
            b"expect" => {
                expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
            }
            b"connection" => {
                conn_close |= has_token(value, b"close");
                conn_keep |= has_token(value, b"keep-alive");
            }
            _ => {}
        }
        headers.push((name, value.to_vec()));
    }
    if !cookies.is_empty() {
        headers.push((b"cookie".to_vec(), cookies.join(&b"; "[..])));
    }
    if cl_bad {
        return Err(BAD_REQUEST);
    }
    if cl_huge {
        return Err(PAYLOAD_TOO_LARGE);
    }
    if te_seen && !chunked {
        return Err(if any_chunked {
            TE_NOT_FINAL
        } else {
            TE_UNSUPPORTED
        });
    }
    if chunked && content_length.is_some() {
        return Err(TE_AND_CL);
    }
    // RFC 9112 3.2: exactly one Host on HTTP/1.1; at most one on 1.0.
    if (version == 11 && hosts != 1) || hosts > 1 {
        return Err(BAD_REQUEST);
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(content_length.unwrap_or(0))
    };
    let keep_alive = if version == 11 {
        !conn_close
    } else {
        conn_keep && !conn_close
    };
    let head = Head {
        method,
        raw_path: raw_path.to_vec(),
        query: query.to_vec(),
        version,
        headers,
        framing,
        content_length,
        // RFC 9110 10.1.1: an HTTP/1.0 client's Expect is ignored.
        expect_continue: expect_continue && version == 11,
        keep_alive,
    };
    // A WebSocket handshake the server cannot take is answered here.
    if head.wants_websocket() {
        if let Err(r) = handshake::check_h1(&head.headers) {
            return Err(Reject {
                status: r.status,
                message: r.message,
                field: r.field,
            });
        }
    }
    Ok(Some((head, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<(Head, usize)>, Reject> {
        parse(s.as_bytes(), &Limits::default())
    }

    fn status(s: &str) -> u16 {
        match p(s) {
            Err(r) => r.status,
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn parses_a_simple_get() {
        let (h, n) = p("GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nX-Y: z\r\nCookie: b=2\r\n\r\nrest")
            .expect("valid")
            .expect("complete");
        assert_eq!(n, 70);
        assert_eq!(h.method, "GET");
        assert_eq!(h.raw_path, b"/a%20b");
        assert_eq!(h.query, b"x=1");
        assert_eq!(h.version, 11);
        assert!(h.keep_alive);
        assert_eq!(h.framing, Framing::Length(0));
        assert_eq!(h.header(b"x-y"), Some(&b"z"[..]));
        assert_eq!(
            h.headers.last().map(|(_, v)| v.as_slice()),
            Some(&b"a=1; b=2"[..])
        );
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: h\r\n"), 0);
        assert_eq!(status("GET / HT"), 0);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(8200));
        assert_eq!(status(&long), 414);
        assert_eq!(status(&format!("GET /{}", "a".repeat(8200))), 414);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "b".repeat(8200)
        );
        assert_eq!(status(&big), 431);
        assert_eq!(status(&big[..8220]), 431);
        let lim = Limits {
            max_header_count: 5,
            ..Limits::default()
        };
        let many: String = (0..10).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
        assert_eq!(
            parse(req.as_bytes(), &lim).map(|_| ()),
            Err(HEADERS_TOO_LARGE)
        );
    }

    #[test]
    fn a_longest_request_line_may_arrive_without_its_lf() {
        let lim = Limits {
            max_request_line: 14,
            ..Limits::default()
        };
        assert_eq!(parse(b"GET / HTTP/1.1\r", &lim).map(|_| ()), Ok(()));
        assert_eq!(
            parse(b"GET /a HTTP/1.1\r", &lim).map(|_| ()),
            Err(URI_TOO_LONG)
        );
    }

    #[test]
    fn a_field_of_commas_costs_no_memory_per_comma() {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {}\r\n\r\n",
            ",".repeat(8000)
        );
        let (got, peak) = crate::props::alloc::peak_during(|| {
            parse(req.as_bytes(), &Limits::default()).map(|_| ())
        });
        assert_eq!(got, Err(TE_UNSUPPORTED));
        assert!(peak < 4 * req.len(), "{peak} bytes");
    }

    #[test]
    fn framing_errors() {
        assert_eq!(status("INVALID REQUEST LINE\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            200
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        let (h, _) = p("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.framing, Framing::Chunked);
    }

    #[test]
    fn connect_is_refused_with_501() {
        assert_eq!(
            status("CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\nGET / HTTP/1.1\r\n"),
            501
        );
        assert_eq!(status("CONNECT example.test:443 HTTP/1.1\r\nHost: x"), 0);
    }

    #[test]
    fn converts_to_the_neutral_head() {
        let (h, _) = p("GET /chat?x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ== \r\nSec-WebSocket-Version: 13\r\n\r\n")
            .expect("valid")
            .expect("complete");
        let (r, f) = h.into_request(Scheme::Http);
        assert_eq!(
            (r.method.as_str(), r.path.as_slice(), r.query.as_slice()),
            ("GET", &b"/chat"[..], &b"x"[..])
        );
        assert_eq!(
            (r.version, r.body, r.authority.as_deref()),
            (Version::Http11, BodyHint::None, None)
        );
        assert_eq!(
            r.upgrade,
            Some(Upgrade::WebSocket {
                key: b"dGhlIHNhbXBsZSBub25jZQ==".to_vec()
            })
        );
        assert_eq!(r.header(b"host"), Some(&b"h"[..]));
        assert!(f.keep_alive && f.framing.is_empty());
        let (h, _) = p("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n")
            .expect("valid")
            .expect("complete");
        let (r, f) = h.into_request(Scheme::Http);
        assert_eq!(
            (r.version, r.body, r.upgrade),
            (Version::Http10, BodyHint::Length(3), None)
        );
        assert_eq!((f.content_length, f.keep_alive), (Some(3), false));
        let (h, _) = p("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(h.into_request(Scheme::Http).0.body, BodyHint::Chunked);
    }

    #[test]
    fn websocket_handshakes_are_checked() {
        let ws = |conn: &str, extra: &str| {
            p(&format!("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: {conn}\r\n{extra}\r\n"))
        };
        let good = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
        // Firefox's Connection field: a token list, any case.
        for conn in [
            "Upgrade",
            "keep-alive, Upgrade",
            "keep-alive,upgrade",
            "UPGRADE , close",
        ] {
            let (h, _) = ws(conn, good).expect("valid").expect("complete");
            assert!(h.websocket_key().is_some(), "{conn}");
        }
        let refused = |extra: &str| {
            ws("Upgrade", extra)
                .map(|_| ())
                .map_err(|r| (r.status, r.field))
        };
        let version = Err((426, Some(("Sec-WebSocket-Version", "13"))));
        assert_eq!(
            refused("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            version
        );
        assert_eq!(
            refused("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"),
            version
        );
        assert_eq!(refused("Sec-WebSocket-Version: 13\r\n"), Err((400, None)));
        assert_eq!(
            refused("Sec-WebSocket-Key: not-sixteen-bytes\r\nSec-WebSocket-Version: 13\r\n"),
            Err((400, None))
        );
        // Not a handshake (no upgrade token): an HTTP request like any other.
        let (h, _) = ws("keep-alive", "").expect("valid").expect("complete");
        assert!(h.websocket_key().is_none());
    }

    #[test]
    fn keep_alive_and_expect() {
        let (h, _) = p("POST http://x.test/p?q HTTP/1.0\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(h.keep_alive && !h.expect_continue, "1.0 Expect is ignored");
        assert_eq!(
            (h.raw_path.as_slice(), h.query.as_slice()),
            (&b"/p"[..], &b"q"[..])
        );
        assert_eq!(h.framing, Framing::Length(2));
        let (h, _) =
            p("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                .expect("valid")
                .expect("complete");
        assert!(h.expect_continue);
        let (h, _) = p("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!h.keep_alive);
    }
}
