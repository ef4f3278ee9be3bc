//! Channel sends to connection tasks held back while Perl works through a
//! batch of records. Every send that wakes a task from the Perl thread can
//! cost the runtime an unpark (a syscall and a context switch); held until
//! the batch ends, a batch of responses wakes the runtime about once.
//!
//! Order is kept: while holding, every send from the Perl thread either
//! joins the queue or first delivers it (`deliver`). Held sends go once
//! `MAX_SENDS` are held, or when one held for `MAX_WAIT` is found overdue
//! (the clock is read every `CLOCK_EVERY` sends), so slow apps later in
//! the batch cannot hold back the answers before them for long.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

const MAX_WAIT: Duration = Duration::from_micros(500);
const MAX_SENDS: usize = 256;
const CLOCK_EVERY: usize = 4;

/// `B`: what goes on a response's body channel; `H`: its head.
enum Send<B, H> {
    Body(mpsc::UnboundedSender<B>, B),
    Head(oneshot::Sender<H>, H),
}

impl<B, H> Send<B, H> {
    fn go(self) {
        // A closed receiver: the connection dropped the response (HEAD, or
        // it ended); its own disconnect path reports that.
        match self {
            Send::Body(tx, out) => {
                let _ = tx.send(out);
            }
            Send::Head(tx, reply) => {
                let _ = tx.send(reply);
            }
        }
    }
}

struct State<B, H> {
    on: bool,
    since: Option<Instant>,
    sends: Vec<Send<B, H>>,
    /// The last batch's emptied Vec, kept so a batch does not allocate.
    spare: Vec<Send<B, H>>,
}

/// The held sends of one server.
pub struct Batch<B, H>(Mutex<State<B, H>>);

impl<B, H> Default for Batch<B, H> {
    fn default() -> Self {
        Batch(Mutex::new(State {
            on: false,
            since: None,
            sends: Vec::new(),
            spare: Vec::new(),
        }))
    }
}

impl<B, H> Batch<B, H> {
    fn state(&self) -> MutexGuard<'_, State<B, H>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch begins: sends are held from now on.
    pub fn hold(&self) {
        self.state().on = true;
    }

    /// The batch is over: everything held goes, and sends go at once again.
    pub fn release(&self) {
        self.state().on = false;
        self.deliver();
    }

    /// Delivers what is held now (before a send that must not overtake
    /// it), still holding afterwards.
    pub fn deliver(&self) {
        let mut sends = {
            let mut st = self.state();
            if st.sends.is_empty() {
                return;
            }
            st.since = None;
            let spare = std::mem::take(&mut st.spare);
            std::mem::replace(&mut st.sends, spare)
        };
        sends.drain(..).for_each(Send::go);
        // A burst's Vec is not kept for good.
        sends.shrink_to(MAX_SENDS);
        self.state().spare = sends;
    }

    /// Sends `out` on a response's body channel, or holds it.
    pub fn body(&self, tx: &mpsc::UnboundedSender<B>, out: B) {
        let st = self.state();
        if st.on {
            self.push(st, Send::Body(tx.clone(), out));
        } else {
            drop(st);
            let _ = tx.send(out);
        }
    }

    /// Sends a response head, or holds it.
    pub fn head(&self, tx: oneshot::Sender<H>, reply: H) {
        let st = self.state();
        if st.on {
            self.push(st, Send::Head(tx, reply));
        } else {
            drop(st);
            let _ = tx.send(reply);
        }
    }

    /// Holds `send` under the lock already taken, then delivers what is
    /// held if that is overdue.
    fn push(&self, mut st: MutexGuard<'_, State<B, H>>, send: Send<B, H>) {
        st.sends.push(send);
        // The clock is read for the first send held and then every
        // CLOCK_EVERY sends, not for each: what delays a held answer is
        // the apps run after it, and a few more cannot add much.
        let n = st.sends.len();
        let since = *st.since.get_or_insert_with(Instant::now);
        let overdue = n >= MAX_SENDS || (n % CLOCK_EVERY == 0 && since.elapsed() >= MAX_WAIT);
        drop(st);
        if overdue {
            self.deliver();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_in_order_until_released() {
        let batch: Batch<u8, u16> = Batch::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        batch.hold();
        batch.body(&tx, 1);
        batch.body(&tx, 2);
        assert!(rx.try_recv().is_err(), "held while the batch runs");
        batch.release();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        // Not holding: at once.
        batch.body(&tx, 1);
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[test]
    fn deliver_keeps_holding() {
        let batch: Batch<u8, u16> = Batch::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        batch.hold();
        batch.body(&tx, 1);
        batch.deliver();
        assert_eq!(rx.try_recv(), Ok(1));
        batch.body(&tx, 2);
        assert!(rx.try_recv().is_err(), "still holding after deliver");
        batch.release();
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn a_long_batch_does_not_hold_for_long() {
        let batch: Batch<u8, u16> = Batch::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        batch.hold();
        batch.body(&tx, 1);
        std::thread::sleep(MAX_WAIT * 2);
        for i in 2..=CLOCK_EVERY as u8 {
            batch.body(&tx, i);
        }
        for i in 1..=CLOCK_EVERY as u8 {
            assert_eq!(rx.try_recv(), Ok(i), "overdue sends go");
        }
        let (htx, mut hrx) = oneshot::channel();
        batch.head(htx, 204);
        assert!(hrx.try_recv().is_err());
        batch.release();
        assert_eq!(hrx.try_recv(), Ok(204));
    }
}
