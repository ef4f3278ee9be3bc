//! Writing an HTTP/1.x response: the head with the server-supplied fields,
//! and the body framed by Content-Length, chunks or connection close.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::server::Head;

/// What the request said that shapes the response.
pub struct ReqInfo {
    pub version: u8,
    pub is_head: bool,
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Content-Length: this many bytes still to write.
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    Close,
    /// HEAD, 1xx, 204 and 304 carry no body.
    None,
}

#[derive(Debug)]
pub struct Writer {
    pub framing: Framing,
    pub keep_alive: bool,
    /// Whether the app may send trailers (chunked only).
    trailers_open: bool,
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// The IMF-fixdate of the current second, formatted once per second.
pub fn http_date() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now || d.1.is_empty() {
            *d = (now, httpdate::fmt_http_date(SystemTime::now()));
        }
        d.1.clone()
    })
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Serialises the response head into `out` and decides the body framing.
/// `closing`: the server will close the connection after this response.
pub fn write_head(
    out: &mut Vec<u8>,
    head: &Head,
    req: &ReqInfo,
    server_header: &str,
    closing: bool,
) -> Writer {
    let status = head.status;
    let ver = if req.version == 10 { "1.0" } else { "1.1" };
    out.extend_from_slice(format!("HTTP/{ver} {status} {}\r\n", reason(status)).as_bytes());
    let mut length = None;
    let (mut has_date, mut has_server, mut has_conn) = (false, false, false);
    let mut app_close = false;
    // RFC 9110 8.6: no Content-Length on 1xx and 204 responses.
    let no_length = status < 200 || status == 204;
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            if no_length {
                continue;
            }
            match parse_length(value) {
                Some(n) if length.is_none() || length == Some(n) => {
                    if length.is_some() {
                        continue;
                    }
                    length = Some(n);
                }
                // A length that cannot frame the body is not written.
                _ => continue,
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case(b"server") {
            has_server = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            has_conn = true;
            app_close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        push_field(out, name, value);
    }
    if !has_date {
        push_field(out, b"date", http_date().as_bytes());
    }
    if !has_server {
        push_field(out, b"Server", server_header.as_bytes());
    }
    let bodyless = req.is_head || status < 200 || status == 204 || status == 304;
    let framing = match length {
        _ if bodyless => Framing::None,
        Some(n) => Framing::Length(n),
        None if req.version == 11 => Framing::Chunked,
        None => Framing::Close,
    };
    if framing == Framing::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    let keep_alive = req.keep_alive && !closing && !app_close && framing != Framing::Close;
    if !has_conn {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if req.version == 10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Writer {
        framing,
        keep_alive,
        trailers_open: framing == Framing::Chunked,
    }
}

impl Writer {
    /// Frames `data` into `out`. Bytes past a declared Content-Length are
    /// dropped rather than corrupt the next response.
    pub fn data(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        let (n, suffix) = self.frame(out, data.len());
        out.extend_from_slice(&data[..n]);
        out.extend_from_slice(suffix);
    }

    /// Frames `len` bytes of body without copying them: what goes before
    /// them (a chunk header) is appended to `out`; returns how many of
    /// them go on the wire (fewer past a declared Content-Length, none
    /// for a bodiless response) and what must follow them.
    pub fn frame(&mut self, out: &mut Vec<u8>, len: usize) -> (usize, &'static [u8]) {
        if len == 0 {
            return (0, b"");
        }
        match &mut self.framing {
            Framing::None => (0, b""),
            Framing::Close => (len, b""),
            Framing::Chunked => {
                let _ = write!(out, "{len:x}\r\n");
                (len, b"\r\n")
            }
            Framing::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(len);
                *left -= n as u64;
                (n, b"")
            }
        }
    }

    pub fn trailers(&mut self, out: &mut Vec<u8>, fields: &[(Vec<u8>, Vec<u8>)]) {
        if !self.trailers_open {
            return;
        }
        self.trailers_open = false;
        out.extend_from_slice(b"0\r\n");
        for (n, v) in fields {
            push_field(out, n, v);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Ends the body; a short Content-Length body means the connection
    /// cannot be reused.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.trailers_open {
            self.trailers_open = false;
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if matches!(self.framing, Framing::Length(n) if n > 0) {
            self.keep_alive = false;
        }
    }
}

/// The answer to a request refused before the app saw it; the connection
/// is closed after it.
pub fn error_response(
    status: u16,
    message: &str,
    server_header: &str,
    field: Option<(&str, &str)>,
) -> Vec<u8> {
    let extra = field.map_or(String::new(), |(n, v)| format!("{n}: {v}\r\n"));
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\ndate: {}\r\nServer: {server_header}\r\n{extra}Connection: close\r\n\r\n{message}",
        reason(status),
        message.len(),
        http_date()
    )
    .into_bytes()
}

/// Sent, then closed, when `max_connections` is reached.
/// The answer to plain HTTP sent to a TLS listener (nginx answers the same
/// way): the client learns it has the wrong scheme instead of seeing the
/// connection drop.
pub const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 56\r\nConnection: close\r\n\r\n400 Bad Request - plain HTTP was sent to an HTTPS port\r\n";

pub const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nConnection: close\r\nRetry-After: 5\r\n\r\n503 Service Unavailable - Server at capacity\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_announce_their_length() {
        for answer in [AT_CAPACITY, PLAIN_TO_TLS] {
            let text = std::str::from_utf8(answer).expect("ASCII");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length");
            assert_eq!(len.parse::<usize>().ok(), Some(body.len()), "{head}");
        }
    }

    fn head(status: u16, h: &[(&str, &str)]) -> Head {
        Head {
            status,
            headers: h
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn req(version: u8, is_head: bool, keep_alive: bool) -> ReqInfo {
        ReqInfo {
            version,
            is_head,
            keep_alive,
        }
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }

    #[test]
    fn chunked_by_default_with_trailers() {
        let mut out = Vec::new();
        let mut w = write_head(
            &mut out,
            &head(200, &[("X-Case", "v")]),
            &req(11, false, true),
            "S/1",
            false,
        );
        let h = text(&out);
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\nX-Case: v\r\ndate: "),
            "{h}"
        );
        assert!(
            h.ends_with("Server: S/1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "{h}"
        );
        out.clear();
        w.data(&mut out, b"hello");
        w.trailers(&mut out, &[(b"X-Sum".to_vec(), b"1".to_vec())]);
        w.end(&mut out);
        assert_eq!(text(&out), "5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n");
        assert!(w.keep_alive);
    }

    #[test]
    fn length_http10_and_bodyless() {
        let mut out = Vec::new();
        let mut w = write_head(
            &mut out,
            &head(200, &[("content-length", "3")]),
            &req(10, false, true),
            "S",
            false,
        );
        assert!(text(&out).contains("Connection: keep-alive\r\n"));
        out.clear();
        w.data(&mut out, b"abcdef");
        w.end(&mut out);
        assert_eq!(out, b"abc");
        assert!(w.keep_alive);

        out.clear();
        let w = write_head(&mut out, &head(200, &[]), &req(10, false, true), "S", false);
        assert_eq!(w.framing, Framing::Close);
        assert!(!w.keep_alive && text(&out).contains("Connection: close\r\n"));

        for (st, is_head) in [(204, false), (304, false), (200, true)] {
            out.clear();
            let mut w = write_head(
                &mut out,
                &head(st, &[]),
                &req(11, is_head, true),
                "S",
                false,
            );
            assert_eq!(w.framing, Framing::None);
            assert!(!text(&out).contains("chunked"));
            out.clear();
            w.data(&mut out, b"ignored");
            w.end(&mut out);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn short_length_body_closes() {
        let mut out = Vec::new();
        let mut w = write_head(
            &mut out,
            &head(200, &[("Content-Length", "10")]),
            &req(11, false, true),
            "S",
            false,
        );
        w.data(&mut out, b"abc");
        w.end(&mut out);
        assert!(!w.keep_alive);
        let mut out = Vec::new();
        let w = write_head(
            &mut out,
            &head(200, &[("Connection", "close")]),
            &req(11, false, true),
            "S",
            false,
        );
        assert!(!w.keep_alive);
        assert_eq!(text(&out).matches("onnection").count(), 1);
    }
}
