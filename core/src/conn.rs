//! Connection ids, the shared slot table that makes stale ids detectable from any thread, and
//! [`Conn`], the context a callback uses to act on its connection.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Result;
use crate::reactor::Core;
use crate::server::ServerHandle;

const SLOT_BITS: u32 = 24;
const REACTOR_BITS: u32 = 8;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// Names one connection for its whole life: reactor index (8 bits), slot (24 bits) and a
/// generation (32 bits). Ids are never reused while a connection with the same slot could be
/// confused with it, so every operation on a stale id fails with [`Error::Closed`](crate::Error::Closed) instead of
/// touching a newer connection. The value 0 is never a valid id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(reactor: usize, slot: u32, generation: u32) -> Self {
        debug_assert!(reactor < (1 << REACTOR_BITS) && u64::from(slot) <= SLOT_MASK);
        ConnId(u64::from(generation) << 32 | (reactor as u64) << SLOT_BITS | u64::from(slot))
    }

    /// The id as a plain integer (for the C and Python bindings, and logs).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`ConnId::as_u64`]. Any value is accepted; a value that names no
    /// live connection makes every operation fail with [`Error::Closed`](crate::Error::Closed).
    pub fn from_u64(v: u64) -> Self {
        ConnId(v)
    }

    /// Index of the reactor thread that owns the connection.
    pub fn reactor(self) -> usize {
        ((self.0 >> SLOT_BITS) & ((1 << REACTOR_BITS) - 1)) as usize
    }

    pub(crate) fn slot(self) -> u32 {
        (self.0 & SLOT_MASK) as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnId({}:{}:{})",
            self.reactor(),
            self.slot(),
            self.generation()
        )
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Generation of every slot of one reactor, readable from any thread, plus the free list.
///
/// The reactor marks a slot live when a connection takes it and dead (generation 0) when it
/// closes, so [`crate::ServerHandle`] can reject a stale id at the call instead of silently
/// dropping the operation later. Other threads also allocate slots here for outbound
/// connections, which is what lets `connect` return an id at once from any thread. Taken once
/// per accept, close and cross-thread call; never on the per-message path of a callback.
#[derive(Debug, Default)]
pub(crate) struct SlotTable {
    inner: Mutex<SlotInner>,
}

#[derive(Debug, Default)]
struct SlotInner {
    gens: Vec<u32>,
    free: Vec<u32>,
    next_gen: u32,
}

impl SlotTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        // A poisoned lock only means another thread panicked between two plain stores; the
        // table is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a free slot and gives it a fresh generation; `None` when all 2^24 are in use.
    pub(crate) fn alloc(&self) -> Option<(u32, u32)> {
        let mut t = self.lock();
        let slot = match t.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(t.gens.len()).ok()?;
                if u64::from(s) > SLOT_MASK {
                    return None;
                }
                t.gens.push(0);
                s
            }
        };
        // Generation 0 marks a dead slot; u32::MAX is skipped so no id is all ones.
        t.next_gen = match t.next_gen.wrapping_add(1) {
            0 | u32::MAX => 1,
            g => g,
        };
        let g = t.next_gen;
        t.gens[slot as usize] = g;
        Some((slot, g))
    }

    /// Marks a slot dead and free for reuse.
    pub(crate) fn release(&self, slot: u32) {
        let mut t = self.lock();
        if let Some(g) = t.gens.get_mut(slot as usize) {
            *g = 0;
            t.free.push(slot);
        }
    }

    /// Whether `id` names the connection that currently holds its slot.
    pub(crate) fn is_live(&self, id: ConnId) -> bool {
        let g = id.generation();
        g != 0 && self.lock().gens.get(id.slot() as usize) == Some(&g)
    }
}

/// What a callback can do with its connection. Writes are queued and flushed once the callback
/// (or the batch of callbacks for one readiness event) returns, so several writes leave in one
/// system call. A `Conn` is only valid during the callback that received it.
#[derive(Debug)]
pub struct Conn<'a> {
    pub(crate) id: ConnId,
    pub(crate) core: &'a mut Core,
}

impl Conn<'_> {
    /// This connection's id, usable from any thread through a [`ServerHandle`].
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues `data` for writing. Fails with [`Error::WriteOverflow`](crate::Error::WriteOverflow) (and closes the
    /// connection) if the output queue would exceed `max_write_buffer`, and with
    /// [`Error::Closed`](crate::Error::Closed) if the connection is already closing.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.core.write_copy(self.id, data)
    }

    /// Queues several buffers, in order, as one write.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<()> {
        self.core.write_vectored(self.id, bufs)
    }

    /// Queues an owned buffer without copying it (large payloads).
    pub fn write_owned(&mut self, data: Vec<u8>) -> Result<()> {
        self.core.write_owned(self.id, data)
    }

    /// Queues `data` on another connection of this server. Same-reactor targets are written
    /// directly; others go through their reactor's inbox.
    pub fn write_to(&mut self, target: ConnId, data: &[u8]) -> Result<()> {
        if target.reactor() == self.core.index {
            self.core.write_copy(target, data)
        } else {
            self.core.handle.write(target, data)
        }
    }

    /// Bytes queued and not yet accepted by the socket.
    pub fn queued(&self) -> usize {
        self.core.queued(self.id)
    }

    /// Closes gracefully once queued output is flushed; no more input is delivered.
    pub fn close(&mut self) {
        self.core
            .request_close(self.id, crate::CloseReason::Closed, false);
    }

    /// Closes at once, discarding queued output.
    pub fn abort(&mut self) {
        self.core
            .request_close(self.id, crate::CloseReason::Aborted, true);
    }

    /// Reports that the handler failed on this connection: it is aborted with
    /// [`crate::CloseReason::HandlerFailed`] and counted, exactly as if the callback panicked.
    /// For bindings whose callbacks report errors instead of panicking.
    pub fn fail(&mut self) {
        self.core.fail(self.id);
    }

    /// Arms a timer that calls `Handler::on_timer` with `tag` after `after` (millisecond
    /// resolution, never early). Several timers may share a tag. Timers end with the
    /// connection: none fires after `on_close`.
    pub fn set_timer(&mut self, after: Duration, tag: u64) {
        self.core.set_user_timer(self.id, after, tag);
    }

    /// Cancels every pending timer of this connection with `tag`; returns how many.
    pub fn cancel_timer(&mut self, tag: u64) -> usize {
        self.core.cancel_user_timers(self.id, tag)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.core.peer_addr(self.id)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.local_addr(self.id)
    }

    /// A handle to the server, for use from other threads or to act on other connections.
    pub fn handle(&self) -> &ServerHandle {
        &self.core.handle
    }

    /// Whether the connection is closing (a close was requested or the peer shut down and the
    /// handler did not keep it open).
    pub fn is_closing(&self) -> bool {
        self.core.is_closing(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_packs_and_unpacks() {
        let id = ConnId::new(200, 0xAB_CDEF, 0xDEAD_BEEF);
        assert_eq!(id.reactor(), 200);
        assert_eq!(id.slot(), 0xAB_CDEF);
        assert_eq!(id.generation(), 0xDEAD_BEEF);
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
    }

    #[test]
    fn slot_table_detects_stale_ids() {
        let t = SlotTable::default();
        let (s, g) = t.alloc().unwrap();
        let id = ConnId::new(0, s, g);
        assert!(t.is_live(id));
        t.release(s);
        assert!(!t.is_live(id));
        let (s2, g2) = t.alloc().unwrap();
        assert_eq!(s2, s, "slot reused");
        assert_ne!(g2, g);
        assert!(!t.is_live(id), "old id stays stale after reuse");
        assert!(t.is_live(ConnId::new(0, s2, g2)));
        assert!(!t.is_live(ConnId::from_u64(0)));
        assert!(!t.is_live(ConnId::new(0, 999, 1)));
    }
}
