//! Memory given back to the system once a burst is over.
//!
//! A connection gives its buffers back to the allocator as soon as it waits
//! for its next request (`proto::h1::conn`), and the app's large strings are
//! freed by Perl when its requests end; but glibc's malloc keeps freed
//! memory inside its heaps (only the top of a heap is ever shrunk, and
//! after the first large block is freed it stops mapping large blocks on
//! their own), so after a burst of large requests the process would stay
//! as large as at the burst's peak. Once the server is quiet again, and the
//! allocator holds at least `TRIM_MIN` bytes free, `malloc_trim(0)` hands
//! the free pages of every heap back (glibc only; elsewhere this does
//! nothing).

use std::sync::Arc;
use std::time::Duration;

use crate::server::{ServerCore, RUNNING};

/// How often the server's activity is looked at.
const TICK: Duration = Duration::from_secs(1);
/// A tick in which at most this many requests started is quiet.
const QUIET_MAX: u64 = 100;
/// For how many ticks after the last request the allocator is looked at
/// (a burst's memory is freed as its requests end, which can be after the
/// last one started).
const WATCH_TICKS: u32 = 5;
/// Free bytes held by the allocator worth giving back.
pub(crate) const TRIM_MIN: usize = 2 << 20;

/// Runs until the server leaves the running phase: at each quiet tick
/// within `WATCH_TICKS` of a request, gives free memory back when there is
/// enough of it (on a blocking thread: trimming large heaps takes a few
/// milliseconds that the I/O thread should not wait for).
pub async fn give_back_when_quiet(core: Arc<ServerCore>) {
    let mut sd = core.shutdown_watch();
    let mut seen = core.requests_opened();
    let mut watch = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            r = sd.changed() => if r.is_err() || *sd.borrow() != RUNNING {
                return;
            },
        }
        let now = core.requests_opened();
        let started = now.wrapping_sub(seen);
        seen = now;
        if started > 0 {
            watch = WATCH_TICKS;
        }
        if watch == 0 || started > QUIET_MAX {
            continue;
        }
        watch -= 1;
        // The records of a burst may still sit in the buffer Perl's side
        // drained last: one more drain gives it back (for the next tick's
        // trim, if this one comes first).
        if core.bridge.holds_burst() {
            core.bridge.wake();
        }
        let _ = tokio::task::spawn_blocking(|| trim(TRIM_MIN)).await;
    }
}

/// Gives the allocator's free pages back to the system if it holds at least
/// `min` bytes free (always, where that cannot be told). Returns whether it
/// trimmed.
pub(crate) fn trim(min: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if free_bytes().is_some_and(|free| free < min) {
            return false;
        }
        // SAFETY: malloc_trim only takes the allocator's own locks.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = min;
        false
    }
}

/// Bytes free inside the allocator's heaps (glibc's `mallinfo2`, looked up
/// when first needed: it is missing before glibc 2.33).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn free_bytes() -> Option<usize> {
    use std::sync::OnceLock;
    type MallInfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    static FN: OnceLock<Option<MallInfo2>> = OnceLock::new();
    let f = FN.get_or_init(|| {
        // SAFETY: a lookup by a NUL-terminated name; the symbol, when
        // present, is glibc's mallinfo2 with this signature.
        unsafe {
            let p = libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr());
            (!p.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, MallInfo2>(p))
        }
    });
    // SAFETY: mallinfo2 takes no argument and only reads the allocator.
    f.map(|f| unsafe { f() }.fordblks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident set, in KiB.
    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_is_given_back() {
        // 128 MiB in blocks below glibc's mmap threshold, touched, then all
        // freed but one in each 64 (so that the heap cannot just shrink
        // from its top): the process stays as large until a trim.
        let mut blocks: Vec<Vec<u8>> = (0..2048).map(|i| vec![i as u8 | 1; 64000]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let free = free_bytes().expect("mallinfo2 (glibc 2.33 or later)");
        assert!(free >= 100 << 20, "free after the frees: {free}");
        assert!(!trim(usize::MAX), "under the minimum nothing is done");
        let before = rss_kib();
        assert!(trim(TRIM_MIN));
        let after = rss_kib();
        // Other tests run meanwhile: only most of it is asked for.
        assert!(
            before.saturating_sub(after) >= 64 * 1024,
            "RSS {before} KiB before the trim, {after} KiB after"
        );
        assert_eq!(kept.len(), 32);
    }
}
