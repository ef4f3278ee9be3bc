//! The app's response head and trailers as HTTP/2 header blocks. Names go
//! out in lower case (HTTP/2 requires it); fields that belong to an
//! HTTP/1.1 connection are dropped, never sent (RFC 9113 8.2.2).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::fields::Fields;
use crate::proto::h1::encode::http_date;
use crate::server::Head;

/// Connection-specific fields: meaningless on an HTTP/2 stream, and a
/// protocol error for the client if sent.
fn connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "proxy-connection" | "te"
    )
}

/// Appends the app's fields that can go on an HTTP/2 stream.
fn append(map: &mut HeaderMap, fields: &Fields, skip_length: bool) {
    for (name, value) in fields {
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        if connection_specific(&n) || (skip_length && n == http::header::CONTENT_LENGTH) {
            continue;
        }
        map.append(n, v);
    }
}

/// Whether a response to this request with this status has no body.
pub fn bodyless(status: u16, is_head: bool) -> bool {
    is_head || status < 200 || status == 204 || status == 304
}

/// The response head for the app's `Head`, with `date` and `server` added
/// when the app gave none. A status HTTP/2 cannot carry (a 1xx as a final
/// status, or out of range) becomes 500.
pub fn head(h: &Head, server: Option<&HeaderValue>) -> Response<()> {
    let status = StatusCode::from_u16(h.status)
        .ok()
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let map = resp.headers_mut();
    // RFC 9110 8.6: no Content-Length on a 204.
    append(map, &h.headers, status == StatusCode::NO_CONTENT);
    if !map.contains_key(http::header::DATE) {
        if let Some(v) = date() {
            map.insert(http::header::DATE, v);
        }
    }
    if let (Some(v), false) = (server, map.contains_key(http::header::SERVER)) {
        map.insert(http::header::SERVER, v.clone());
    }
    resp
}

/// The `server` header for the `server_header` setting (None: empty).
pub fn server_value(server_header: &str) -> Option<HeaderValue> {
    (!server_header.is_empty())
        .then(|| HeaderValue::from_str(server_header).ok())
        .flatten()
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, Option<HeaderValue>)> = const { std::cell::RefCell::new((0, None)) };
}

/// The `date` header of the current second, made once per second.
fn date() -> Option<HeaderValue> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now || d.1.is_none() {
            *d = (now, HeaderValue::from_str(&http_date()).ok());
        }
        d.1.clone()
    })
}

/// The app's trailers as a header block.
pub fn trailers(fields: &Fields) -> HeaderMap {
    let mut map = HeaderMap::new();
    append(&mut map, fields, true);
    map
}

/// A plain-text answer the server gives itself (413, 501, ...).
pub fn plain(status: u16, message: &str, server: Option<&HeaderValue>) -> (Response<()>, Bytes) {
    let body = Bytes::from(format!("{message}\n"));
    let fields: Fields = vec![
        (b"content-type".to_vec(), b"text/plain".to_vec()),
        (
            b"content-length".to_vec(),
            body.len().to_string().into_bytes(),
        ),
    ];
    let h = Head {
        status,
        headers: fields,
    };
    (head(&h, server), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_connection_fields_and_adds_defaults() {
        let h = Head {
            status: 200,
            headers: vec![
                (b"Content-Type".to_vec(), b"text/plain".to_vec()),
                (b"Connection".to_vec(), b"keep-alive".to_vec()),
                (b"Keep-Alive".to_vec(), b"timeout=5".to_vec()),
                (b"Transfer-Encoding".to_vec(), b"chunked".to_vec()),
                (b"Upgrade".to_vec(), b"h2c".to_vec()),
                (b"X-Two".to_vec(), b"a".to_vec()),
                (b"x-two".to_vec(), b"b".to_vec()),
            ],
        };
        let r = head(&h, server_value("PAGI::Server/x").as_ref());
        let m = r.headers();
        assert_eq!(m["content-type"], "text/plain");
        for gone in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
            assert!(!m.contains_key(gone), "{gone} must not be sent");
        }
        let two: Vec<_> = m.get_all("x-two").iter().collect();
        assert_eq!(two, ["a", "b"]);
        assert!(m.contains_key("date"));
        assert_eq!(m["server"], "PAGI::Server/x");
    }

    #[test]
    fn statuses_http2_cannot_carry_become_500() {
        for (status, want) in [(101, 500), (204, 204), (999, 999), (1000, 500)] {
            let h = Head {
                status,
                headers: vec![(b"content-length".to_vec(), b"3".to_vec())],
            };
            let r = head(&h, server_value("").as_ref());
            assert_eq!(r.status().as_u16(), want, "{status}");
            assert_eq!(r.headers().contains_key("content-length"), status != 204);
        }
        assert!(bodyless(304, false) && bodyless(200, true) && !bodyless(200, false));
    }
}
