//! Flow control for a writer on another thread: how much of what it wrote is still queued,
//! and a wait until that has drained to the low watermark.
//!
//! The writer counts the bytes it sends (`sent`); the reactor counts the bytes it has taken
//! from its inbox (`taken`) and publishes the connection's output queue after every flush
//! (`out`). Queued = `sent - taken + out`: in the inbox, plus in the output queue. A writer
//! that waits sets `waiting` under the lock and checks again before sleeping; the reactor
//! stores `out` before it reads `waiting` (both sequentially consistent), so either the
//! writer sees the new `out` or the reactor sees it waiting and wakes it.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::conn::ConnId;
use crate::error::{Error, Result};
use crate::server::ServerHandle;

/// How long a wait sleeps before it checks on its own that the connection still lives (a
/// reactor that exits closes its connections, which wakes the waiters, but this does not
/// depend on it).
const RECHECK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Pacer {
    sent: AtomicUsize,
    taken: AtomicUsize,
    out: AtomicUsize,
    closed: AtomicBool,
    waiting: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    low: usize,
}

impl Pacer {
    /// A pacer that lets a writer go on once at most `low` bytes are queued.
    pub(crate) fn new(low: usize) -> Self {
        Pacer {
            sent: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            out: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            low,
        }
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

    /// The reactor: it took `n` bytes from its inbox.
    pub(crate) fn took(&self, n: usize) {
        self.taken.fetch_add(n, SeqCst);
    }

    /// The reactor: the connection's output queue holds `out` bytes now.
    pub(crate) fn publish(&self, out: usize) {
        self.out.store(out, SeqCst);
        if self.waiting.load(SeqCst) && self.queued() <= self.low {
            self.notify();
        }
    }

    /// The reactor: the connection closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.notify();
    }

    fn notify(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.store(false, SeqCst);
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
                self.waiting.store(false, SeqCst);
                return Err(Error::Closed);
            }
            if self.queued() <= self.low {
                self.waiting.store(false, SeqCst);
                return Ok(true);
            }
            let mut nap = RECHECK;
            if let Some(Some(d)) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.waiting.store(false, SeqCst);
                    return Ok(false);
                }
                nap = nap.min(left);
            }
            self.waiting.store(true, SeqCst);
            if self.queued() <= self.low {
                continue;
            }
            g = self
                .wake
                .wait_timeout(g, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
