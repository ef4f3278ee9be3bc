//! What the app sends back for one request: the response head, body,
//! file bodies and trailers, stream settings, WebSocket frames, and the
//! acknowledgements and endings that steer flow control.

use bytes::Bytes;

use super::plumbing::{copy_err, guard, hand_out, slice, state_code, unpack_headers, PagiServer};
use crate::abi::code::{ERR, OK};
use crate::abi::end_op;
use crate::net::listener;
use crate::server::Out;
use crate::sse::Settings;

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
        queue_body(
            s,
            id,
            Bytes::copy_from_slice(slice(data, len)),
            fin,
            log,
            log_len,
        )
    })
}

/// `send_body` for both entry points: the code, and the log line handed
/// out through `log`/`log_len` (as `hand_out` does).
fn queue_body(
    s: &mut PagiServer,
    id: u64,
    body: Bytes,
    fin: i32,
    log: *mut *const u8,
    log_len: *mut usize,
) -> i32 {
    let (st, line) = s.core.send_body(id, body, fin != 0);
    hand_out(s, line, log, log_len);
    state_code(st)
}

/// As `pagi_send_body`, for bytes read in place: `data`/`len` are the
/// buffer of `sv`, a scalar XS made for this call and now gives up; it
/// comes back through `pagi_take_returned` once the bytes are done with.
///
/// # Safety
/// As `pagi_send_body`; the buffer stays unchanged until `sv` comes back.
#[no_mangle]
pub unsafe extern "C" fn pagi_send_body_held(
    srv: *mut PagiServer,
    id: u64,
    sv: *mut std::ffi::c_void,
    data: *const u8,
    len: usize,
    fin: i32,
    log: *mut *const u8,
    log_len: *mut usize,
) -> i32 {
    guard(srv, |s| {
        let body = crate::held::hold(&s.core.held, sv as usize, data, len);
        queue_body(s, id, body, fin, log, log_len)
    })
}

/// The scalars given back since the last call (see `pagi_send_body_held`),
/// for XS to free: `*out` points to `*n` of them, valid until the next call.
///
/// # Safety
/// `srv` is live; `out` and `n` are writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_take_returned(
    srv: *mut PagiServer,
    out: *mut *const *mut std::ffi::c_void,
    n: *mut usize,
) -> i32 {
    guard(srv, |s| {
        s.core.held.take(&mut s.returned);
        // SAFETY: XS passes the addresses of two locals.
        unsafe {
            *out = s.returned.as_ptr().cast();
            *n = s.returned.len();
        }
        OK
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
            // A negative offset: not given.
            if let Ok(at) = u64::try_from(offset) {
                use std::io::Seek;
                (&f).seek(std::io::SeekFrom::Start(at))
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

/// Accepts a WebSocket handshake: `sub` (null: none) is the chosen
/// subprotocol, `hdrs` the app's extra fields packed as in `unpack_headers`.
/// The protocol that carried the handshake writes the answer.
///
/// # Safety
/// `srv` is live; `sub` points to `sub_len` bytes or is null; `hdrs`
/// points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_ws_accept(
    srv: *mut PagiServer,
    id: u64,
    sub: *const u8,
    sub_len: usize,
    hdrs: *const u8,
    len: usize,
) -> i32 {
    guard(srv, |s| match unpack_headers(slice(hdrs, len)) {
        Some(h) => {
            let sp = (!sub.is_null()).then(|| slice(sub, sub_len));
            state_code(s.core.ws_accept(id, sp, &h))
        }
        None => ERR,
    })
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
        let out = Out::WsClose {
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

/// The app waits for its next WebSocket message, having taken `taken`.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_ws_waiting(srv: *mut PagiServer, id: u64, taken: u64) -> i32 {
    guard(srv, |s| {
        s.core.ws_waiting(id, taken);
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
        let out = Out::WsKeepalive {
            interval: secs(interval, 0.01),
            timeout: secs(timeout, 0.0),
        };
        state_code(s.core.ws_control(id, out))
    })
}

/// `op` (`crate::abi::end_op`): FORGET when Perl saw the end, ABORT to
/// close the connection.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_request_end(srv: *mut PagiServer, id: u64, op: i32) -> i32 {
    guard(srv, |s| {
        if op == end_op::ABORT {
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

/// Response bytes waiting for a slow client (for `pagi.transport`), put in
/// `out` whole (a count, not an `i32` return, so nothing is cut).
///
/// # Safety
/// `srv` is live; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn pagi_buffered(srv: *mut PagiServer, id: u64, out: *mut u64) -> i32 {
    guard(srv, |s| {
        // usize is never wider than u64.
        let n = s.core.buffered(id) as u64;
        // SAFETY: XS passes the address of a local.
        unsafe { *out = n };
        OK
    })
}

/// Marks the response as an SSE stream (after `sse.start`) or updates its
/// keepalive (`sse.keepalive`): `frame` is written every `interval` seconds
/// (<= 0: never). Sends the held head if it is still held.
///
/// # Safety
/// `srv` is live; `frame` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pagi_sse_stream(
    srv: *mut PagiServer,
    id: u64,
    interval: f64,
    frame: *const u8,
    len: usize,
) -> i32 {
    guard(srv, |s| {
        let settings = Settings::new(interval, Bytes::copy_from_slice(slice(frame, len)));
        state_code(s.core.stream_control(id, Out::Sse(settings)))
    })
}

/// The app sent an SSE event that Perl keeps for now (an `sse.keepalive`
/// before `sse.start`, a declining `sse.http.response.*`): the stream's
/// idle clock starts again.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_sse_touch(srv: *mut PagiServer, id: u64) -> i32 {
    guard(srv, |s| {
        s.core.touch(id);
        OK
    })
}

/// Drops a response head that has not gone out yet (a file body could not
/// be opened): 1 when one was dropped, so the app may start again; 0 when
/// the head is already on its way.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_unstart(srv: *mut PagiServer, id: u64) -> i32 {
    guard(srv, |s| i32::from(s.core.unstart(id)))
}
