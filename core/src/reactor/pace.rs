//! Flow control for a writer on another thread: how much of what it wrote is still queued,
//! and a wait until that has drained to the low watermark.
//!
//! The writer counts the bytes it sends (`sent`); the reactor counts the bytes it has taken
//! from its inbox (`taken`) and publishes the connection's output queue after every flush
//! (`out`). Queued = `sent - taken + out`: in the inbox, plus in the output queue. The
//! reactor stores a write's new `out` before it counts the write `taken`, so a reader may
//! count the write twice for a moment, never not at all. A writer that waits counts itself
//! in `waiting` under the lock and checks again before sleeping; the reactor stores `out`
//! (or `taken`) before it reads `waiting` (all sequentially consistent), so either the
//! writer sees the new count or the reactor sees it waiting and wakes it.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::conn::ConnId;
use crate::error::{Error, Result};
use crate::server::ServerHandle;

/// How long a wait sleeps before it checks on its own that the connection still lives: a
/// reactor closing a connection wakes its waiters, and one that ends (even by a panic)
/// marks every id of its slot table dead, which this notices.
const RECHECK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Pacer {
    sent: AtomicUsize,
    taken: AtomicUsize,
    out: AtomicUsize,
    closed: AtomicBool,
    /// Writers asleep in `wait` (several clones of a `BodyWaiter` may wait at once).
    waiting: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    low: usize,
    /// One response's body: a later one's pacer closes it (the other kind, a connection's
    /// writer, lives beside any number of others).
    exclusive: bool,
    /// The reactor has told `out` once. A connection's writer is registered when made, and
    /// waits for that, so its first wait counts what others queued before it; a response's
    /// body starts on a connection with nothing else queued after its head.
    known: AtomicBool,
}

impl Pacer {
    /// A pacer that lets a writer go on once at most `low` bytes are queued; `exclusive`
    /// for a response's body, which a later response's body replaces.
    pub(crate) fn new(low: usize, exclusive: bool) -> Self {
        Pacer {
            sent: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            out: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            low,
            exclusive,
            known: AtomicBool::new(exclusive),
        }
    }

    pub(crate) fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// Bytes written and not yet handed to the kernel.
    pub(crate) fn queued(&self) -> usize {
        // `taken` first: every byte it counts was counted in `sent` before.
        let taken = self.taken.load(SeqCst);
        let sent = self.sent.load(SeqCst);
        sent.saturating_sub(taken) + self.out.load(SeqCst)
    }

    /// The writer: `n` more bytes are on their way to the reactor.
    pub(crate) fn sending(&self, n: usize) {
        self.sent.fetch_add(n, SeqCst);
    }

    /// The reactor: it took a write of `n` bytes from its inbox, after which the connection
    /// holds `out` bytes (its output queue and writes held back while a job runs).
    pub(crate) fn took(&self, n: usize, out: usize) {
        self.out.store(out, SeqCst);
        self.known.store(true, SeqCst);
        self.taken.fetch_add(n, SeqCst);
        self.wake_if_room();
    }

    /// The reactor: the connection's output holds `out` bytes now (after a flush).
    pub(crate) fn publish(&self, out: usize) {
        self.out.store(out, SeqCst);
        self.known.store(true, SeqCst);
        self.wake_if_room();
    }

    fn wake_if_room(&self) {
        if self.waiting.load(SeqCst) > 0 && self.room() {
            self.notify();
        }
    }

    /// At most the low watermark is queued, as far as the reactor has told.
    fn room(&self) -> bool {
        self.known.load(SeqCst) && self.queued() <= self.low
    }

    /// The reactor: the connection closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.notify();
    }

    fn notify(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Waits until at most the low watermark is queued (`Ok(true)`), or `timeout` passes
    /// (`Ok(false)`). `Closed` once the connection is gone; `WrongThread` on one of the
    /// server's own threads, whose reactor could not flush while it waited.
    pub(crate) fn wait(
        &self,
        handle: &ServerHandle,
        id: ConnId,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        if handle.is_own_thread() {
            return Err(Error::WrongThread);
        }
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.closed.load(SeqCst) || !handle.is_live(id) {
                return Err(Error::Closed);
            }
            let mut nap = RECHECK;
            if let Some(Some(d)) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(self.room());
                }
                nap = nap.min(left);
            }
            self.waiting.fetch_add(1, SeqCst);
            if self.room() {
                self.waiting.fetch_sub(1, SeqCst);
                return Ok(true);
            }
            g = self
                .wake
                .wait_timeout(g, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            self.waiting.fetch_sub(1, SeqCst);
        }
    }
}
