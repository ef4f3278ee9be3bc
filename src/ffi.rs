//! The C ABI called by xs/Server.xs, on the Perl thread only.
//!
//! Every function catches panics (they must never unwind into Perl) and
//! reports them as `ERR_PANIC`; pointers handed back stay valid until the next
//! call on the same server.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::http1::panic_message;
use crate::listener;
use crate::runtime;
use crate::server::{self, SendState, ServerCore};

pub const OK: i32 = 0;
pub const PENDING: i32 = 1;
pub const GONE: i32 = 2;
pub const ERR: i32 = -1;
pub const ERR_PANIC: i32 = -99;

pub struct PagiServer {
    pub(crate) core: Arc<ServerCore>,
    owner_pid: u32,
    holds_runtime: bool,
    drained: Vec<u8>,
    /// The last message or access-log line handed to C.
    text: String,
}

pub(crate) fn guard(srv: *mut PagiServer, f: impl FnOnce(&mut PagiServer) -> i32) -> i32 {
    if srv.is_null() {
        return ERR;
    }
    // SAFETY: XS passes the pointer it got from pagi_server_new and never
    // uses it after pagi_server_free; calls come from one thread.
    let s = unsafe { &mut *srv };
    match catch_unwind(AssertUnwindSafe(|| f(&mut *s))) {
        Ok(rc) => rc,
        Err(p) => {
            s.text = format!("PAGI::Server internal error: {}", panic_message(p.as_ref()));
            ERR_PANIC
        }
    }
}

/// # Safety
/// `ptr` must point to `len` readable bytes (or be null with `len == 0`).
pub(crate) unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len)
    }
}

/// Decodes the header list packed by XS: u32 count, then per header a u32
/// length + name bytes and a u32 length + value bytes.
/// The pairs borrow from `b`.
fn unpack_headers(mut b: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn field<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32::from_ne_bytes(take(b, 4)?.try_into().ok()?) as usize;
        take(b, n)
    }
    let count = u32::from_ne_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        out.push((field(&mut b)?, field(&mut b)?));
    }
    Some(out)
}

pub(crate) fn state_code(s: SendState) -> i32 {
    match s {
        SendState::Ready => OK,
        SendState::Pending => PENDING,
        SendState::Gone => GONE,
    }
}

/// Hands `text` to C through `out`/`out_len` (empty when None).
fn hand_out(s: &mut PagiServer, text: Option<String>, out: *mut *const u8, out_len: *mut usize) {
    s.text = text.unwrap_or_default();
    if !out.is_null() && !out_len.is_null() {
        // SAFETY: XS passes addresses of two locals.
        unsafe {
            *out = s.text.as_ptr();
            *out_len = s.text.len();
        }
    }
}

/// Creates a server from `key=value` lines. On error returns ERR with the
/// message copied into `err` (NUL-terminated, truncated to `err_cap`): there
/// is no server yet to hold it.
///
/// # Safety
/// `cfg` points to `len` bytes; `out` is writable; `err` has `err_cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_new(
    cfg: *const u8,
    len: usize,
    out: *mut *mut PagiServer,
    err: *mut u8,
    err_cap: usize,
) -> i32 {
    crate::http1::install_panic_hook();
    let made = without_server(
        || {
            let text = std::str::from_utf8(slice(cfg, len))
                .map_err(|_| "configuration is not UTF-8".to_string())?;
            let cfg = Config::parse(text)?;
            let core = ServerCore::new(cfg).map_err(|e| format!("cannot create eventfd: {e}"))?;
            Ok::<_, String>(Box::new(PagiServer {
                core: Arc::new(core),
                owner_pid: std::process::id(),
                holds_runtime: false,
                drained: Vec::new(),
                text: String::new(),
            }))
        },
        err,
        err_cap,
    );
    match made {
        Ok(b) => {
            *out = Box::into_raw(b);
            OK
        }
        Err(rc) => rc,
    }
}

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
/// u32 consumed, u8 version, u8 flags 1=chunked 2=expect 4=has length
/// 8=path is UTF-8, u64 length, method, path, raw path, query, u32 count and
/// name/value pairs) or 2 (refused: u32 consumed, u16 status, message). The
/// bytes stay valid until the next call on this thread.
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
    let limits = crate::head::Limits {
        max_request_line: max_line,
        max_header_size: max_size,
        max_header_count: max_count,
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| crate::head::parse(input, &limits)));
    PARSED.with(|cell| {
        let mut b = cell.borrow_mut();
        b.clear();
        let mut w = crate::bridge::RecordWriter::over(&mut b);
        // A refused head is consumed up to its end, as far as it can be found.
        let head_end = input
            .windows(4)
            .position(|x| x == b"\r\n\r\n")
            .map_or(input.len(), |p| p + 4);
        let rc = match parsed {
            Ok(Ok(None)) => 0,
            Ok(Ok(Some((h, n)))) => {
                let path = crate::request::percent_decode(&h.raw_path);
                let mut flags = 0u8;
                if h.framing == crate::head::Framing::Chunked {
                    flags |= 1;
                }
                if h.expect_continue {
                    flags |= 2;
                }
                if h.content_length.is_some() {
                    flags |= 4;
                }
                if std::str::from_utf8(&path).is_ok() {
                    flags |= 8;
                }
                w.u32(u32::try_from(n).unwrap_or(u32::MAX))
                    .u8(h.version)
                    .u8(flags)
                    .u64(h.content_length.unwrap_or(0))
                    .bytes(h.method.as_bytes())
                    .bytes(&path)
                    .bytes(&h.raw_path)
                    .bytes(&h.query)
                    .u32(h.headers.len() as u32);
                for (n, v) in &h.headers {
                    w.bytes(n).bytes(v);
                }
                1
            }
            Ok(Err(r)) => {
                w.u32(u32::try_from(head_end).unwrap_or(u32::MAX))
                    .u16(r.status)
                    .bytes(r.message.as_bytes());
                2
            }
            Err(_) => {
                w.u32(u32::try_from(head_end).unwrap_or(u32::MAX))
                    .u16(400)
                    .bytes(b"Bad Request");
                2
            }
        };
        *out = b.as_ptr();
        *out_len = b.len();
        rc
    })
}

thread_local! {
    static FORMATTED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
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
        Ok(line) => FORMATTED.with(|cell| {
            let mut b = cell.borrow_mut();
            *b = line;
            *out = b.as_ptr();
            *out_len = b.len();
            OK
        }),
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

/// Runs a call that has no server to hold its error text: a failure or a
/// panic is copied into `err` and becomes `Err(ERR)`.
///
/// # Safety
/// As `copy_err`.
unsafe fn without_server<T>(
    f: impl FnOnce() -> Result<T, String>,
    err: *mut u8,
    err_cap: usize,
) -> Result<T, i32> {
    let msg = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(m)) => m,
        Err(p) => format!("PAGI::Server internal error: {}", panic_message(p.as_ref())),
    };
    copy_err(&msg, err, err_cap);
    Err(ERR)
}

/// Copies `msg` NUL-terminated into `err` (truncated to `err_cap`).
///
/// # Safety
/// `err` is null or has `err_cap` writable bytes.
unsafe fn copy_err(msg: &str, err: *mut u8, err_cap: usize) {
    if !err.is_null() && err_cap > 0 {
        let n = msg.len().min(err_cap - 1);
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
        *err.add(n) = 0;
    }
}

/// Frees a server. In a forked child the parent's server is leaked, not
/// shut down: its threads and sockets belong to the parent.
///
/// # Safety
/// `srv` came from `pagi_server_new` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_free(srv: *mut PagiServer) {
    if srv.is_null() {
        return;
    }
    let b = Box::from_raw(srv);
    if b.owner_pid != std::process::id() {
        std::mem::forget(b);
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(move || {
        if b.holds_runtime {
            b.core.begin_shutdown(server::FORCE);
            drop(b);
            runtime::release();
        }
    }));
}

/// Binds the listeners of `cfg` without serving them (a multi-worker parent
/// hands them to its workers). Returns one `tcp HOST PORT FD` / `unix PATH
/// FD` line per listener through `out`; the descriptors now belong to the
/// caller. ERR: the message is in `err`.
///
/// # Safety
/// `cfg` points to `len` bytes; `out`/`out_len` are writable; `err` has
/// `err_cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_bind_only(
    cfg: *const u8,
    len: usize,
    out: *mut *const u8,
    out_len: *mut usize,
    err: *mut u8,
    err_cap: usize,
) -> i32 {
    let bound = without_server(
        || {
            let text = std::str::from_utf8(slice(cfg, len)).map_err(|_| "config is not UTF-8")?;
            let c = Config::parse(text)?;
            let bound = listener::bind_all(&c.listen, c.backlog)?;
            Ok::<_, String>(
                bound
                    .into_iter()
                    .map(|b| format!("{} {}", b.describe(), b.into_raw_fd()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        },
        err,
        err_cap,
    );
    match bound {
        Ok(text) => FORMATTED.with(|cell| {
            let mut b = cell.borrow_mut();
            *b = text;
            *out = b.as_ptr();
            *out_len = b.len();
            OK
        }),
        Err(rc) => rc,
    }
}

/// Binds the listeners and starts serving. The text (read with
/// `pagi_server_text`) is one `tcp HOST PORT` / `unix PATH` line per listener,
/// or the error message.
///
/// # Safety
/// `srv` is live; `out`/`out_len` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_listen(
    srv: *mut PagiServer,
    out: *mut *const u8,
    out_len: *mut usize,
) -> i32 {
    guard(srv, |s| {
        let bound = match listener::bind_all(&s.core.cfg.listen, s.core.cfg.backlog) {
            Ok(b) => b,
            Err(e) => {
                hand_out(s, Some(e), out, out_len);
                return ERR;
            }
        };
        let lines: Vec<String> = bound.iter().map(listener::Bound::describe).collect();
        let rt = match runtime::acquire() {
            Ok(rt) => rt,
            Err(e) => {
                hand_out(
                    s,
                    Some(format!("cannot start the I/O runtime: {e}")),
                    out,
                    out_len,
                );
                return ERR;
            }
        };
        s.holds_runtime = true;
        if let Err(e) = server::start(&s.core, &rt, bound) {
            hand_out(
                s,
                Some(format!("cannot register listener: {e}")),
                out,
                out_len,
            );
            return ERR;
        }
        hand_out(s, Some(lines.join("\n")), out, out_len);
        OK
    })
}

/// The last message of a call that returned ERR_PANIC.
///
/// # Safety
/// `srv` is live; `out`/`out_len` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_text(
    srv: *mut PagiServer,
    out: *mut *const u8,
    out_len: *mut usize,
) -> i32 {
    guard(srv, |s| {
        let t = std::mem::take(&mut s.text);
        hand_out(s, Some(t), out, out_len);
        OK
    })
}

/// The eventfd Perl watches (Perl duplicates it).
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_fd(srv: *mut PagiServer) -> i32 {
    guard(srv, |s| s.core.bridge.fd())
}

/// Takes every queued record (format in bridge.rs).
///
/// # Safety
/// `srv` is live; `out`/`out_len` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_drain(
    srv: *mut PagiServer,
    out: *mut *const u8,
    out_len: *mut usize,
) -> i32 {
    guard(srv, |s| {
        s.core.bridge.drain(&mut s.drained);
        *out = s.drained.as_ptr();
        *out_len = s.drained.len();
        OK
    })
}

/// # Safety
/// `srv` is live; `hdrs` points to `len` bytes packed as in `unpack_headers`.
#[no_mangle]
pub unsafe extern "C" fn pagi_send_start(
    srv: *mut PagiServer,
    id: u64,
    status: u16,
    hdrs: *const u8,
    len: usize,
) -> i32 {
    guard(srv, |s| match unpack_headers(slice(hdrs, len)) {
        Some(h) => state_code(s.core.send_start(id, status, &h)),
        None => ERR,
    })
}

/// Queues body bytes; with `fin` the response is complete and the access-log
/// line (empty when logging is off) is handed out.
///
/// # Safety
/// `srv` is live; `data` points to `len` bytes; `log`/`log_len` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_send_body(
    srv: *mut PagiServer,
    id: u64,
    data: *const u8,
    len: usize,
    fin: i32,
    log: *mut *const u8,
    log_len: *mut usize,
) -> i32 {
    guard(srv, |s| {
        let (st, line) = s
            .core
            .send_body(id, Bytes::copy_from_slice(slice(data, len)), fin != 0);
        hand_out(s, line, log, log_len);
        state_code(st)
    })
}

/// # Safety
/// As `pagi_send_start` and `pagi_send_body`.
#[no_mangle]
pub unsafe extern "C" fn pagi_send_trailers(
    srv: *mut PagiServer,
    id: u64,
    hdrs: *const u8,
    len: usize,
    log: *mut *const u8,
    log_len: *mut usize,
) -> i32 {
    guard(srv, |s| match unpack_headers(slice(hdrs, len)) {
        Some(h) => {
            let (st, line) = s.core.send_trailers(id, &h);
            hand_out(s, line, log, log_len);
            state_code(st)
        }
        None => ERR,
    })
}

/// Queues a file body: `path` is opened here, or else `fd` is duplicated
/// (the app may close its handle at once). `offset` < 0: read from the
/// current position (fd) or the start (path); `length` < 0: to the end.
/// ERR puts the reason in `err`.
///
/// # Safety
/// As `pagi_send_body`; `path` points to `path_len` bytes or is null;
/// `err` has `err_cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_send_file(
    srv: *mut PagiServer,
    id: u64,
    path: *const u8,
    path_len: usize,
    fd: i32,
    offset: i64,
    length: i64,
    fin: i32,
    log: *mut *const u8,
    log_len: *mut usize,
    err: *mut u8,
    err_cap: usize,
) -> i32 {
    guard(srv, |s| {
        use std::os::unix::ffi::OsStrExt;
        let p = (!path.is_null())
            .then(|| std::path::Path::new(std::ffi::OsStr::from_bytes(slice(path, path_len))));
        let what = p.map_or_else(|| "the filehandle".to_string(), |p| p.display().to_string());
        let opened = match p {
            None => open_fd(fd),
            Some(p) => std::fs::File::open(p).map_err(|e| format!("cannot open {what}: {e}")),
        };
        let file = opened.and_then(|f| {
            // Opening a directory succeeds; reading it would fail only after
            // the head went out.
            if f.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(format!("cannot send {what}: it is a directory"));
            }
            if offset >= 0 {
                use std::io::Seek;
                (&f).seek(std::io::SeekFrom::Start(offset as u64))
                    .map_err(|e| format!("cannot seek to {offset}: {e}"))?;
            }
            Ok(f)
        });
        match file {
            Ok(f) => {
                let len = u64::try_from(length).ok();
                let (st, line) = s.core.send_file(id, f, len, fin != 0);
                hand_out(s, line, log, log_len);
                state_code(st)
            }
            Err(msg) => {
                copy_err(&format!("http.response.body: {msg}"), err, err_cap);
                ERR
            }
        }
    })
}

/// A private duplicate of a Perl handle's descriptor.
fn open_fd(fd: i32) -> Result<std::fs::File, String> {
    if fd < 0 {
        return Err("the filehandle has no file descriptor".into());
    }
    listener::dup_cloexec(fd)
        .map(std::fs::File::from)
        .map_err(|e| format!("cannot duplicate fd {fd}: {e}"))
}

/// Queues a WebSocket message (`text` != 0: a text frame of UTF-8 bytes).
///
/// # Safety
/// `srv` is live; `data` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_ws_send(
    srv: *mut PagiServer,
    id: u64,
    text: i32,
    data: *const u8,
    len: usize,
) -> i32 {
    guard(srv, |s| {
        state_code(
            s.core
                .ws_send(id, text != 0, Bytes::copy_from_slice(slice(data, len))),
        )
    })
}

/// Sends the app's WebSocket close frame.
///
/// # Safety
/// `srv` is live; `reason` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_ws_close(
    srv: *mut PagiServer,
    id: u64,
    code: u16,
    reason: *const u8,
    len: usize,
) -> i32 {
    guard(srv, |s| {
        let out = crate::server::Out::WsClose {
            code,
            reason: Bytes::copy_from_slice(slice(reason, len)),
        };
        state_code(s.core.ws_control(id, out))
    })
}

/// The app took a WebSocket message of `n` bytes.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_ws_ack(srv: *mut PagiServer, id: u64, n: usize) -> i32 {
    guard(srv, |s| {
        s.core.ws_ack(id, n);
        OK
    })
}

/// Pings every `interval` seconds (0: stop); `timeout` > 0 closes the
/// connection when no pong comes back in time.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_ws_keepalive(
    srv: *mut PagiServer,
    id: u64,
    interval: f64,
    timeout: f64,
) -> i32 {
    // Pings at most every 10 ms: a tiny interval must not become a busy loop.
    let secs = |v: f64, min: f64| {
        (v.is_finite() && v > 0.0).then(|| std::time::Duration::from_secs_f64(v.clamp(min, 1e9)))
    };
    guard(srv, |s| {
        let out = crate::server::Out::WsKeepalive {
            interval: secs(interval, 0.01),
            timeout: secs(timeout, 0.0),
        };
        state_code(s.core.ws_control(id, out))
    })
}

/// `op`: 0 = forget (Perl saw the end), 1 = abort (close the connection).
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_request_end(srv: *mut PagiServer, id: u64, op: i32) -> i32 {
    guard(srv, |s| {
        if op == 1 {
            s.core.abort(id);
        } else {
            s.core.forget(id);
        }
        OK
    })
}

/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_body_ack(srv: *mut PagiServer, id: u64, n: usize) -> i32 {
    guard(srv, |s| {
        s.core.body_ack(id, n);
        OK
    })
}

/// Response bytes waiting for a slow client (for `pagi.transport`).
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_buffered(srv: *mut PagiServer, id: u64) -> i32 {
    guard(srv, |s| {
        i32::try_from(s.core.buffered(id)).unwrap_or(i32::MAX)
    })
}

/// `phase`: 1 = stop accepting and finish in-flight requests, 2 = close all.
/// An IDLE record follows once no connection is left.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_shutdown(srv: *mut PagiServer, phase: i32) -> i32 {
    guard(srv, |s| {
        let p = if phase >= 2 {
            server::FORCE
        } else {
            server::GRACEFUL
        };
        s.core.begin_shutdown(p);
        OK
    })
}

/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_connections(srv: *mut PagiServer) -> i32 {
    guard(srv, |s| {
        i32::try_from(s.core.connection_count()).unwrap_or(i32::MAX)
    })
}

/// Stops accepting new connections for `ms` milliseconds.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_pause_accept(srv: *mut PagiServer, ms: u32) -> i32 {
    guard(srv, |s| {
        s.core
            .pause_accept(std::time::Duration::from_millis(u64::from(ms)));
        OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_packing_round_trips_and_rejects_truncation() {
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_ne_bytes());
        for (n, v) in [("a", "1"), ("bb", "")] {
            b.extend_from_slice(&(n.len() as u32).to_ne_bytes());
            b.extend_from_slice(n.as_bytes());
            b.extend_from_slice(&(v.len() as u32).to_ne_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        let h = unpack_headers(&b).expect("valid");
        assert_eq!(h, vec![(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b""[..])]);
        assert!(unpack_headers(&b[..b.len() - 3]).is_none());
        assert!(unpack_headers(&[1, 0]).is_none());
    }
}
