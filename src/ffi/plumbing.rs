//! What every C entry point shares: the server handle Perl holds, the
//! panic guard, and helpers that read C buffers and hand text back.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::proto::h1::conn::panic_message;
use crate::server::{SendState, ServerCore};

use crate::abi::code::{ERR, ERR_PANIC, GONE, OK, PENDING};

/// The server behind the handle XS keeps in Perl.
pub struct PagiServer {
    pub(crate) core: Arc<ServerCore>,
    /// The process that created it: a forked child must not shut it down.
    pub(super) owner_pid: u32,
    /// `pagi_server_listen` took a share of the I/O runtime.
    pub(super) holds_runtime: bool,
    /// The records of the last drain, read by XS until the next one.
    pub(super) drained: Vec<u8>,
    /// The last message or access-log line handed to C.
    pub(super) text: String,
    /// The TLS listeners' acceptor (the `ssl` option), built with the server
    /// so that a bad certificate or key fails at once.
    pub(super) tls: Option<Arc<crate::net::tls::Acceptor>>,
    /// The scalars of the last `pagi_take_returned` (see `held`), freed by
    /// XS.
    pub(super) returned: Vec<usize>,
}

/// Runs `f` on the live server behind `srv`, turning a panic into
/// `ERR_PANIC` with its message kept for `pagi_server_text`.
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
pub(super) fn unpack_headers(mut b: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
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
pub(super) fn hand_out(
    s: &mut PagiServer,
    text: Option<String>,
    out: *mut *const u8,
    out_len: *mut usize,
) {
    s.text = text.unwrap_or_default();
    if !out.is_null() && !out_len.is_null() {
        // SAFETY: XS passes addresses of two locals.
        unsafe {
            *out = s.text.as_ptr();
            *out_len = s.text.len();
        }
    }
}

thread_local! {
    static FORMATTED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Hands `text` to C through `out`/`out_len` for a call that has no server
/// to hold it: the bytes stay valid until the next such call on this thread.
///
/// # Safety
/// `out` and `out_len` are writable.
pub(super) unsafe fn hand_out_local(text: String, out: *mut *const u8, out_len: *mut usize) -> i32 {
    FORMATTED.with(|cell| {
        let mut b = cell.borrow_mut();
        *b = text;
        // SAFETY: the caller passes two writable locals of XS.
        unsafe {
            *out = b.as_ptr();
            *out_len = b.len();
        }
        OK
    })
}

/// Runs a call that has no server to hold its error text: a failure or a
/// panic is copied into `err` and becomes `Err(ERR)`.
///
/// # Safety
/// As `copy_err`.
pub(super) unsafe fn without_server<T>(
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
pub(super) unsafe fn copy_err(msg: &str, err: *mut u8, err_cap: usize) {
    if !err.is_null() && err_cap > 0 {
        let n = msg.len().min(err_cap - 1);
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
        *err.add(n) = 0;
    }
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
