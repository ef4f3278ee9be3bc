//! The C ABI for response controls beyond plain sends: SSE stream settings
//! and taking back a held response head. Called by xs/Server.xs on the Perl
//! thread only, with panics caught as in `ffi`.

use bytes::Bytes;

use crate::ffi::{guard, slice, state_code, PagiServer};
use crate::server::Out;
use crate::sse::Settings;

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
