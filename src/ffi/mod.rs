//! The C ABI called by xs/Server.xs, on the Perl thread only.
//!
//! Every exported function catches panics (they must never unwind into
//! Perl) and reports them as `ERR_PANIC`; pointers handed back stay valid
//! until the next call on the same server (or, for calls without a server,
//! on the same thread).
//!
//! - `plumbing`: the server handle, panic guard and pointer helpers
//! - `lifecycle`: creating, binding, serving, draining and stopping a server
//! - `sends`: what the app sends back (response, file, SSE, WebSocket)
//! - `tools`: calls that need no server (head parser, access-log formatter)

pub mod lifecycle;
pub mod plumbing;
pub mod sends;
pub mod tools;
