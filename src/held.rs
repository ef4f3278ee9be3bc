//! Body bytes read in place from a Perl scalar: a large `http.response.body`
//! is not copied on the Perl thread. XS hands over a private scalar of its
//! own (a copy of the app's body that shares the string buffer
//! copy-on-write, so neither the app nor Perl writes into it while it is
//! shared) and its bytes; the connection writes them from there. Perl
//! scalars may only be freed on the Perl thread, so when the bytes are done
//! with (written, or dropped with the connection) the scalar comes back here,
//! and XS frees what came back at its next call (`pagi_take_returned`). A
//! request that ends with scalars waiting wakes Perl for them (a RETURNED
//! record, see `Exchange`): a server that goes idle keeps none.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Scalars given back by the connections, to be freed on the Perl thread.
#[derive(Default)]
pub struct Returns {
    svs: Mutex<Vec<usize>>,
}

impl Returns {
    fn give_back(&self, sv: usize) {
        self.svs.lock().unwrap_or_else(|e| e.into_inner()).push(sv);
    }

    /// Whether scalars wait to be freed.
    pub fn waiting(&self) -> bool {
        !self
            .svs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Moves every scalar given back into `into` (cleared first).
    pub fn take(&self, into: &mut Vec<usize>) {
        into.clear();
        let mut svs = self.svs.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *svs, into);
    }
}

/// `len` bytes at `ptr`, the buffer of the Perl scalar `sv` that this owns.
struct Held {
    sv: usize,
    ptr: *const u8,
    len: usize,
    home: Arc<Returns>,
}

// SAFETY: the buffer is never written while it is held (see the module
// comment), so reading it from another thread is sound; the scalar itself
// is only ever touched again by XS on the Perl thread, after `drop` has
// given it back.
unsafe impl Send for Held {}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr`/`len` describe the live buffer of the scalar held
        // (checked non-null above).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.home.give_back(self.sv);
    }
}

/// The bytes of `sv` (a scalar XS made for this and gives up) as `Bytes`;
/// `sv` is given back to `home` once the last of them is dropped.
///
/// # Safety
/// `ptr` points to `len` bytes that stay unchanged until `sv` is given back.
pub(crate) unsafe fn hold(home: &Arc<Returns>, sv: usize, ptr: *const u8, len: usize) -> Bytes {
    Bytes::from_owner(Held {
        sv,
        ptr,
        len,
        home: home.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_back_once_the_last_piece_is_dropped() {
        let home = Arc::new(Returns::default());
        let buf = b"0123456789".to_vec();
        // SAFETY: `buf` outlives every piece.
        let mut whole = unsafe { hold(&home, 42, buf.as_ptr(), buf.len()) };
        let head = whole.split_to(4);
        assert_eq!(&head[..], b"0123");
        assert_eq!(&whole[..], b"456789");
        let mut got = Vec::new();
        drop(whole);
        home.take(&mut got);
        assert!(got.is_empty() && !home.waiting(), "a piece is still alive");
        let moved = std::thread::spawn(move || drop(head));
        moved.join().expect("thread");
        assert!(home.waiting());
        home.take(&mut got);
        assert_eq!(got, [42]);
        home.take(&mut got);
        assert!(got.is_empty(), "given back once");
    }
}
