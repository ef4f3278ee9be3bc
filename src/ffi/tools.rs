//! Calls that need no server: the access-log format check and formatter,
//! and the request-head parser behind `PAGI::Server::Protocol::HTTP1`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::plumbing::{hand_out_local, slice, unpack_headers, without_server};
use crate::abi::code::OK;
use crate::abi::head_flag;

/// Compiles an access-log format (preset name or atoms) without a server,
/// so PAGI::Server can refuse a bad one at construction. Returns OK, or ERR
/// with the message copied into `err` like `pagi_server_new`.
///
/// # Safety
/// `fmt` points to `len` bytes; `err` has `err_cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_check_log_format(
    fmt: *const u8,
    len: usize,
    err: *mut u8,
    err_cap: usize,
) -> i32 {
    let checked = without_server(|| compile_format(fmt, len).map(|_| ()), err, err_cap);
    checked.map_or_else(|rc| rc, |()| OK)
}

/// Compiles the access-log format Perl passed (UTF-8 bytes).
///
/// # Safety
/// `fmt` points to `len` bytes.
unsafe fn compile_format(fmt: *const u8, len: usize) -> Result<crate::access_log::Format, String> {
    let text = std::str::from_utf8(slice(fmt, len))
        .map_err(|_| "access log format is not UTF-8\n".to_string())?;
    crate::access_log::Format::compile(text)
}

thread_local! {
    static PARSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Parses a request head with the server's own parser, for
/// `PAGI::Server::Protocol::HTTP1`. Returns 0 (incomplete), 1 (a request:
/// u64 consumed, u8 version, u8 flags (`crate::abi::head_flag`), u64
/// content length, method, path, raw path, query, u64 count and name/value
/// pairs) or 2 (refused: u64 consumed, u16 status, message); fields are
/// laid out as in bridge records. The bytes stay valid until the next call
/// on this thread.
///
/// # Safety
/// `buf` points to `len` bytes; `out` and `out_len` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_parse_head(
    buf: *const u8,
    len: usize,
    max_line: usize,
    max_size: usize,
    max_count: usize,
    out: *mut *const u8,
    out_len: *mut usize,
) -> i32 {
    let input = slice(buf, len);
    let limits = crate::proto::h1::parse::Limits {
        max_request_line: max_line,
        max_header_size: max_size,
        max_header_count: max_count,
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        crate::proto::h1::parse::parse(input, &limits)
    }));
    PARSED.with(|cell| {
        let mut b = cell.borrow_mut();
        b.clear();
        let mut w = crate::bridge::queue::RecordWriter::over(&mut b);
        // A refused head is consumed up to its end, as far as it can be found.
        let head_end = input
            .windows(4)
            .position(|x| x == b"\r\n\r\n")
            .map_or(input.len(), |p| p + 4);
        let rc = match parsed {
            Ok(Ok(None)) => 0,
            Ok(Ok(Some((h, n)))) => {
                let path = crate::bridge::request::percent_decode(&h.raw_path);
                let mut flags = 0u8;
                if h.framing == crate::proto::h1::parse::Framing::Chunked {
                    flags |= head_flag::CHUNKED;
                }
                if h.expect_continue {
                    flags |= head_flag::EXPECT;
                }
                if h.content_length.is_some() {
                    flags |= head_flag::HAS_LENGTH;
                }
                if std::str::from_utf8(&path).is_ok() {
                    flags |= head_flag::PATH_UTF8;
                }
                w.len(n)
                    .u8(h.version)
                    .u8(flags)
                    .u64(h.content_length.unwrap_or(0))
                    .bytes(h.method.as_bytes())
                    .bytes(&path)
                    .bytes(&h.raw_path)
                    .bytes(&h.query)
                    .len(h.headers.len());
                for (n, v) in &h.headers {
                    w.bytes(n).bytes(v);
                }
                1
            }
            Ok(Err(r)) => {
                w.len(head_end).u16(r.status).bytes(r.message.as_bytes());
                2
            }
            Err(_) => {
                w.len(head_end).u16(400).bytes(b"Bad Request");
                2
            }
        };
        *out = b.as_ptr();
        *out_len = b.len();
        rc
    })
}

/// Renders one access-log line from `key`/value pairs (packed like headers):
/// client_ip, timestamp, method, path, query, http_version, status, size,
/// duration, and `header:NAME` for request headers. This is the formatter
/// behind `PAGI::Server->_compile_access_log_format`; the line stays valid
/// until the next call on this thread.
///
/// # Safety
/// Pointers as in `pagi_check_log_format` and `pagi_send_start`; `out` and
/// `out_len` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_format_log(
    fmt: *const u8,
    fmt_len: usize,
    fields: *const u8,
    fields_len: usize,
    out: *mut *const u8,
    out_len: *mut usize,
    err: *mut u8,
    err_cap: usize,
) -> i32 {
    let rendered = without_server(
        || {
            let f = compile_format(fmt, fmt_len)?;
            let pairs = unpack_headers(slice(fields, fields_len)).ok_or("malformed log fields")?;
            Ok::<_, String>(render_fields(&f, &pairs))
        },
        err,
        err_cap,
    );
    match rendered {
        Ok(line) => hand_out_local(line, out, out_len),
        Err(rc) => rc,
    }
}

fn render_fields(f: &crate::access_log::Format, pairs: &[(&[u8], &[u8])]) -> String {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == k.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let headers = f
        .headers
        .iter()
        .map(|h| get(&format!("header:{h}")))
        .collect();
    let info = crate::access_log::LogInfo {
        client: get("client_ip").unwrap_or_else(|| "-".into()),
        method: get("method").unwrap_or_else(|| "-".into()),
        path: get("path").unwrap_or_else(|| "/".into()),
        query: get("query").unwrap_or_default(),
        version: get("http_version").unwrap_or_else(|| "1.1".into()).into(),
        headers,
        start: std::time::Instant::now(),
        status: get("status").and_then(|s| s.parse().ok()).unwrap_or(0),
        bytes: get("size").and_then(|s| s.parse().ok()).unwrap_or(0),
    };
    let secs = get("duration").and_then(|s| s.parse().ok()).unwrap_or(0.0);
    info.render(f, &get("timestamp").unwrap_or_else(|| "-".into()), secs)
}
