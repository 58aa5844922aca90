//! Counters: written by their owning reactor without locks, summed into a [`Stats`] snapshot
//! by any thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::CloseReason;

/// Counters owned by one reactor. Each is written by that reactor only, so an increment is a
/// plain load and store (no locked instruction); readers on other threads see a recent value.
/// Aligned to keep reactors' counters on separate cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ReactorStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) closed: [AtomicU64; CloseReason::COUNT],
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) accept_paused_limit: AtomicU64,
    pub(crate) accept_paused_emfile: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) pool_hits: AtomicU64,
    pub(crate) pool_misses: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) handler_failures: AtomicU64,
    pub(crate) read_pauses: AtomicU64,
    pub(crate) jobs_queued: AtomicU64,
    pub(crate) queue_high_water: AtomicU64,
    pub(crate) backpressure_pauses: AtomicU64,
}

/// Adds to a counter that only the calling thread writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Adds to a counter that other threads add to as well (`handler_failures`: a worker counts
/// the failure of an `on_close` it runs after its reactor left).
#[inline]
pub(crate) fn bump_shared(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Sets a gauge that only the calling thread writes.
#[inline]
pub(crate) fn set(c: &AtomicU64, v: u64) {
    c.store(v, Relaxed);
}

/// A point-in-time snapshot of a server's counters, summed over its reactors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Inbound connections accepted.
    pub accepted: u64,
    /// Outbound connections established.
    pub connected: u64,
    /// Connections currently open (inbound and outbound, including connecting ones).
    pub active: u64,
    /// Connections closed, indexed by [`CloseReason::index`].
    pub closed: [u64; CloseReason::COUNT],
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Times accepting paused because `max_connections` was reached.
    pub accept_paused_limit: u64,
    /// Times accepting paused because the process or system ran out of descriptors or memory.
    pub accept_paused_emfile: u64,
    /// Other accept errors (for example `ECONNABORTED`), and accepted connections dropped
    /// before they opened (no free slot, a panicking state `Default`, a failed registration).
    pub accept_errors: u64,
    /// Buffers served from a reactor's pool.
    pub pool_hits: u64,
    /// Buffers the pool had to allocate.
    pub pool_misses: u64,
    /// Commands received from other threads (writes, closes, timers, connects, hand-offs).
    pub commands: u64,
    /// Handler callbacks that panicked or reported failure.
    pub handler_failures: u64,
    /// Times reading from a connection paused because its output passed the high watermark.
    pub read_pauses: u64,
    /// Pool mode: jobs handed to the worker queue.
    pub jobs_queued: u64,
    /// Pool mode: callbacks running on workers right now.
    pub jobs_running: u64,
    /// Pool mode: jobs finished by workers.
    pub jobs_completed: u64,
    /// Pool mode: the deepest the worker queue has been.
    pub queue_high_water: u64,
    /// Pool mode: times reading from a connection paused because the queue was full or its
    /// input waiting for the worker passed `max_pending_input`.
    pub backpressure_pauses: u64,
}

impl Stats {
    /// Connections closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// All closed connections.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    /// Connections closed by any timeout.
    pub fn timeouts(&self) -> u64 {
        CloseReason::ALL
            .iter()
            .filter(|r| r.is_timeout())
            .map(|r| self.closed(*r))
            .sum()
    }

    pub(crate) fn add(&mut self, r: &ReactorStats) {
        self.accepted += r.accepted.load(Relaxed);
        self.connected += r.connected.load(Relaxed);
        self.active += r.active.load(Relaxed);
        for (a, b) in self.closed.iter_mut().zip(&r.closed) {
            *a += b.load(Relaxed);
        }
        self.bytes_in += r.bytes_in.load(Relaxed);
        self.bytes_out += r.bytes_out.load(Relaxed);
        self.accept_paused_limit += r.accept_paused_limit.load(Relaxed);
        self.accept_paused_emfile += r.accept_paused_emfile.load(Relaxed);
        self.accept_errors += r.accept_errors.load(Relaxed);
        self.pool_hits += r.pool_hits.load(Relaxed);
        self.pool_misses += r.pool_misses.load(Relaxed);
        self.commands += r.commands.load(Relaxed);
        self.handler_failures += r.handler_failures.load(Relaxed);
        self.read_pauses += r.read_pauses.load(Relaxed);
        self.jobs_queued += r.jobs_queued.load(Relaxed);
        self.queue_high_water = self.queue_high_water.max(r.queue_high_water.load(Relaxed));
        self.backpressure_pauses += r.backpressure_pauses.load(Relaxed);
    }
}
