//! A server's life: creation from its configuration, binding (for itself
//! or for workers), serving, the record queue Perl drains, and shutdown.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::plumbing::{guard, hand_out, hand_out_local, slice, without_server, PagiServer};
use crate::abi::code::{ERR, OK};
use crate::abi::phase::FORCE;
use crate::config::Config;
use crate::net::tls::Acceptor;
use crate::net::{self, listener};
use crate::runtime;
use crate::server::{self, ServerCore};

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
    crate::proto::h1::conn::install_panic_hook();
    let made = without_server(
        || {
            let text = std::str::from_utf8(slice(cfg, len))
                .map_err(|_| "configuration is not UTF-8".to_string())?;
            let cfg = Config::parse(text)?;
            let tls = cfg.tls.as_ref().map(Acceptor::new).transpose()?;
            let core = ServerCore::new(cfg).map_err(|e| format!("cannot create eventfd: {e}"))?;
            Ok::<_, String>(Box::new(PagiServer {
                tls: tls.map(Arc::new),
                core: Arc::new(core),
                owner_pid: std::process::id(),
                holds_runtime: false,
                drained: Vec::new(),
                text: String::new(),
                returned: Vec::new(),
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
            let bound = listener::bind_all(&c.listen, c.backlog, c.reuseport)?;
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
        Ok(text) => hand_out_local(text, out, out_len),
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
        let bound = match listener::bind_all(
            &s.core.cfg.listen,
            s.core.cfg.backlog,
            s.core.cfg.reuseport,
        ) {
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
        if let Err(e) = net::accept::start(&s.core, &rt, bound, s.tls.as_ref()) {
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

/// Takes every queued record (format in bridge/queue.rs).
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
        // Perl now works through these records: what it sends meanwhile is
        // held until `pagi_server_flush` (see batch.rs).
        s.core.batch.hold();
        OK
    })
}

/// Ends the batch `pagi_server_drain` began: the sends held meanwhile go
/// to their connections.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_flush(srv: *mut PagiServer) -> i32 {
    guard(srv, |s| {
        s.core.batch.release();
        OK
    })
}

/// `phase` (`crate::abi::phase`): GRACEFUL stops accepting and lets
/// in-flight requests finish, FORCE closes every connection.
/// An IDLE record follows once no connection is left.
///
/// # Safety
/// `srv` is live.
#[no_mangle]
pub unsafe extern "C" fn pagi_server_shutdown(srv: *mut PagiServer, phase: i32) -> i32 {
    guard(srv, |s| {
        let p = if phase >= FORCE {
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
