//! The Rust -> Perl half of the bridge.
//!
//! Tokio tasks append encoded records to one byte buffer per server and wake
//! the Perl thread through an eventfd. The eventfd is written only on the
//! empty -> non-empty transition (tracked by `armed`), and Perl takes every
//! queued record in one `drain` call, so one wake-up carries many requests.
//!
//! Wire format of a record (native endian, decoded by xs/Server.xs):
//!   u8 kind (crate::abi::kind), u64 id, then kind-specific fields; a
//!   "bytes" field is a u64 length followed by that many bytes, and counts
//!   are u64 too, so no length the core can hold is ever cut short.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::abi::kind;

/// Capacity a drained buffer keeps for reuse.
const SPARE_CAPACITY: usize = 1 << 20;

pub struct Bridge {
    buf: Mutex<Vec<u8>>,
    armed: AtomicBool,
    efd: OwnedFd,
    /// Capacity of the buffer the last drain handed out (kept by Perl's
    /// side until its next drain).
    handed_out: AtomicUsize,
}

/// Appends the fields of one record (the layout XS reads back).
pub struct RecordWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> RecordWriter<'a> {
    pub fn over(buf: &'a mut Vec<u8>) -> Self {
        RecordWriter { buf }
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }
    /// A length or count, as a u64 (usize is never wider).
    pub fn len(&mut self, n: usize) -> &mut Self {
        self.u64(n as u64)
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.len(v.len());
        self.buf.extend_from_slice(v);
        self
    }
}

impl Bridge {
    pub fn new() -> io::Result<Bridge> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Bridge {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            armed: AtomicBool::new(false),
            handed_out: AtomicUsize::new(0),
            // SAFETY: fd was just returned by eventfd and is owned by nobody else.
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Appends one record built by `fill` and wakes Perl if it was idle.
    pub fn push(&self, kind: u8, id: u64, fill: impl FnOnce(&mut RecordWriter<'_>)) {
        {
            let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            buf.push(kind);
            buf.extend_from_slice(&id.to_ne_bytes());
            fill(&mut RecordWriter { buf: &mut buf });
        }
        self.wake();
    }

    /// Wakes Perl unless it was woken already (a push does; with nothing
    /// queued Perl drains nothing).
    pub fn wake(&self) {
        if !self.armed.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A
            // failure (counter overflow) still leaves the fd readable.
            unsafe {
                libc::write(self.fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    pub fn log(&self, lvl: u8, msg: &str) {
        self.push(kind::LOG, 0, |w| {
            w.u8(lvl).bytes(msg.as_bytes());
        });
    }

    /// Takes every queued record. `spare` is the buffer handed out by the
    /// previous drain; it is reused so steady state allocates nothing.
    pub fn drain(&self, spare: &mut Vec<u8>) {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local array; EAGAIN is fine.
        unsafe {
            libc::read(self.fd(), counter.as_mut_ptr().cast(), 8);
        }
        // Disarm before taking the buffer: a push that lands after the swap
        // then sees `armed == false` and wakes us again.
        self.armed.store(false, Ordering::SeqCst);
        spare.clear();
        // A burst's buffer is not kept for good.
        spare.shrink_to(SPARE_CAPACITY);
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *buf, spare);
        self.handed_out.store(spare.capacity(), Ordering::Relaxed);
    }

    /// The buffer of the last drain is larger than a drain keeps for reuse
    /// (a burst went through it): it is given back by the next drain, which
    /// `wake` brings about on a server that has gone quiet.
    pub fn holds_burst(&self) -> bool {
        self.handed_out.load(Ordering::Relaxed) > SPARE_CAPACITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn wakes_once_and_drains_everything() {
        let b = Bridge::new().expect("eventfd");
        assert!(!readable(b.fd()));
        b.push(kind::DRAIN, 7, |_| {});
        b.push(kind::BODY, 8, |w| {
            w.bytes(b"abc").u8(1);
        });
        assert!(readable(b.fd()));
        let mut out = Vec::new();
        b.drain(&mut out);
        assert!(!readable(b.fd()));
        assert_eq!(out.len(), (1 + 8) + (1 + 8 + 8 + 3 + 1));
        assert_eq!(out[0], kind::DRAIN);
        assert_eq!(&out[1..9], &7u64.to_ne_bytes());
        assert_eq!(out[9], kind::BODY);
        // A push after the drain wakes again.
        b.push(kind::IDLE, 0, |_| {});
        assert!(readable(b.fd()));
        b.drain(&mut out);
        assert_eq!(out, vec![kind::IDLE, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_burst_buffer_is_given_back_by_a_wake_and_an_empty_drain() {
        let b = Bridge::new().expect("eventfd");
        let mut out = Vec::new();
        let big = vec![1u8; 4 * SPARE_CAPACITY];
        b.push(kind::BODY, 1, |w| {
            w.bytes(&big).u8(0);
        });
        b.drain(&mut out);
        assert!(out.len() > 4 * SPARE_CAPACITY);
        assert!(b.holds_burst(), "the burst's buffer was handed out");
        // Nothing more comes: a wake makes Perl drain nothing, and that
        // drain shrinks the burst's buffer.
        b.wake();
        assert!(readable(b.fd()));
        b.drain(&mut out);
        assert!(out.is_empty());
        assert!(!b.holds_burst());
        b.drain(&mut out);
        assert!(
            out.capacity() <= SPARE_CAPACITY,
            "capacity {}",
            out.capacity()
        );
    }
}
