//! The per-process tokio runtime.
//!
//! Created lazily by the first server that listens in a process and shut down
//! when the last one is released, so an idle embedding keeps no threads. A
//! runtime inherited across fork() is dead in the child: it is leaked there
//! (never dropped, which would touch the parent's threads) and a new one built.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

struct Owned {
    pid: u32,
    rt: Option<Runtime>,
    users: usize,
}

static RT: Mutex<Option<Owned>> = Mutex::new(None);

fn worker_threads() -> usize {
    std::env::var("PAGI_SERVER_RUST_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or(1)
}

/// Builds a runtime with every signal blocked on the calling (Perl) thread
/// while the workers are spawned: they inherit the mask, so Perl's signal
/// handlers only ever run on the Perl thread.
fn build() -> io::Result<Runtime> {
    // SAFETY: sigset_t is plain data; the calls only read/write these locals.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("pagi-server-io")
            .enable_io()
            .enable_time()
            .build();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        rt
    }
}

/// Takes a reference on the process runtime, building it if needed.
pub fn acquire() -> io::Result<Handle> {
    let pid = std::process::id();
    let mut slot = RT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(owned) = slot.as_mut() {
        if owned.pid == pid {
            if let Some(rt) = owned.rt.as_ref() {
                owned.users += 1;
                return Ok(rt.handle().clone());
            }
        } else if let Some(dead) = owned.rt.take() {
            std::mem::forget(dead);
        }
    }
    let rt = build()?;
    let handle = rt.handle().clone();
    *slot = Some(Owned {
        pid,
        rt: Some(rt),
        users: 1,
    });
    Ok(handle)
}

/// Drops a reference; the last one in the owning process stops the runtime.
pub fn release() {
    let mut slot = RT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(owned) = slot.as_mut() else { return };
    if owned.pid != std::process::id() {
        return;
    }
    owned.users = owned.users.saturating_sub(1);
    if owned.users == 0 {
        if let Some(rt) = owned.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        *slot = None;
    }
}
