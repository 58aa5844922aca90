//! Connection ids, the shared slot table that makes stale ids detectable from any thread, and
//! [`Conn`], the context a callback uses to act on its connection.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Result;
use crate::pool::{TimerOp, WorkerCtx};
use crate::reactor::{CloseMode, Core};
use crate::server::ServerHandle;

/// A connection's peer and local address, as compact as an idle connection needs: both IPv4
/// (the common case) fit in 16 bytes; anything else is boxed. Bindings that cache a
/// connection's addresses use it too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrPair(Pair);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Pair {
    #[default]
    Unknown,
    V4 {
        peer: [u8; 4],
        local: [u8; 4],
        peer_port: u16,
        local_port: u16,
    },
    Other(Box<(SocketAddr, SocketAddr)>),
}

impl AddrPair {
    /// Both addresses; [`AddrPair::default`] holds none.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        AddrPair(match (peer, local) {
            (SocketAddr::V4(p), SocketAddr::V4(l)) => Pair::V4 {
                peer: p.ip().octets(),
                local: l.ip().octets(),
                peer_port: p.port(),
                local_port: l.port(),
            },
            _ => Pair::Other(Box::new((peer, local))),
        })
    }

    /// The peer's and the local address, unless unknown.
    pub fn get(&self) -> Option<(SocketAddr, SocketAddr)> {
        match &self.0 {
            Pair::Unknown => None,
            Pair::V4 {
                peer,
                local,
                peer_port,
                local_port,
            } => Some((
                SocketAddr::from((*peer, *peer_port)),
                SocketAddr::from((*local, *local_port)),
            )),
            Pair::Other(b) => Some(**b),
        }
    }

    /// The peer's address, unless unknown.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.get().map(|a| a.0)
    }

    /// The local address, unless unknown.
    pub fn local(&self) -> Option<SocketAddr> {
        self.get().map(|a| a.1)
    }
}

const SLOT_BITS: u32 = 24;
const REACTOR_BITS: u32 = 8;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// Names one connection for its whole life: reactor index (8 bits), slot (24 bits) and a
/// generation (32 bits). Ids are never reused while a connection with the same slot could be
/// confused with it, so every operation on a stale id fails with [`Error::Closed`](crate::Error::Closed) instead of
/// touching a newer connection. The value 0 is never a valid id. (The generation counts the
/// reactor's connections: an id kept across 2^32 of them could name a live one again.) Each
/// reactor of each server in the process starts its count at a different point, so an id
/// handed to another server's handle fails with `Closed` too, unless the two counts have
/// met (for a few servers, after hundreds of millions of connections).
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
#[derive(Debug)]
pub(crate) struct SlotTable {
    inner: Mutex<SlotInner>,
}

impl Default for SlotTable {
    /// A table whose generations start where no other table's in this process did lately:
    /// successive tables start 0x9E37_79B9 apart (an odd step near 2^32 / φ, so the starts
    /// stay spread over the whole range however many tables there are).
    fn default() -> Self {
        static NEXT_START: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let start = NEXT_START.fetch_add(0x9E37_79B9, std::sync::atomic::Ordering::Relaxed);
        SlotTable {
            inner: Mutex::new(SlotInner {
                next_gen: start,
                ..SlotInner::default()
            }),
        }
    }
}

#[derive(Debug, Default)]
struct SlotInner {
    gens: Vec<u32>,
    free: Vec<u32>,
    next_gen: u32,
    /// The reactor is gone (ended, or unwound by a panic): no id is live, none is issued.
    dead: bool,
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
        if t.dead {
            return None;
        }
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
        let t = self.lock();
        g != 0 && !t.dead && t.gens.get(id.slot() as usize) == Some(&g)
    }

    /// The reactor is gone: every id is dead from now on (a waiter on one of its connections
    /// learns it even if the reactor could not close them, having panicked).
    pub(crate) fn kill(&self) {
        self.lock().dead = true;
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.lock().dead
    }
}

/// What a callback can do with its connection. Writes are queued and flushed once the callback
/// (or the batch of callbacks for one readiness event) returns, so several writes leave in one
/// system call. A `Conn` is only valid during the callback that received it.
///
/// With [`crate::Dispatch::Pool`] the callback runs on a worker thread: writes collect in a
/// buffer that the reactor queues, in one piece, when the callback returns; closes and timers
/// take effect then too.
#[derive(Debug)]
pub struct Conn<'a> {
    id: ConnId,
    inner: Inner<'a>,
}

#[derive(Debug)]
enum Inner<'a> {
    Reactor(&'a mut Core),
    Worker(&'a mut WorkerCtx),
}

impl<'a> Conn<'a> {
    pub(crate) fn on_reactor(id: ConnId, core: &'a mut Core) -> Self {
        Conn {
            id,
            inner: Inner::Reactor(core),
        }
    }

    pub(crate) fn on_worker(id: ConnId, ctx: &'a mut WorkerCtx) -> Self {
        Conn {
            id,
            inner: Inner::Worker(ctx),
        }
    }

    /// This connection's id, usable from any thread through a [`ServerHandle`].
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues `data` for writing. Fails with [`Error::WriteOverflow`](crate::Error::WriteOverflow)
    /// (and closes the connection) if the output queue would exceed `max_write_buffer`, and
    /// with [`Error::Closed`](crate::Error::Closed) if the connection is closing or (in a
    /// worker) was closed while the callback ran.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.inner {
            Inner::Reactor(core) => core.write_copy(self.id, data),
            Inner::Worker(ctx) => ctx.write(data),
        }
    }

    /// Queues several buffers, in order, as one write.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<()> {
        match &mut self.inner {
            Inner::Reactor(core) => core.write_vectored(self.id, bufs),
            Inner::Worker(ctx) => ctx.write_vectored(bufs),
        }
    }

    /// Lets `f` write up to `max` bytes straight into the output queue (for serializers:
    /// no intermediate buffer, one copy); `f` returns how many it wrote. Fails as
    /// [`Conn::write`] would for `max` bytes.
    pub fn write_in_place(
        &mut self,
        max: usize,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize> {
        self.write_with(max, |v| {
            crate::buf::fill_in_place(v, max, f);
        })
    }

    /// As [`Conn::write_in_place`] for the crate's own serializers: `f` appends at most `max`
    /// bytes to the vector it gets (which has room for them), without the zero-fill a slice
    /// needs. Returns how many it appended.
    pub(crate) fn write_with(&mut self, max: usize, f: impl FnOnce(&mut Vec<u8>)) -> Result<usize> {
        match &mut self.inner {
            Inner::Reactor(core) => core.write_with(self.id, max, f),
            Inner::Worker(ctx) => ctx.write_with(max, f),
        }
    }

    /// Queues an owned buffer (without copying it again on the reactor thread).
    pub fn write_owned(&mut self, data: Vec<u8>) -> Result<()> {
        match &mut self.inner {
            Inner::Reactor(core) => core.write_owned(self.id, data),
            Inner::Worker(ctx) => ctx.write(&data),
        }
    }

    /// Queues `data` on another connection of this server. On the reactor thread,
    /// same-reactor targets are written directly; others go through their reactor's inbox.
    pub fn write_to(&mut self, target: ConnId, data: &[u8]) -> Result<()> {
        if target == self.id {
            return self.write(data);
        }
        match &mut self.inner {
            Inner::Reactor(core) if target.reactor() == core.index => core.write_copy(target, data),
            Inner::Reactor(core) => core.handle.write(target, data),
            Inner::Worker(ctx) => ctx.handle.write(target, data),
        }
    }

    /// Bytes queued and not yet accepted by the socket (in a worker: as of the callback's
    /// start, plus what it wrote since).
    pub fn queued(&self) -> usize {
        match &self.inner {
            Inner::Reactor(core) => core.queued(self.id),
            Inner::Worker(ctx) => ctx.queued(),
        }
    }

    /// Closes gracefully once queued output is flushed; no more input is delivered.
    pub fn close(&mut self) {
        self.close_with(crate::CloseReason::Closed, CloseMode::Flush);
    }

    /// Closes in two steps so the peer reads everything even while it is still sending:
    /// flush queued output, shut down the write side, discard input until the peer closes (or
    /// `linger_timeout` passes), then close. Without the second step a close with unread
    /// input makes the kernel send a reset, which can destroy the last response in transit.
    pub fn shutdown(&mut self) {
        self.close_with(crate::CloseReason::Closed, CloseMode::Linger);
    }

    /// Closes at once, discarding queued output.
    pub fn abort(&mut self) {
        self.close_with(crate::CloseReason::Aborted, CloseMode::Abort);
    }

    /// Closes with a given reason (protocol layers: `ProtocolError`, timeouts).
    pub(crate) fn close_with(&mut self, reason: crate::CloseReason, mode: CloseMode) {
        match &mut self.inner {
            Inner::Reactor(core) => core.request_close(self.id, reason, mode),
            Inner::Worker(ctx) => ctx.request_close(reason, mode),
        }
    }

    /// Stops reading and delivering input (flow control: the kernel pushes back on the peer)
    /// until [`Conn::resume_input`] or `ServerHandle::resume_input`. Timers, writes and closes
    /// still work. Unconsumed input is kept.
    pub fn pause_input(&mut self) {
        match &mut self.inner {
            Inner::Reactor(core) => core.pause_input(self.id),
            Inner::Worker(ctx) => ctx.input(false),
        }
    }

    /// Resumes input: the unconsumed input is presented again through `Handler::on_resume`
    /// once the output queued so far is flushed, then reading continues. Called right after
    /// `pause_input` in the same callback, it yields: the rest of the input is handled on the
    /// next loop turn.
    pub fn resume_input(&mut self) {
        match &mut self.inner {
            Inner::Reactor(core) => core.resume_input(self.id),
            Inner::Worker(ctx) => ctx.input(true),
        }
    }

    /// On a worker: whether the handler paused or resumed input during this job.
    pub(crate) fn input_requested(&self) -> bool {
        match &self.inner {
            Inner::Reactor(_) => false,
            Inner::Worker(ctx) => ctx.input_requested(),
        }
    }

    /// Counts a handler failure without closing: a protocol layer closes once an answer
    /// still owed elsewhere has gone out.
    pub(crate) fn count_failure(&mut self) {
        match &mut self.inner {
            Inner::Reactor(core) => core.count_failure(self.id),
            Inner::Worker(ctx) => ctx.count_failure(),
        }
    }

    /// Counts a handler failure and closes gracefully with `HandlerFailed`, so a protocol
    /// layer can first answer the failure (an HTTP 500).
    pub(crate) fn fail_gracefully(&mut self) {
        match &mut self.inner {
            Inner::Reactor(core) => core.fail_gracefully(self.id),
            Inner::Worker(ctx) => {
                ctx.actions_failed();
                ctx.request_close(crate::CloseReason::HandlerFailed, CloseMode::Linger);
            }
        }
    }

    /// The reactor's time at the start of this loop turn (coarse, free); the current time on a
    /// worker.
    pub fn now(&self) -> std::time::Instant {
        match &self.inner {
            Inner::Reactor(core) => core.now_instant,
            Inner::Worker(_) => std::time::Instant::now(),
        }
    }

    /// Reports that the handler failed on this connection: it is aborted with
    /// [`crate::CloseReason::HandlerFailed`] and counted, exactly as if the callback panicked.
    /// For bindings whose callbacks report errors instead of panicking.
    pub fn fail(&mut self) {
        match &mut self.inner {
            Inner::Reactor(core) => core.fail(self.id),
            Inner::Worker(ctx) => ctx.fail(),
        }
    }

    /// Arms a timer that calls `Handler::on_timer` with `tag` after `after` (millisecond
    /// resolution, never early counted from [`Conn::now`]: on a reactor the time its current
    /// turn began; on a worker the timer is armed when the job ends). Several timers may share
    /// a tag. Timers end with the connection: none fires after `on_close`. A delay longer than
    /// the timing wheel's span (2^36 ms, about 2.2 years) is cut to it.
    pub fn set_timer(&mut self, after: Duration, tag: u64) {
        match &mut self.inner {
            Inner::Reactor(core) => core.set_user_timer(self.id, after, tag),
            Inner::Worker(ctx) => ctx.timer(TimerOp::Set(after, tag)),
        }
    }

    /// Cancels every pending timer of this connection with `tag`. Returns how many were
    /// cancelled on the reactor thread; in a worker the cancel takes effect when the callback
    /// returns (a timer of that tag that fired meanwhile is not delivered) and 0 is returned.
    pub fn cancel_timer(&mut self, tag: u64) -> usize {
        match &mut self.inner {
            Inner::Reactor(core) => core.cancel_user_timers(self.id, tag),
            Inner::Worker(ctx) => {
                ctx.timer(TimerOp::Cancel(tag));
                0
            }
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        match &self.inner {
            Inner::Reactor(core) => core.peer_addr(self.id),
            Inner::Worker(ctx) => ctx.addrs().map(|a| a.0),
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        match &self.inner {
            Inner::Reactor(core) => core.local_addr(self.id),
            Inner::Worker(ctx) => ctx.addrs().map(|a| a.1),
        }
    }

    /// A handle to the server, for use from other threads or to act on other connections.
    pub fn handle(&self) -> &ServerHandle {
        match &self.inner {
            Inner::Reactor(core) => &core.handle,
            Inner::Worker(ctx) => &ctx.handle,
        }
    }

    /// Whether the connection is closing (a close was requested, the peer shut down and the
    /// handler did not keep it open, or a worker's callback outlived `handler_timeout`).
    pub fn is_closing(&self) -> bool {
        match &self.inner {
            Inner::Reactor(core) => core.is_closing(self.id),
            Inner::Worker(ctx) => ctx.is_closing(),
        }
    }

    /// [`Conn::queued`], or `None` when [`Conn::is_closing`]: both in one lookup.
    #[inline]
    pub(crate) fn queued_if_open(&self) -> Option<usize> {
        match &self.inner {
            Inner::Reactor(core) => core.queued_if_open(self.id),
            Inner::Worker(ctx) => (!ctx.is_closing()).then(|| ctx.queued()),
        }
    }

    /// Time left before `handler_timeout` closes the connection, for a callback running on a
    /// worker with a handler timeout configured (the analogue of a context deadline);
    /// `None` otherwise.
    pub fn remaining(&self) -> Option<Duration> {
        match &self.inner {
            Inner::Reactor(_) => None,
            Inner::Worker(ctx) => ctx.remaining(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_pairs_round_trip_and_ipv4_stays_inline() {
        assert_eq!(std::mem::size_of::<AddrPair>(), 16);
        assert_eq!(AddrPair::default().get(), None);
        let p: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let l: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v4 = AddrPair::new(p, l);
        assert!(matches!(v4.0, Pair::V4 { .. }));
        assert_eq!(v4.get(), Some((p, l)));
        assert_eq!((v4.peer(), v4.local()), (Some(p), Some(l)));
        let p6: SocketAddr = "[::1]:40000".parse().unwrap();
        let l6: SocketAddr = "[fe80::1%2]:80".parse().unwrap();
        let v6 = AddrPair::new(p6, l6);
        assert_eq!(v6.get(), Some((p6, l6)));
        // Mixed families keep both exactly too.
        assert_eq!(AddrPair::new(p, l6).get(), Some((p, l6)));
    }

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
