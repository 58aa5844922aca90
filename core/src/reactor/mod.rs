//! The reactor: one thread, one `epoll` instance, and every connection it owns.
//!
//! A reactor never locks on the per-message path. It reads into one scratch buffer shared by
//! all of its connections, hands the handler a borrowed slice, keeps only the unconsumed tail
//! (in a pooled buffer), and flushes everything the callbacks queued with one `send`/`sendmsg`
//! per connection per readiness event. Other threads reach it through its inbox.

mod inbox;
mod pace;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::buf::{BufferPool, OutQueue};
use crate::config::Config;
use crate::conn::{AddrPair, Conn, ConnId};
use crate::error::{CloseReason, Error, Result};
use crate::handler::Handler;
use crate::pool::{Done, Job, JobEvents, JobKind, PoolLink, TimerOp, panic_message};
use crate::server::{ServerHandle, Shared};
use crate::stats::{ReactorStats, bump, bump_shared, set};
use crate::timer::{TimerId, TimerWheel};

pub(crate) use inbox::{Command, Inbox, Remote, channel};
pub(crate) use pace::Pacer;

pub(crate) const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);

/// Accepts per readiness event before other work gets a turn.
const ACCEPT_BUDGET: usize = 256;
/// Commands taken from the inbox per loop turn.
const INBOX_BUDGET: usize = 4096;
/// Marks an unset timestamp.
const NEVER: u64 = u64::MAX;

// Connection flags.
/// `on_open` has not run yet: an outbound connect is in progress.
const CONNECTING: u16 = 1 << 0;
/// The peer sent end-of-stream.
const READ_CLOSED: u16 = 1 << 1;
/// Reading is paused: queued output is above the high watermark.
const READ_PAUSED: u16 = 1 << 2;
/// The socket may hold unread input (paused, or the read budget ran out).
const READ_READY: u16 = 1 << 3;
/// In the ready list.
const IN_READY: u16 = 1 << 4;
/// In the dirty list (output to flush or a close to carry out).
const DIRTY: u16 = 1 << 5;
/// Output went above the high watermark; `on_drain` is due when it falls below the low one.
const OVER_HIGH: u16 = 1 << 6;
/// Pool mode: reading is paused because input waiting for the worker passed
/// `max_pending_input`.
const INPUT_PAUSED: u16 = 1 << 7;
/// Pool mode: reading is paused because the connection's job waits in the reactor's backlog
/// (the shared queue is full).
const QUEUE_HELD: u16 = 1 << 8;
/// The handler paused input (`Conn::pause_input`): nothing is read or delivered.
const INPUT_HELD: u16 = 1 << 10;
/// Input was resumed: present the unconsumed input again (`Handler::on_resume`).
const REDELIVER: u16 = 1 << 11;
/// A lingering close: output is flushed and the write side shut down; input is read and
/// discarded until the peer closes or `linger_timeout` passes.
const LINGER: u16 = 1 << 12;
/// The peer's end-of-stream or an error was reported: read to the end when reading resumes
/// (edge-triggered epoll reports it only once).
const HUP_SEEN: u16 = 1 << 9;
/// Pool mode: unconsumed input is being presented again (an `on_resume` job is queued or
/// running); set with the job, cleared when it is done.
const RESUMING: u16 = 1 << 13;
/// Any reason not to read now. Input the handler yielded (`REDELIVER`, `RESUMING`) is
/// presented again before more is read: end-of-stream never overtakes it, and a handler that
/// yields after each batch keeps what the connection holds bounded (the kernel pushes back).
const NO_READ: u16 = READ_PAUSED | INPUT_PAUSED | QUEUE_HELD | INPUT_HELD | REDELIVER | RESUMING;

// Pending events of a connection in pool mode (`Connection::pending`).
const P_OPEN: u8 = 1 << 0;
const P_DATA: u8 = 1 << 1;
const P_DRAIN: u8 = 1 << 2;
const P_EOF: u8 = 1 << 3;
/// Present the unconsumed input again through `on_resume`.
const P_RESUME: u8 = 1 << 4;
/// A resume requested from another thread while a job ran: applied after the job's own
/// pause/resume requests.
const P_RESUME_LATER: u8 = 1 << 5;

/// How a requested close proceeds; a stronger mode overrides a weaker one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CloseMode {
    /// Flush queued output, then close.
    Flush,
    /// Flush, shut down the write side, discard input until the peer closes (bounded by
    /// `linger_timeout`), then close: the peer reads everything even if it was still sending.
    Linger,
    /// Close now, discarding queued output.
    Abort,
}

/// Why a timer was set.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerEvent {
    /// The connection's built-in deadlines (idle, read, write, connect), checked lazily.
    Conn(ConnId),
    /// A user timer.
    User { id: ConnId, tag: u64 },
    /// Accepting may resume after running out of descriptors.
    AcceptRetry,
    /// A pool job may have outlived `handler_timeout`.
    JobDeadline { id: ConnId, seq: u64 },
    /// The shutdown grace period is over.
    ShutdownGrace,
    /// Callbacks still running this long after the grace period are abandoned.
    ShutdownLimit,
    /// Discarded output waits for the allocator to be asked again (see `TRIM_EVERY`).
    Trim,
}

/// Engine state of one connection (the handler's state lives beside it, in `Reactor::states`).
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    id: ConnId,
    flags: u16,
    /// Unconsumed input: empty (and unallocated) unless the handler left a tail.
    input: Vec<u8>,
    out: OutQueue,
    /// The housekeeping timer and the tick it fires at.
    timer: Option<TimerId>,
    /// The first pending user timer (tag and key); any more live in `extra`. An HTTP
    /// connection keeps exactly one, so it needs no allocation for it.
    timer1: Option<(u64, TimerId)>,
    timer_at: u64,
    /// Last tick with traffic in either direction (or the connect attempt's start).
    last_active: u64,
    /// Tick since which unconsumed input has waited.
    input_since: u64,
    /// Tick since which queued output has made no progress.
    stall_since: u64,
    /// With `write_min_rate`: tick since which output has been queued without a break, and
    /// the bytes sent since then.
    queued_since: u64,
    sent_since: u64,
    /// A close requested during a callback or by a command.
    close_req: Option<(CloseReason, CloseMode)>,
    /// Set once a graceful close is under way: close with this reason when output is flushed
    /// (lingering first if the flag says so).
    closing: Option<(CloseReason, bool)>,
    /// When a lingering close gives up waiting for the peer.
    linger_at: u64,
    /// Pool mode: events waiting for the next job (`P_*`).
    pending: u8,
    /// Pool mode: sequence number of the job queued or running (0 = none) and its deadline.
    job_seq: u64,
    job_timer: Option<TimerId>,
    /// Pool mode: peer and local address, for callbacks on workers (which never touch the
    /// socket).
    addrs: AddrPair,
    /// Pool mode: bytes at the front of `input` that the handler already saw and left
    /// unconsumed (they do not count as input waiting for the worker).
    tail_len: usize,
    /// State most connections never need, allocated on first use.
    extra: Option<Box<Extra>>,
}

/// The rarely used part of a connection's state: one pointer in [`Connection`] instead of
/// three vectors, which keeps an idle connection small.
#[derive(Debug, Default)]
struct Extra {
    /// When input was last held (`pause_input`): on resume the read and idle deadlines move
    /// later by the length of the hold.
    held_at: u64,
    /// User timers beyond the first.
    timers: Vec<(u64, TimerId)>,
    /// Tags of timers that fired, waiting for the next job (pool mode) or for `on_open`
    /// (a connect in progress), oldest first.
    pending_timers: VecDeque<u64>,
    /// Pool mode: writes from other threads that arrived while a job ran; they follow the
    /// job's own output, so a callback's writes keep their place in the stream.
    held_writes: Vec<Vec<u8>>,
    /// Their total length (summing them at every write would be quadratic).
    held_bytes: usize,
    /// The flow control of writers on other threads (an HTTP stream answered later, a
    /// `PacedWriter`): told the output queue after every flush, and the close.
    pacers: Vec<Arc<Pacer>>,
}

/// Writes from other threads held while a job runs that are smaller than this are copied
/// into pooled buffers, several to a buffer.
const HELD_JOIN_BELOW: usize = 4096;

/// Bytes of writes held back while a job runs.
fn held_len(c: &Connection) -> usize {
    c.extra.as_deref().map_or(0, |e| e.held_bytes)
}

impl Connection {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_default()
    }

    fn add_user_timer(&mut self, tag: u64, key: TimerId) {
        if self.timer1.is_none() {
            self.timer1 = Some((tag, key));
        } else {
            self.extra().timers.push((tag, key));
        }
    }

    /// Forgets the user timer `key` (it fired); false when it is no longer pending.
    fn take_user_timer(&mut self, key: TimerId) -> bool {
        if self.timer1.is_some_and(|(_, k)| k == key) {
            self.timer1 = self.extra.as_mut().and_then(|e| e.timers.pop());
            return true;
        }
        if let Some(e) = self.extra.as_mut()
            && let Some(i) = e.timers.iter().position(|&(_, k)| k == key)
        {
            e.timers.swap_remove(i);
            return true;
        }
        false
    }

    /// Removes every user timer tagged `tag`, handing each key to `cancel`; returns how many.
    fn remove_user_timers(&mut self, tag: u64, mut cancel: impl FnMut(TimerId)) -> usize {
        let mut n = 0;
        if let Some(e) = self.extra.as_mut() {
            e.timers.retain(|&(t, key)| {
                if t == tag {
                    cancel(key);
                    n += 1;
                    false
                } else {
                    true
                }
            });
        }
        if let Some((t, key)) = self.timer1
            && t == tag
        {
            cancel(key);
            n += 1;
            self.timer1 = self.extra.as_mut().and_then(|e| e.timers.pop());
        }
        n
    }

    /// Removes every user timer, handing each key to `cancel`.
    fn clear_user_timers(&mut self, mut cancel: impl FnMut(TimerId)) {
        if let Some((_, key)) = self.timer1.take() {
            cancel(key);
        }
        if let Some(e) = self.extra.as_mut() {
            e.timers.drain(..).for_each(|(_, key)| cancel(key));
        }
    }

    fn has_pending_timers(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|e| !e.pending_timers.is_empty())
    }

    fn take_pending_timers(&mut self) -> Vec<u64> {
        self.extra
            .as_mut()
            .map(|e| Vec::from(std::mem::take(&mut e.pending_timers)))
            .unwrap_or_default()
    }

    /// Ends the waits of the connection's paced writers (it closes, or begins to).
    fn close_pacers(&self) {
        for p in self.extra.iter().flat_map(|e| &e.pacers) {
            p.close();
        }
    }

    fn take_held_writes(&mut self) -> Vec<Vec<u8>> {
        self.extra
            .as_mut()
            .map(|e| {
                e.held_bytes = 0;
                std::mem::take(&mut e.held_writes)
            })
            .unwrap_or_default()
    }
}

/// The live connection named by `id` (slot and generation both match).
fn lookup(conns: &mut [Option<Connection>], id: ConnId) -> Option<&mut Connection> {
    match conns.get_mut(id.slot() as usize) {
        Some(Some(c)) if c.id == id => Some(c),
        _ => None,
    }
}

/// Per-reactor copies of the configuration values used on the hot path, timeouts in ticks.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_read_buffer: usize,
    high_watermark: usize,
    low_watermark: usize,
    max_write_buffer: usize,
    idle: Option<u64>,
    read: Option<u64>,
    write: Option<u64>,
    write_min_rate: Option<u64>,
    connect: u64,
    read_budget: usize,
    flush_at: usize,
    max_pending_input: usize,
    handler_timeout: Option<u64>,
    linger: u64,
}

/// A delay in wheel ticks, never short: rounded up to whole milliseconds, plus one tick because
/// the current tick stands for a time up to one millisecond in its past.
fn ticks(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ms = if Duration::from_millis(ms as u64) < d {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX - 1).saturating_add(1)
}

/// Milliseconds since `epoch`, plus one: the wheel's tick 0 is its origin.
pub(crate) fn tick_since(epoch: Instant) -> u64 {
    tick_at(epoch, Instant::now())
}

fn tick_at(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// The part of a reactor that callbacks reach through [`Conn`]: connections, timers, pool.
/// It is not generic over the handler, so neither is `Conn`.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) index: usize,
    conns: Vec<Option<Connection>>,
    timers: TimerWheel<TimerEvent>,
    pool: BufferPool,
    now: u64,
    /// The time `now` was read (for `Conn::now`).
    pub(crate) now_instant: Instant,
    dirty: Vec<u32>,
    /// Connections to read (budget spent, or reading resumed) or to present input again.
    ready: VecDeque<ConnId>,
    limits: Limits,
    pub(crate) handle: ServerHandle,
}

impl Core {
    fn stats(&self) -> &ReactorStats {
        &self.handle.shared.stats[self.index]
    }

    fn get(&self, id: ConnId) -> Option<&Connection> {
        match self.conns.get(id.slot() as usize) {
            Some(Some(c)) if c.id == id => Some(c),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        lookup(&mut self.conns, id)
    }

    fn mark_dirty(dirty: &mut Vec<u32>, c: &mut Connection) {
        if c.flags & DIRTY == 0 {
            c.flags |= DIRTY;
            dirty.push(c.id.slot());
        }
    }

    /// A connection that accepts more output (live, not closing, no close requested, room
    /// for `extra` more bytes), with the buffer pool and the dirty list lent beside it: one
    /// lookup for the check and the write.
    fn writable_parts(
        &mut self,
        id: ConnId,
        extra: usize,
    ) -> Result<(&mut Connection, &mut BufferPool, &mut Vec<u32>)> {
        let Some(c) = self
            .conns
            .get_mut(id.slot() as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
        else {
            return Err(Error::Closed);
        };
        if c.close_req.is_some() || c.closing.is_some() {
            return Err(Error::Closed);
        }
        if c.out.len().saturating_add(extra) > self.limits.max_write_buffer {
            c.close_req = Some((CloseReason::WriteOverflow, CloseMode::Abort));
            Self::mark_dirty(&mut self.dirty, c);
            return Err(Error::WriteOverflow);
        }
        Ok((c, &mut self.pool, &mut self.dirty))
    }

    pub(crate) fn write_copy(&mut self, id: ConnId, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return self.writable_parts(id, 0).map(drop);
        }
        let (c, pool, dirty) = self.writable_parts(id, data.len())?;
        c.out.push_copy(data, pool);
        Self::mark_dirty(dirty, c);
        Ok(())
    }

    pub(crate) fn write_vectored(&mut self, id: ConnId, bufs: &[IoSlice<'_>]) -> Result<()> {
        let total = bufs.iter().fold(0usize, |a, b| a.saturating_add(b.len()));
        let (c, pool, dirty) = self.writable_parts(id, total)?;
        for b in bufs {
            c.out.push_copy(b, pool);
        }
        if total > 0 {
            Self::mark_dirty(dirty, c);
        }
        Ok(())
    }

    pub(crate) fn write_with(
        &mut self,
        id: ConnId,
        max: usize,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Result<usize> {
        let (c, pool, dirty) = self.writable_parts(id, max)?;
        let n = c.out.append_vec(max, pool, f);
        if n > 0 {
            Self::mark_dirty(dirty, c);
        }
        Ok(n)
    }

    pub(crate) fn write_owned(&mut self, id: ConnId, data: Vec<u8>) -> Result<()> {
        let (c, pool, dirty) = self.writable_parts(id, data.len())?;
        if !data.is_empty() {
            c.out.push_owned(data, pool);
            Self::mark_dirty(dirty, c);
        }
        Ok(())
    }

    pub(crate) fn queued(&self, id: ConnId) -> usize {
        self.get(id).map_or(0, |c| c.out.len())
    }

    /// Bytes queued, or `None` when the connection is closing: [`Core::queued`] and
    /// [`Core::is_closing`] in one lookup.
    #[inline]
    pub(crate) fn queued_if_open(&self, id: ConnId) -> Option<usize> {
        self.get(id)
            .filter(|c| c.close_req.is_none() && c.closing.is_none())
            .map(|c| c.out.len())
    }

    pub(crate) fn is_closing(&self, id: ConnId) -> bool {
        self.get(id)
            .is_none_or(|c| c.close_req.is_some() || c.closing.is_some())
    }

    /// Records a close to be carried out once the current callback returns. A stronger mode
    /// overrides a weaker pending one; the first reason of a mode wins; once a graceful close
    /// is under way only an abort changes it.
    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason, mode: CloseMode) {
        let Some(c) = lookup(&mut self.conns, id) else {
            return;
        };
        if matches!(c.close_req, Some((_, m)) if m >= mode) {
            return;
        }
        if mode != CloseMode::Abort && c.closing.is_some() {
            return;
        }
        c.close_req = Some((reason, mode));
        Self::mark_dirty(&mut self.dirty, c);
    }

    /// Stops reading and delivering input until `resume_input`.
    pub(crate) fn pause_input(&mut self, id: ConnId) {
        if let Some(c) = lookup(&mut self.conns, id) {
            if c.flags & INPUT_HELD == 0 {
                c.extra().held_at = self.now;
            }
            c.flags |= INPUT_HELD;
            c.flags &= !REDELIVER;
        }
    }

    /// Resumes input: the unconsumed input is presented again (`on_resume`) on the next loop
    /// turn, after the output queued so far is flushed; reading continues after it.
    pub(crate) fn resume_input(&mut self, id: ConnId) {
        let Some(c) = lookup(&mut self.conns, id) else {
            return;
        };
        if c.job_seq != 0 {
            // A worker runs this connection's callbacks: act once its job is done, after any
            // pause it requested.
            c.pending |= P_RESUME_LATER;
            return;
        }
        if c.flags & INPUT_HELD != 0 {
            // The read deadline (and the idle one, unless output stalled) stood still while
            // input was held: they move later by the length of the hold (a yield inside one
            // callback moves nothing).
            c.flags &= !INPUT_HELD;
            let held = self
                .now
                .saturating_sub(c.extra.as_ref().map_or(self.now, |e| e.held_at));
            if c.input_since != NEVER {
                c.input_since = c.input_since.saturating_add(held).min(self.now);
            }
            c.last_active = c.last_active.saturating_add(held).min(self.now);
            c.flags |= REDELIVER;
            Self::enqueue_ready(&mut self.ready, c);
            if held > 0 {
                self.arm(id.slot());
            }
            return;
        }
        c.flags |= REDELIVER;
        Self::enqueue_ready(&mut self.ready, c);
    }

    fn enqueue_ready(ready: &mut VecDeque<ConnId>, c: &mut Connection) {
        if c.flags & IN_READY == 0 {
            c.flags |= IN_READY;
            ready.push_back(c.id);
        }
    }

    /// Counts a handler failure and aborts the connection with `HandlerFailed`.
    pub(crate) fn fail(&mut self, id: ConnId) {
        self.fail_with(id, CloseMode::Abort);
    }

    fn fail_with(&mut self, id: ConnId, mode: CloseMode) {
        let Some(c) = self.get(id) else {
            return;
        };
        // A connection already failing is not counted again (a binding reporting the error,
        // then the panic that follows it; or a second `fail()`).
        if !matches!(c.close_req, Some((CloseReason::HandlerFailed, _)))
            && !matches!(c.closing, Some((CloseReason::HandlerFailed, _)))
        {
            bump_shared(&self.stats().handler_failures, 1);
        }
        self.request_close(id, CloseReason::HandlerFailed, mode);
    }

    pub(crate) fn count_failure(&mut self, id: ConnId) {
        if self.get(id).is_some() {
            bump_shared(&self.stats().handler_failures, 1);
        }
    }

    /// Counts a handler failure and closes gracefully (lingering), so a protocol layer can
    /// answer the failure (an HTTP 500) before the connection goes.
    pub(crate) fn fail_gracefully(&mut self, id: ConnId) {
        self.fail_with(id, CloseMode::Linger);
    }

    pub(crate) fn set_user_timer(&mut self, id: ConnId, after: Duration, tag: u64) {
        let when = self.now.saturating_add(ticks(after));
        let Some(c) = lookup(&mut self.conns, id) else {
            return;
        };
        let t = self.timers.insert(when, TimerEvent::User { id, tag });
        c.add_user_timer(tag, t);
    }

    pub(crate) fn cancel_user_timers(&mut self, id: ConnId, tag: u64) -> usize {
        let Some(c) = lookup(&mut self.conns, id) else {
            return 0;
        };
        if let Some(e) = c.extra.as_mut() {
            // Fired but not delivered yet (on a worker's next job, or after a connect): gone.
            e.pending_timers.retain(|&t| t != tag);
        }
        let timers = &mut self.timers;
        c.remove_user_timers(tag, |key| {
            timers.cancel(key);
        })
    }

    pub(crate) fn peer_addr(&self, id: ConnId) -> Result<SocketAddr> {
        Ok(self.get(id).ok_or(Error::Closed)?.stream.peer_addr()?)
    }

    pub(crate) fn local_addr(&self, id: ConnId) -> Result<SocketAddr> {
        Ok(self.get(id).ok_or(Error::Closed)?.stream.local_addr()?)
    }

    /// The earliest built-in deadline of a connection and the reason it would close with.
    fn deadline(limits: &Limits, c: &Connection) -> Option<(u64, CloseReason)> {
        let mut best: Option<(u64, CloseReason)> = None;
        if c.flags & LINGER != 0 {
            let reason = c.closing.map_or(CloseReason::Closed, |(r, _)| r);
            return Some((c.linger_at, reason));
        }
        let mut consider = |at: u64, r: CloseReason| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, r));
            }
        };
        if c.flags & CONNECTING != 0 {
            consider(
                c.last_active.saturating_add(limits.connect),
                CloseReason::ConnectTimeout,
            );
            return best;
        }
        if let Some(t) = limits.write
            && c.stall_since != NEVER
        {
            consider(c.stall_since.saturating_add(t), CloseReason::WriteTimeout);
            if let Some(rate) = limits.write_min_rate
                && c.queued_since != NEVER
            {
                // Each `rate` bytes sent buy one more second (1,000 ticks) past the grace.
                let earned = c.sent_since.saturating_mul(1000) / rate;
                consider(
                    c.queued_since.saturating_add(t).saturating_add(earned),
                    CloseReason::WriteTimeout,
                );
            }
        }
        // While a worker runs the connection's job, or its job waits for room in the queue,
        // the server is the one keeping it waiting: neither the read nor the idle deadline
        // runs (`handler_timeout` bounds the job; `job_done` re-arms). While the handler holds
        // its input (`pause_input`: an HTTP answer deferred with requests pipelined behind
        // it), the read deadline stands still, and so does the idle one unless output is
        // stalled (a peer that stopped reading is still the peer's doing); `resume_input`
        // moves them later by the hold.
        if c.job_seq != 0 || c.flags & QUEUE_HELD != 0 {
            return best;
        }
        let held = c.flags & INPUT_HELD != 0;
        if let Some(t) = limits.read
            && c.input_since != NEVER
            && !held
        {
            consider(c.input_since.saturating_add(t), CloseReason::ReadTimeout);
        }
        if let Some(t) = limits.idle
            && (!held || c.stall_since != NEVER)
        {
            consider(c.last_active.saturating_add(t), CloseReason::IdleTimeout);
        }
        best
    }

    /// Makes sure the housekeeping timer fires no later than the connection's earliest
    /// deadline. Deadlines that move later (traffic on an idle timer) are not rescheduled: the
    /// timer fires early and re-arms itself, so steady traffic costs no timer operation.
    fn arm(&mut self, slot: u32) {
        let Some(c) = self.conns[slot as usize].as_mut() else {
            return;
        };
        let Some((at, _)) = Self::deadline(&self.limits, c) else {
            return;
        };
        if c.timer.is_some() && c.timer_at <= at {
            return;
        }
        if let Some(t) = c.timer.take() {
            self.timers.cancel(t);
        }
        c.timer = Some(self.timers.insert(at, TimerEvent::Conn(c.id)));
        c.timer_at = at;
    }
}

/// One reactor thread's whole state.
pub(crate) struct Reactor<H: Handler> {
    core: Core,
    states: Vec<Option<H::State>>,
    handler: Arc<H>,
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    inbox: Inbox,
    scratch: Vec<u8>,
    fired: Vec<(TimerId, TimerEvent)>,
    epoch: Instant,
    accept_more: bool,
    paused_limit: bool,
    paused_emfile: bool,
    stopping: bool,
    live: usize,
    /// Output discarded by closes since the allocator was last asked to return free memory.
    discarded: usize,
    /// When the allocator was last asked (a tick).
    trimmed_at: u64,
    /// A `TimerEvent::Trim` is set.
    trim_pending: bool,
    handoff_next: usize,
    config: Config,
    /// Pool mode: the queue, the results channel, jobs held back while the queue is full,
    /// jobs not yet done, and connections closed while their job ran (their `on_close` waits
    /// for the job's state).
    pool: Option<PoolLink<H>>,
    backlog: VecDeque<Job<H>>,
    in_flight: usize,
    zombies: HashMap<ConnId, CloseReason>,
    abandon: bool,
    _kill_slots: KillSlots,
}

impl<H: Handler> std::fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("index", &self.core.index)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// Applies the per-connection socket options.
fn configure_stream(stream: &TcpStream, config: &Config) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    if config.nodelay {
        sock.set_tcp_nodelay(true)?;
    }
    if let Some(idle) = config.keepalive {
        sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}

/// Runs one callback inside a panic boundary. A panic fails the connection.
fn invoke<H: Handler, R>(
    core: &mut Core,
    states: &mut [Option<H::State>],
    handler: &H,
    id: ConnId,
    what: &str,
    f: impl FnOnce(&H, &mut Conn<'_>, &mut H::State) -> R,
) -> Option<R> {
    let state = states.get_mut(id.slot() as usize)?.as_mut()?;
    let mut conn = Conn::on_reactor(id, core);
    match catch_unwind(AssertUnwindSafe(|| f(handler, &mut conn, state))) {
        Ok(r) => Some(r),
        Err(payload) => {
            log::error!(
                "handler panicked in {what} on connection {id:?}: {}",
                panic_message(&*payload)
            );
            core.fail(id);
            None
        }
    }
}

impl<H: Handler> Reactor<H> {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        listener: Option<TcpListener>,
        inbox: Inbox,
        handler: Arc<H>,
        handle: ServerHandle,
        pool: Option<PoolLink<H>>,
    ) -> io::Result<Self> {
        let config = handle.shared.config.clone();
        let epoch = handle.shared.epoch;
        let mut listener = listener;
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let limits = Limits {
            max_read_buffer: config.max_read_buffer,
            high_watermark: config.write_high_watermark,
            low_watermark: config.write_low_watermark,
            max_write_buffer: config.max_write_buffer,
            idle: config.idle_timeout.map(ticks),
            read: config.read_timeout.map(ticks),
            write: config.write_timeout.map(ticks),
            write_min_rate: config.write_min_rate,
            connect: ticks(config.connect_timeout),
            read_budget: config.read_budget,
            flush_at: config.read_buffer_size,
            max_pending_input: config.max_pending_input,
            handler_timeout: config.handler_timeout.map(ticks),
            linger: ticks(config.linger_timeout),
        };
        let kill_slots = KillSlots {
            shared: handle.shared.clone(),
            index,
        };
        Ok(Reactor {
            _kill_slots: kill_slots,
            core: Core {
                index,
                conns: Vec::new(),
                timers: TimerWheel::new(),
                pool: BufferPool::new(config.pool_buffer_size, config.pool_max_free),
                now: 0,
                now_instant: epoch,
                dirty: Vec::new(),
                ready: VecDeque::new(),
                limits,
                handle,
            },
            states: Vec::new(),
            handler,
            poll,
            events: Events::with_capacity(config.events_capacity),
            accept_more: listener.is_some(),
            listener,
            inbox,
            scratch: vec![0; config.read_buffer_size],
            fired: Vec::new(),
            epoch,
            paused_limit: false,
            paused_emfile: false,
            stopping: false,
            live: 0,
            discarded: 0,
            trimmed_at: 0,
            trim_pending: false,
            handoff_next: index,
            config,
            pool,
            backlog: VecDeque::new(),
            in_flight: 0,
            zombies: HashMap::new(),
            abandon: false,
        })
    }

    fn shared(&self) -> &Shared {
        &self.core.handle.shared
    }

    fn remote(&self) -> &Remote {
        &self.core.handle.shared.remotes[self.core.index]
    }

    fn clock(&self) -> u64 {
        tick_since(self.epoch)
    }

    fn poll_timeout(&self) -> Option<Duration> {
        // A set flag means work is waiting but its wake-up was already spent (a drain that
        // stopped at its budget): do not block.
        if !self.core.ready.is_empty() || self.accept_more || self.remote().is_notified() {
            return Some(Duration::ZERO);
        }
        let next = self.core.timers.next_deadline()?;
        let now = self.clock();
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    /// The reactor thread's body: returns once the server stopped and every connection closed.
    /// The handler, for the thread that will run this reactor.
    pub(crate) fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    pub(crate) fn run(mut self) {
        self.core.now = self.clock();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut self.events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("reactor {}: epoll_wait failed: {e}", self.core.index);
                break;
            }
            self.core.now_instant = Instant::now();
            self.core.now = tick_at(self.epoch, self.core.now_instant);
            let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => {
                        self.accept_more = true;
                    }
                    Token(t) => {
                        let id = ConnId::from_u64(t as u64);
                        self.conn_event(
                            id,
                            ev.is_readable(),
                            ev.is_writable(),
                            ev.is_read_closed() || ev.is_error(),
                            ev.is_error(),
                        );
                    }
                }
            }
            events.clear();
            self.events = events;
            if self.accept_more {
                self.accept();
            }
            if self.remote().take_notified() {
                if !self.stopping && self.shared().is_stopping() {
                    // Commands sent before `stop()` (a last write, a close) are carried out
                    // before the connections are told to close.
                    self.drain_inbox_before_shutdown();
                    self.begin_shutdown();
                }
                self.drain_inbox();
                self.drain_done();
            }
            if !self.backlog.is_empty() {
                self.drain_backlog();
            }
            self.run_ready();
            self.run_timers();
            self.service_dirty();
            self.publish_stats();
            if self.stopping && ((self.live == 0 && self.in_flight == 0) || self.abandon) {
                break;
            }
        }
        self.finish();
    }

    fn publish_stats(&self) {
        let s = self.core.stats();
        set(&s.pool_hits, self.core.pool.hits);
        set(&s.pool_misses, self.core.pool.misses);
        set(&s.active, self.live as u64);
    }

    // ---- accepting ----

    fn accept(&mut self) {
        self.accept_more = false;
        if self.stopping || self.paused_limit || self.paused_emfile {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            if !self.shared().try_reserve() {
                self.pause_for_limit();
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                self.shared().release_reserved();
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.place_accepted(stream),
                Err(e) => {
                    self.shared().release_reserved();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return,
                        io::ErrorKind::Interrupted => {}
                        _ => match e.raw_os_error() {
                            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                                self.pause_for_resources(&e);
                                return;
                            }
                            _ => {
                                log::debug!("accept: {e}");
                                bump(&self.core.stats().accept_errors, 1);
                            }
                        },
                    }
                }
            }
        }
        // Budget spent with more connections possibly waiting: come back after other work.
        self.accept_more = true;
    }

    fn place_accepted(&mut self, stream: TcpStream) {
        let n = self.config.threads;
        if self.config.reuse_port || n == 1 {
            self.register(stream, false);
            return;
        }
        self.handoff_next = (self.handoff_next + 1) % n;
        let target = self.handoff_next;
        if target == self.core.index {
            self.register(stream, false);
        } else if let Err(cmd) = self.shared().remotes[target].send(Command::Adopt { stream }) {
            drop(cmd);
            bump(&self.core.stats().accept_errors, 1);
            self.shared().release_reserved();
        }
    }

    fn pause_for_limit(&mut self) {
        bump(&self.core.stats().accept_paused_limit, 1);
        self.paused_limit = true;
        if self.shared().wait_for_room(self.core.index) {
            // Room appeared while registering as a waiter: carry on at once.
            self.paused_limit = false;
            self.accept_more = true;
        }
    }

    fn pause_for_resources(&mut self, e: &io::Error) {
        log::warn!(
            "reactor {}: accept failed ({e}); pausing accepts for {:?}",
            self.core.index,
            self.config.accept_backoff
        );
        bump(&self.core.stats().accept_paused_emfile, 1);
        self.paused_emfile = true;
        let at = self
            .core
            .now
            .saturating_add(ticks(self.config.accept_backoff));
        self.core.timers.insert(at, TimerEvent::AcceptRetry);
    }

    /// An accepted connection dropped before it opened counts as an accept error: `accepted`
    /// counts the connections that opened, each of which is later counted once in `closed`.
    fn not_installed(&self, outbound: bool) {
        if !outbound {
            bump(&self.core.stats().accept_errors, 1);
        }
    }

    /// Takes ownership of a connected socket: slot, registration, `on_open`.
    /// `outbound` sockets arrive with their id and wait for the connect to finish.
    fn register(&mut self, stream: TcpStream, outbound: bool) {
        let Some((slot, generation)) = self.remote().slots.alloc() else {
            log::error!(
                "reactor {}: no free connection slot; dropping connection",
                self.core.index
            );
            bump(&self.core.stats().accept_errors, 1);
            self.shared().release_reserved();
            return;
        };
        let id = ConnId::new(self.core.index, slot, generation);
        self.install(id, stream, outbound);
    }

    fn install(&mut self, id: ConnId, mut stream: TcpStream, outbound: bool) {
        let slot = id.slot();
        let Some(state) = self.new_state() else {
            // No state, so no callbacks at all for this connection.
            drop(stream);
            self.remote().slots.release(slot);
            self.shared().release_reserved();
            self.not_installed(outbound);
            return;
        };
        if !outbound && let Err(e) = configure_stream(&stream, &self.config) {
            log::debug!("socket options on {id:?}: {e}");
        }
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id.as_u64() as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("register {id:?}: {e}");
            self.remote().slots.release(slot);
            self.shared().release_reserved();
            self.not_installed(outbound);
            if outbound {
                self.call_close_detached(id, CloseReason::from_io(&e));
            }
            return;
        }
        let s = slot as usize;
        if self.core.conns.len() <= s {
            self.core.conns.resize_with(s + 1, || None);
            self.states.resize_with(s + 1, || None);
        }
        debug_assert!(self.core.conns[s].is_none());
        self.core.conns[s] = Some(Connection {
            stream,
            id,
            flags: if outbound { CONNECTING } else { 0 },
            input: Vec::new(),
            out: OutQueue::default(),
            timer: None,
            timer1: None,
            timer_at: NEVER,
            last_active: self.core.now,
            input_since: NEVER,
            stall_since: NEVER,
            queued_since: NEVER,
            sent_since: 0,
            close_req: None,
            closing: None,
            linger_at: NEVER,
            pending: 0,
            job_seq: 0,
            job_timer: None,
            addrs: AddrPair::default(),
            tail_len: 0,
            extra: None,
        });
        self.states[s] = Some(state);
        self.live += 1;
        self.core.arm(slot);
        if !outbound {
            bump(&self.core.stats().accepted, 1);
            self.open(id);
        }
    }

    fn open(&mut self, id: ConnId) {
        if self.pool.is_some() {
            if let Some(c) = self.core.get_mut(id) {
                // Workers never touch the socket, so they get its addresses with each job.
                c.addrs = match (c.stream.peer_addr(), c.stream.local_addr()) {
                    (Ok(p), Ok(l)) => AddrPair::new(p, l),
                    _ => AddrPair::default(),
                };
            }
            self.post(id, P_OPEN);
        } else {
            invoke(
                &mut self.core,
                &mut self.states,
                &*self.handler,
                id,
                "on_open",
                |h, c, s| h.on_open(c, s),
            );
        }
        self.service_dirty();
    }

    fn finish_connect(&mut self, id: ConnId) -> bool {
        let now = self.core.now;
        let Some(c) = lookup(&mut self.core.conns, id) else {
            return false;
        };
        let err = match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match c.stream.peer_addr() {
                Ok(_) => None,
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                {
                    return false;
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            let errno = e.raw_os_error().unwrap_or(0);
            self.close_now(id, CloseReason::ConnectFailed(errno));
            return false;
        }
        c.flags &= !CONNECTING;
        c.last_active = now;
        // Writes made while connecting wait for this moment; the write timeout and
        // `write_min_rate` count from it, not from the writes.
        if !c.out.is_empty() {
            c.stall_since = now;
            c.queued_since = now;
            c.sent_since = 0;
            Core::mark_dirty(&mut self.core.dirty, c);
        }
        if let Err(e) = configure_stream(&c.stream, &self.config) {
            log::debug!("socket options on {id:?}: {e}");
        }
        bump(&self.core.stats().connected, 1);
        self.core.arm(id.slot());
        self.open(id);
        if self.pool.is_none() {
            // Timers that fired while connecting (on a worker they ride with the open job),
            // taken one at a time: a callback may cancel the next.
            while let Some(c) = self.core.get_mut(id) {
                if c.close_req.is_some() || c.closing.is_some() {
                    break;
                }
                let Some(tag) = c.extra.as_mut().and_then(|e| e.pending_timers.pop_front()) else {
                    break;
                };
                self.call_on_timer(id, tag);
            }
            self.service_dirty();
        }
        true
    }

    // ---- readiness ----

    fn conn_event(&mut self, id: ConnId, readable: bool, writable: bool, hup: bool, error: bool) {
        let Some(c) = lookup(&mut self.core.conns, id) else {
            return;
        };
        if c.flags & CONNECTING != 0 {
            if !(writable || hup) || !self.finish_connect(id) {
                return;
            }
        } else {
            if error
                && c.flags & INPUT_HELD != 0
                && c.flags & LINGER == 0
                && let Ok(Some(e)) = c.stream.take_error()
            {
                // The peer reset the connection while the handler holds input back (waiting
                // to answer): no read would find out, and no write may come for a long time,
                // so close now rather than hold the socket. Shorter holds (a yield, a full
                // queue) meet the error on their next read, after the input they have.
                self.close_now(id, CloseReason::from_io(&e));
                return;
            }
            if writable && !c.out.is_empty() {
                Core::mark_dirty(&mut self.core.dirty, c);
            }
        }
        if readable || hup {
            self.read(id, hup);
        }
        self.service_dirty();
    }

    /// Reads until the socket is drained, the budget is spent, or reading must pause.
    fn read(&mut self, id: ConnId, hup: bool) {
        let now = self.core.now;
        let hup = match self.core.get_mut(id) {
            Some(c) if hup => {
                c.flags |= HUP_SEEN;
                true
            }
            Some(c) => c.flags & HUP_SEEN != 0,
            None => return,
        };
        if self.core.get(id).is_some_and(|c| c.flags & LINGER != 0) {
            self.drain_linger(id);
            return;
        }
        let stopping = self.stopping;
        for _ in 0..self.core.limits.read_budget {
            let Some(c) = self.core.get_mut(id) else {
                return;
            };
            if c.flags & READ_CLOSED != 0 || c.close_req.is_some() || c.closing.is_some() {
                return;
            }
            // Once stopping, nothing more is read: a connection kept open serves the input it
            // already has (see `begin_shutdown`).
            if c.flags & NO_READ != 0 || stopping {
                c.flags |= READ_READY;
                return;
            }
            c.flags &= !READ_READY;
            let res = loop {
                match (&c.stream).read(&mut self.scratch) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            match res {
                Ok(0) => {
                    self.eof(id);
                    return;
                }
                Ok(n) => {
                    c.last_active = now;
                    bump(&self.core.stats().bytes_in, n as u64);
                    self.deliver(id, n);
                    // A short read drained the socket: edge-triggered epoll reports the next
                    // arrival, so the read that would only return EAGAIN is skipped. A pending
                    // end-of-stream has no later edge, so with `hup` we read on until 0.
                    if n < self.scratch.len() && !hup {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.close_now(id, CloseReason::from_io(&e));
                    return;
                }
            }
        }
        self.make_ready(id);
    }

    fn make_ready(&mut self, id: ConnId) {
        if let Some(c) = lookup(&mut self.core.conns, id) {
            c.flags |= READ_READY;
            Core::enqueue_ready(&mut self.core.ready, c);
        }
    }

    fn run_ready(&mut self) {
        for _ in 0..self.core.ready.len() {
            let Some(id) = self.core.ready.pop_front() else {
                break;
            };
            let Some(c) = self.core.get_mut(id) else {
                continue;
            };
            c.flags &= !IN_READY;
            if c.flags & REDELIVER != 0 {
                c.flags &= !REDELIVER;
                self.redeliver(id);
                self.close_if_settled(id);
            }
            let Some(c) = self.core.get_mut(id) else {
                continue;
            };
            if c.flags & LINGER != 0 || (c.flags & READ_READY != 0 && c.flags & NO_READ == 0) {
                self.read(id, false);
            }
            self.service_dirty();
        }
    }

    /// Presents the unconsumed input again after `resume_input` (`Handler::on_resume`).
    fn redeliver(&mut self, id: ConnId) {
        if self.pool.is_some() {
            if let Some(c) = self.core.get_mut(id) {
                c.flags |= RESUMING;
            }
            self.post(id, P_RESUME);
            return;
        }
        let Some(c) = self.core.get_mut(id) else {
            return;
        };
        if c.close_req.is_some() || c.closing.is_some() {
            return;
        }
        let input = std::mem::take(&mut c.input);
        self.present(id, input, true);
    }

    /// Presents the bytes just read (at the front of `scratch`), after any unconsumed tail.
    fn deliver(&mut self, id: ConnId, n: usize) {
        let slot = id.slot() as usize;
        let now = self.core.now;
        let c = self.core.conns[slot].as_mut().expect("live");
        if self.pool.is_some() {
            if c.input.capacity() == 0 {
                c.input = self.core.pool.get();
            }
            c.input.extend_from_slice(&self.scratch[..n]);
            c.pending |= P_DATA;
            self.dispatch(id);
            self.check_pending_input(id);
            return;
        }
        if c.input.is_empty() {
            let data = &self.scratch[..n];
            let consumed = invoke(
                &mut self.core,
                &mut self.states,
                &*self.handler,
                id,
                "on_data",
                |h, c, s| h.on_data(c, s, data),
            );
            let Some(consumed) = self.check_consumed(id, consumed, n) else {
                return;
            };
            if consumed < n {
                let mut tail = self.core.pool.get();
                tail.extend_from_slice(&self.scratch[consumed..n]);
                let c = self.core.conns[slot].as_mut().expect("live");
                c.input = tail;
                c.input_since = now;
                self.core.arm(id.slot());
            }
        } else {
            c.input.extend_from_slice(&self.scratch[..n]);
            let input = std::mem::take(&mut c.input);
            self.present(id, input, false);
        }
        let limits = &self.core.limits;
        let c = self.core.conns[slot].as_mut().expect("live");
        if c.input.len() > limits.max_read_buffer {
            self.core
                .request_close(id, CloseReason::ReadOverflow, CloseMode::Abort);
        } else if c.out.len() >= limits.flush_at {
            self.service_dirty();
        }
    }

    /// Calls `on_data` (or `on_resume`) with input held by the connection, keeping what the
    /// handler left unconsumed.
    fn present(&mut self, id: ConnId, input: Vec<u8>, resume: bool) {
        let slot = id.slot() as usize;
        let now = self.core.now;
        let consumed = if resume {
            invoke(
                &mut self.core,
                &mut self.states,
                &*self.handler,
                id,
                "on_resume",
                |h, c, s| h.on_resume(c, s, &input),
            )
        } else {
            invoke(
                &mut self.core,
                &mut self.states,
                &*self.handler,
                id,
                "on_data",
                |h, c, s| h.on_data(c, s, &input),
            )
        };
        let consumed = self.check_consumed(id, consumed, input.len());
        let c = self.core.conns[slot].as_mut().expect("live");
        match consumed {
            Some(k) if k == input.len() => {
                c.input_since = NEVER;
                self.core.pool.put(input);
            }
            Some(k) => {
                let mut input = input;
                input.drain(..k);
                let input = self.core.pool.settle(input);
                if k > 0 || c.input_since == NEVER {
                    c.input_since = now;
                    self.core.arm(id.slot());
                }
                let c = self.core.conns[slot].as_mut().expect("live");
                c.input = input;
            }
            None => self.core.pool.put(input),
        }
        let c = self.core.conns[slot].as_mut().expect("live");
        if c.input.len() > self.core.limits.max_read_buffer {
            self.core
                .request_close(id, CloseReason::ReadOverflow, CloseMode::Abort);
        }
    }

    /// Validates what `on_data` returned; `None` when the callback failed.
    fn check_consumed(&mut self, id: ConnId, consumed: Option<usize>, len: usize) -> Option<usize> {
        match consumed {
            Some(k) if k <= len => Some(k),
            Some(k) => {
                log::error!(
                    "on_data on connection {id:?} consumed {k} bytes of {len}; failing the connection"
                );
                self.core.fail(id);
                None
            }
            None => None,
        }
    }

    fn eof(&mut self, id: ConnId) {
        let Some(c) = self.core.get_mut(id) else {
            return;
        };
        c.flags |= READ_CLOSED;
        if self.pool.is_some() {
            self.post(id, P_EOF);
            return;
        }
        let keep = invoke(
            &mut self.core,
            &mut self.states,
            &*self.handler,
            id,
            "on_eof",
            |h, c, s| h.on_eof(c, s),
        );
        if keep != Some(true) {
            self.core
                .request_close(id, CloseReason::PeerClosed, CloseMode::Flush);
        }
    }

    // ---- output and closing ----

    /// Flushes every connection that queued output and carries out requested closes.
    fn service_dirty(&mut self) {
        while let Some(slot) = self.core.dirty.pop() {
            let Some(c) = self.core.conns[slot as usize].as_mut() else {
                continue;
            };
            if c.flags & DIRTY == 0 {
                continue;
            }
            c.flags &= !DIRTY;
            let id = c.id;
            if let Some((reason, mode)) = c.close_req.take() {
                if mode == CloseMode::Abort {
                    self.close_now(id, reason);
                    continue;
                }
                c.closing = Some((reason, mode == CloseMode::Linger));
                // No write lands any more: paced writers stop waiting.
                c.close_pacers();
            }
            self.flush(id);
        }
    }

    fn flush(&mut self, id: ConnId) {
        let now = self.core.now;
        let limits = self.core.limits;
        let Some(c) = lookup(&mut self.core.conns, id) else {
            return;
        };
        if !c.out.is_empty() {
            let sock = socket2::SockRef::from(&c.stream);
            let (n, result) = c.out.flush(&sock, &mut self.core.pool);
            if n > 0 {
                c.last_active = now;
                if c.stall_since != NEVER {
                    c.stall_since = now;
                    c.sent_since += n as u64;
                }
                // Counted also when the flush then failed: those bytes left.
                bump(&self.core.stats().bytes_out, n as u64);
            }
            if let Err(e) = result {
                self.close_now(id, CloseReason::from_io(&e));
                return;
            }
        }
        let c = self.core.get_mut(id).expect("live");
        let queued = c.out.len();
        if queued == 0 {
            c.stall_since = NEVER;
            c.queued_since = NEVER;
            // A job still running may produce output: a graceful close waits for it.
            if let Some((reason, linger)) = c.closing
                && c.job_seq == 0
                && c.flags & LINGER == 0
            {
                if linger && c.flags & READ_CLOSED == 0 {
                    self.start_linger(id);
                } else {
                    self.close_now(id, reason);
                }
                return;
            }
        } else if c.stall_since == NEVER {
            c.stall_since = now;
            c.queued_since = now;
            c.sent_since = 0;
            self.core.arm(id.slot());
        }
        let c = self.core.get_mut(id).expect("live");
        if let Some(e) = c.extra.as_deref_mut()
            && !e.pacers.is_empty()
        {
            // A pacer whose writer and waiters are gone is dropped: once none is left,
            // flushes skip this.
            e.pacers.retain(|p| Arc::strong_count(p) > 1);
            let out = queued + e.held_bytes;
            for p in &e.pacers {
                p.publish(out);
            }
        }
        if queued > limits.high_watermark && c.flags & READ_PAUSED == 0 {
            c.flags |= READ_PAUSED | OVER_HIGH;
            bump(&self.core.stats().read_pauses, 1);
        } else if queued <= limits.low_watermark && c.flags & OVER_HIGH != 0 {
            c.flags &= !(READ_PAUSED | OVER_HIGH);
            let resume = c.flags & READ_READY != 0;
            if c.closing.is_none() && self.pool.is_some() {
                self.post(id, P_DRAIN);
            } else if c.closing.is_none() {
                invoke(
                    &mut self.core,
                    &mut self.states,
                    &*self.handler,
                    id,
                    "on_drain",
                    |h, c, s| h.on_drain(c, s),
                );
            }
            if resume {
                self.make_ready(id);
            }
        }
    }

    /// Output is flushed: shut down the write side (the peer reads end-of-stream after the
    /// last byte) and discard input until the peer closes or `linger_timeout` passes.
    fn start_linger(&mut self, id: ConnId) {
        let at = self.core.now.saturating_add(self.core.limits.linger);
        let Some(c) = self.core.get_mut(id) else {
            return;
        };
        if let Err(e) = socket2::SockRef::from(&c.stream).shutdown(std::net::Shutdown::Write) {
            let reason = c.closing.map_or(CloseReason::Closed, |(r, _)| r);
            log::debug!("shutdown on {id:?}: {e}");
            self.close_now(id, reason);
            return;
        }
        c.flags |= LINGER;
        c.linger_at = at;
        if let Some(t) = c.timer.take() {
            self.core.timers.cancel(t);
        }
        self.core.arm(id.slot());
        // Input may already be waiting (its edge was consumed earlier): look now.
        self.make_ready(id);
    }

    /// Reads and discards input of a lingering connection; closes it at end-of-stream.
    fn drain_linger(&mut self, id: ConnId) {
        for _ in 0..self.core.limits.read_budget {
            let Some(c) = self.core.get_mut(id) else {
                return;
            };
            let reason = c.closing.map_or(CloseReason::Closed, |(r, _)| r);
            match (&c.stream).read(&mut self.scratch) {
                Ok(0) => {
                    self.close_now(id, reason);
                    return;
                }
                Ok(n) => bump(&self.core.stats().bytes_in, n as u64),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_now(id, reason);
                    return;
                }
            }
        }
        self.make_ready(id);
    }

    /// Closes a connection now: releases its socket, buffers, timer and slot, then calls
    /// `on_close`. Queued output is discarded (graceful closes call this once it is flushed).
    fn close_now(&mut self, id: ConnId, reason: CloseReason) {
        let slot = id.slot() as usize;
        let Some(mut c) = self.core.conns.get_mut(slot).and_then(|c| {
            if c.as_ref().is_some_and(|c| c.id == id) {
                c.take()
            } else {
                None
            }
        }) else {
            return;
        };
        if let Some(t) = c.timer.take() {
            self.core.timers.cancel(t);
        }
        if let Some(t) = c.job_timer.take() {
            self.core.timers.cancel(t);
        }
        c.close_pacers();
        let timers = &mut self.core.timers;
        c.clear_user_timers(|t| {
            timers.cancel(t);
        });
        self.core.pool.put(std::mem::take(&mut c.input));
        // Shutdown closing a connection before its output or its answer is complete (the
        // grace period ran out) resets it, so the peer cannot take a cut response for a whole
        // one (an HTTP/1.0 body ends where the connection does). A connection already in a
        // graceful close (its answer complete, lingering) is not cut: what the kernel still
        // holds for a slow reader goes out.
        let cut_short = reason == CloseReason::Shutdown
            && (!c.out.is_empty() || c.job_seq != 0 || (c.closing.is_none() && !settled(&c)));
        self.discarded += c.out.len();
        c.out.clear(&mut self.core.pool);
        if self.discarded >= TRIM_AFTER {
            self.trim();
        }
        if resets(reason)
            || cut_short
            || (reason == CloseReason::IdleTimeout && unsent(&c.stream) > 0)
        {
            // SO_LINGER 0: close sends RST and drops what the kernel still holds. A plain
            // close would leave an orphaned socket trickling the abandoned output to a peer
            // that does not read (minutes of kernel memory per slow reader).
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
        }
        let job_seq = c.job_seq;
        // Closing the descriptor also removes it from the epoll set: it is never duplicated.
        drop(c);
        self.remote().slots.release(id.slot());
        self.live -= 1;
        bump(&self.core.stats().closed[reason.index()], 1);
        self.shared().release_reserved();
        if job_seq != 0 {
            // A worker holds the state: `on_close` follows when its job comes back, and the
            // callback still running sees the connection as closed.
            if let Some(pool) = &self.pool {
                pool.shared.cancel(job_seq);
            }
            self.zombies.insert(id, reason);
            return;
        }
        if let Some(state) = self.states[slot].take() {
            self.finish_close(id, state, reason);
        }
    }

    /// Many slow readers dropped at once (an attack, or a mass timeout) free their queued
    /// output in small chunks that the allocator keeps; hands it back. At most once a second
    /// (`malloc_trim` locks every arena, stalling the other threads): sooner, a timer does it
    /// when the second is up.
    fn trim(&mut self) {
        let due = self.trimmed_at.saturating_add(TRIM_EVERY);
        if self.core.now >= due {
            self.discarded = 0;
            self.trimmed_at = self.core.now;
            release_free_memory();
        } else if !self.trim_pending {
            self.trim_pending = true;
            self.core.timers.insert(due, TimerEvent::Trim);
        }
    }

    /// Runs `on_timer` here (inline dispatch).
    fn call_on_timer(&mut self, id: ConnId, tag: u64) {
        invoke(
            &mut self.core,
            &mut self.states,
            &*self.handler,
            id,
            "on_timer",
            |h, c, s| h.on_timer(c, s, tag),
        );
    }

    /// Runs `on_close`: on a worker in pool mode, here otherwise.
    fn finish_close(&mut self, id: ConnId, state: H::State, reason: CloseReason) {
        if self.pool.is_some() {
            let job = Job {
                id,
                seq: 0,
                state,
                kind: JobKind::Close(reason),
                out: Vec::new(),
                queued: 0,
                addrs: None,
            };
            self.send_job(job);
        } else {
            self.call_on_close(id, state, reason);
        }
    }

    fn call_on_close(&self, id: ConnId, state: H::State, reason: CloseReason) {
        let handler = &self.handler;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler.on_close(id, state, reason)))
        {
            log::error!(
                "handler panicked in on_close on connection {id:?}: {}",
                panic_message(&*payload)
            );
            bump_shared(&self.core.stats().handler_failures, 1);
        }
    }

    /// `on_close` for an id that never got a connection entry (its connect could not start).
    fn call_close_detached(&mut self, id: ConnId, reason: CloseReason) {
        bump(&self.core.stats().closed[reason.index()], 1);
        if let Some(state) = self.new_state() {
            self.finish_close(id, state, reason);
        }
    }

    // ---- timers ----

    fn run_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.core.timers.advance(self.core.now, &mut fired);
        for (key, ev) in fired.drain(..) {
            match ev {
                TimerEvent::Conn(id) => self.check_deadlines(id),
                TimerEvent::User { id, tag } => {
                    let Some(c) = self.core.get_mut(id) else {
                        continue;
                    };
                    // Cancelled by a callback of this same batch: not delivered.
                    if !c.take_user_timer(key) {
                        continue;
                    }
                    if c.flags & CONNECTING != 0 {
                        // Delivered right after `on_open` (see `finish_connect`).
                        c.extra().pending_timers.push_back(tag);
                        continue;
                    }
                    if self.pool.is_some() {
                        c.extra().pending_timers.push_back(tag);
                        self.dispatch(id);
                    } else {
                        self.call_on_timer(id, tag);
                    }
                }
                TimerEvent::AcceptRetry => {
                    self.paused_emfile = false;
                    self.accept_more = true;
                }
                TimerEvent::Trim => {
                    self.trim_pending = false;
                    if self.discarded > 0 {
                        self.trim();
                    }
                }
                TimerEvent::JobDeadline { id, seq } => self.check_job_deadline(id, seq),
                TimerEvent::ShutdownGrace => {
                    self.close_all(CloseReason::Shutdown);
                    let at = self
                        .core
                        .now
                        .saturating_add(ticks(self.config.shutdown_grace));
                    self.core.timers.insert(at, TimerEvent::ShutdownLimit);
                }
                TimerEvent::ShutdownLimit => {
                    if self.in_flight > 0 {
                        log::warn!(
                            "reactor {}: {} handler jobs still unfinished after the shutdown \
                             grace period; not waiting (their on_close runs once they \
                             return)",
                            self.core.index,
                            self.in_flight
                        );
                    }
                    self.abandon = true;
                }
            }
        }
        self.fired = fired;
        if self.accept_more {
            self.accept();
        }
    }

    fn check_deadlines(&mut self, id: ConnId) {
        let now = self.core.now;
        let limits = self.core.limits;
        let Some(c) = self.core.get_mut(id) else {
            return;
        };
        c.timer = None;
        c.timer_at = NEVER;
        match Core::deadline(&limits, c) {
            Some((at, reason)) if at <= now => self.close_now(id, reason),
            Some(_) => self.core.arm(id.slot()),
            None => {}
        }
    }

    // ---- commands from other threads ----

    fn drain_inbox(&mut self) {
        if !self.run_commands(INBOX_BUDGET) {
            self.remote().renotify();
        }
        self.service_dirty();
    }

    /// Carries out up to `budget` queued commands; returns whether the inbox was emptied.
    fn run_commands(&mut self, budget: usize) -> bool {
        for _ in 0..budget {
            let Some(cmd) = self.inbox.try_recv() else {
                return true;
            };
            bump(&self.core.stats().commands, 1);
            self.command(cmd);
        }
        false
    }

    /// Carries out every command queued so far, past the per-turn budget (bounded, so that
    /// threads still sending cannot hold the shutdown off).
    fn drain_inbox_before_shutdown(&mut self) {
        self.run_commands(INBOX_BUDGET * 64);
        self.service_dirty();
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::WritePaced { id, data, pacer } => {
                let n = data.len();
                let Some(c) = lookup(&mut self.core.conns, id)
                    .filter(|c| c.close_req.is_none() && c.closing.is_none())
                else {
                    // Gone, or closing: no write lands any more.
                    pacer.took(n, 0);
                    pacer.close();
                    return;
                };
                let e = c.extra();
                if !e.pacers.iter().any(|p| Arc::ptr_eq(p, &pacer)) {
                    // Writers dropped on a connection that has not flushed since go first.
                    e.pacers.retain(|p| Arc::strong_count(p) > 1);
                    if pacer.exclusive() {
                        // A later response's body: the earlier one's waiters are done with it.
                        e.pacers.retain(|old| {
                            if old.exclusive() {
                                old.close();
                            }
                            !old.exclusive()
                        });
                    }
                    e.pacers.push(pacer.clone());
                }
                if n > 0 {
                    self.command(Command::Write { id, data });
                }
                // Its bytes are counted in the output before they stop counting as in flight.
                match self.core.get(id) {
                    Some(c) => {
                        let out = c.out.len() + held_len(c);
                        pacer.took(n, out);
                        // The connection's other writers see the output grow too.
                        for p in c.extra.iter().flat_map(|e| &e.pacers) {
                            if !Arc::ptr_eq(p, &pacer) {
                                p.publish(out);
                            }
                        }
                    }
                    None => {
                        pacer.took(n, 0);
                        pacer.close();
                    }
                }
            }
            Command::Write { id, data } => {
                if let Some(c) = lookup(&mut self.core.conns, id)
                    && c.job_seq != 0
                    && c.close_req.is_none()
                    && c.closing.is_none()
                {
                    if c.out.len() + held_len(c) + data.len() > self.core.limits.max_write_buffer {
                        self.core
                            .request_close(id, CloseReason::WriteOverflow, CloseMode::Abort);
                    } else {
                        let e = c.extra();
                        e.held_bytes += data.len();
                        // Small writes share pooled buffers: many tiny messages from another
                        // thread cost their bytes, not an allocation each.
                        let pool = &mut self.core.pool;
                        match e.held_writes.last_mut() {
                            _ if data.len() >= HELD_JOIN_BELOW => e.held_writes.push(data),
                            Some(last) if last.capacity() - last.len() >= data.len() => {
                                last.extend_from_slice(&data);
                                pool.put(data);
                            }
                            _ => {
                                let mut b = pool.get();
                                b.extend_from_slice(&data);
                                pool.put(data);
                                e.held_writes.push(b);
                            }
                        }
                    }
                    return;
                }
                let _ = self.core.write_owned(id, data);
            }
            Command::Overflow { id } => {
                self.core
                    .request_close(id, CloseReason::WriteOverflow, CloseMode::Abort);
            }
            Command::Close { id, mode } => {
                let reason = if mode == CloseMode::Abort {
                    CloseReason::Aborted
                } else {
                    CloseReason::Closed
                };
                self.core.request_close(id, reason, mode);
            }
            Command::Resume { id } => self.core.resume_input(id),
            Command::SetTimer { id, after, tag } => self.core.set_user_timer(id, after, tag),
            Command::CancelTimer { id, tag } => {
                self.core.cancel_user_timers(id, tag);
            }
            Command::Connect { id, stream } => {
                if self.stopping {
                    drop(stream);
                    self.remote().slots.release(id.slot());
                    self.call_close_detached(id, CloseReason::Shutdown);
                    return;
                }
                self.shared().reserve_unchecked();
                self.install(id, stream, true);
            }
            Command::Adopt { stream } => {
                if self.stopping {
                    drop(stream);
                    bump(&self.core.stats().accept_errors, 1);
                    self.shared().release_reserved();
                    return;
                }
                self.register(stream, false);
            }
            Command::ResumeAccept => {
                if self.paused_limit {
                    self.paused_limit = false;
                    self.accept_more = true;
                }
            }
        }
    }

    // ---- worker pool ----

    /// Records an event for the connection's next job and dispatches it if none is running.
    fn post(&mut self, id: ConnId, event: u8) {
        if let Some(c) = self.core.get_mut(id) {
            c.pending |= event;
            self.dispatch(id);
        }
    }

    /// Turns the connection's pending events into a job, unless one is queued or running (its
    /// events then wait, batched, for the next job) or the connection is closing.
    fn dispatch(&mut self, id: ConnId) {
        let Some(pool) = self.pool.as_ref() else {
            return;
        };
        let slot = id.slot() as usize;
        let Some(c) = lookup(&mut self.core.conns, id) else {
            return;
        };
        // While input is held, input events wait; the others still run. Input yielded and
        // not yet presented again (`REDELIVER`) goes first, in the `on_resume` job.
        let mask = if c.flags & INPUT_HELD != 0 {
            !(P_DATA | P_EOF | P_RESUME | P_RESUME_LATER)
        } else if c.flags & REDELIVER != 0 {
            !(P_DATA | P_EOF | P_RESUME_LATER)
        } else {
            !P_RESUME_LATER
        };
        let due = c.pending & mask;
        if c.job_seq != 0
            || c.close_req.is_some()
            || c.closing.is_some()
            || (due == 0 && !c.has_pending_timers())
        {
            return;
        }
        let Some(state) = self.states[slot].take() else {
            return;
        };
        let events = JobEvents {
            open: due & P_OPEN != 0,
            data: if due & (P_DATA | P_RESUME) != 0 {
                c.tail_len = 0;
                std::mem::take(&mut c.input)
            } else {
                Vec::new()
            },
            timers: c.take_pending_timers(),
            drain: due & P_DRAIN != 0,
            eof: due & P_EOF != 0,
            resume: due & P_RESUME != 0,
        };
        c.pending &= !due;
        let seq = pool.shared.next_seq();
        c.job_seq = seq;
        if let Some(t) = self.core.limits.handler_timeout {
            let at = self.core.now.saturating_add(t);
            c.job_timer = Some(
                self.core
                    .timers
                    .insert(at, TimerEvent::JobDeadline { id, seq }),
            );
        }
        let job = Job {
            id,
            seq,
            state,
            kind: JobKind::Events(events),
            out: self.core.pool.get(),
            queued: c.out.len(),
            addrs: c.addrs.get(),
        };
        self.send_job(job);
    }

    fn send_job(&mut self, job: Job<H>) {
        self.in_flight += 1;
        if !self.backlog.is_empty() {
            self.hold(job);
            return;
        }
        let pool = self.pool.as_ref().expect("pool mode");
        match pool.jobs.try_send(job) {
            Ok(()) => self.job_sent(),
            Err(crossbeam_channel::TrySendError::Full(job)) => self.hold(job),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                log::error!("reactor {}: worker pool is gone", self.core.index);
                self.in_flight -= 1;
            }
        }
    }

    fn job_sent(&self) {
        let s = self.core.stats();
        bump(&s.jobs_queued, 1);
        if let Some(pool) = &self.pool {
            let depth = pool.jobs.len() as u64;
            if depth
                > s.queue_high_water
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                set(&s.queue_high_water, depth);
            }
        }
    }

    /// The queue is full: keep the job here, in order, and stop reading its connection until
    /// the job leaves.
    fn hold(&mut self, job: Job<H>) {
        let id = job.id;
        self.backlog.push_back(job);
        if let Some(pool) = &self.pool {
            pool.shared.stall(self.core.index);
        }
        if self.backlog.len() == 1 {
            // The workers may have emptied the queue before the stall flag was visible, and
            // then nothing would wake this reactor for the job: try again now (as the
            // backlog drain does).
            self.drain_backlog();
            if self.backlog.is_empty() {
                return;
            }
        }
        if let Some(c) = self.core.get_mut(id)
            && c.flags & QUEUE_HELD == 0
        {
            c.flags |= QUEUE_HELD;
            bump(&self.core.stats().backpressure_pauses, 1);
        }
    }

    /// Moves held jobs to the queue while it has room.
    fn drain_backlog(&mut self) {
        let Some(pool) = self.pool.as_ref() else {
            return;
        };
        let shared = pool.shared.clone();
        let mut retried = false;
        while let Some(mut job) = self.backlog.pop_front() {
            // A connection closed while its job waited here: its input and other events are
            // moot. If the job would open the connection, `on_open` still runs (and the close
            // follows when it returns); otherwise only `on_close` remains.
            if let JobKind::Events(ev) = &mut job.kind
                && self.zombies.contains_key(&job.id)
            {
                self.core.pool.put(std::mem::take(&mut ev.data));
                if ev.open {
                    *ev = JobEvents {
                        open: true,
                        ..JobEvents::default()
                    };
                } else if let Some(reason) = self.zombies.remove(&job.id) {
                    job.kind = JobKind::Close(reason);
                }
            }
            let id = job.id;
            let pool = self.pool.as_ref().expect("pool mode");
            match pool.jobs.try_send(job) {
                Ok(()) => {
                    self.job_sent();
                    self.release_hold(id);
                }
                Err(crossbeam_channel::TrySendError::Full(job)) => {
                    self.backlog.push_front(job);
                    shared.stall(self.core.index);
                    // A worker may have taken a job before the stall flag was visible.
                    if retried {
                        return;
                    }
                    retried = true;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    self.in_flight -= 1;
                }
            }
        }
        shared.unstall(self.core.index);
    }

    fn release_hold(&mut self, id: ConnId) {
        if let Some(c) = self.core.get_mut(id)
            && c.flags & QUEUE_HELD != 0
        {
            c.flags &= !QUEUE_HELD;
            if c.flags & READ_READY != 0 {
                self.make_ready(id);
            }
        }
    }

    /// Pauses reading when input waiting for the connection's worker passed the limit, and
    /// resumes it once the worker took it.
    fn check_pending_input(&mut self, id: ConnId) {
        let max = self.core.limits.max_pending_input;
        let Some(c) = self.core.get_mut(id) else {
            return;
        };
        let over = c.input.len().saturating_sub(c.tail_len) > max;
        if over && c.flags & INPUT_PAUSED == 0 {
            c.flags |= INPUT_PAUSED;
            bump(&self.core.stats().backpressure_pauses, 1);
        } else if !over && c.flags & INPUT_PAUSED != 0 {
            c.flags &= !INPUT_PAUSED;
            if c.flags & READ_READY != 0 {
                self.make_ready(id);
            }
        }
    }

    fn drain_done(&mut self) {
        for _ in 0..INBOX_BUDGET {
            let Some(done) = self.pool.as_ref().and_then(|p| p.done.try_recv().ok()) else {
                self.service_dirty();
                return;
            };
            self.job_done(done);
        }
        self.remote().renotify();
        self.service_dirty();
    }

    /// Applies a finished job: state back, unconsumed input kept, output queued in one piece,
    /// closes and timers carried out, and the next job dispatched if events are waiting.
    fn job_done(&mut self, done: Done<H>) {
        self.in_flight -= 1;
        let Done {
            id,
            seq,
            state,
            data,
            consumed,
            out,
            actions,
            eof,
            eof_deferred,
            resumed,
        } = done;
        if actions.failed || actions.counted {
            bump_shared(&self.core.stats().handler_failures, 1);
        }
        let Some(state) = state else {
            // `on_close` ran: nothing of the connection is left.
            return;
        };
        if !matches!(self.core.get(id), Some(c) if c.job_seq == seq) {
            // Closed while the job ran.
            if let Some(pool) = &self.pool {
                pool.shared.forget_cancel(seq);
            }
            self.core.pool.put(data);
            self.core.pool.put(out);
            let reason = self.zombies.remove(&id).unwrap_or(CloseReason::Shutdown);
            self.finish_close(id, state, reason);
            return;
        }
        let now = self.core.now;
        let limits = self.core.limits;
        let slot = id.slot() as usize;
        self.states[slot] = Some(state);
        let c = self.core.conns[slot].as_mut().expect("live");
        c.job_seq = 0;
        if !data.is_empty() || resumed {
            // The idle time counts from the end of a job that handled input, not from the
            // input that started it (a job for a timer alone is no traffic).
            c.last_active = now;
        }
        if resumed {
            // The yielded input was presented again: reading may go on (unless the handler
            // yielded once more, which sets `REDELIVER`).
            c.flags &= !RESUMING;
        }
        if eof_deferred {
            c.pending |= P_EOF;
        }
        if let Some(t) = c.job_timer.take() {
            self.core.timers.cancel(t);
        }
        let mut failed = actions.failed;
        let mut overconsumed = false;
        let mut tail_overflow = false;
        match consumed {
            Some(k) if k == data.len() => {
                self.core.pool.put(data);
                if c.input.is_empty() {
                    c.input_since = NEVER;
                }
            }
            Some(k) if k < data.len() => {
                // Only what the handler left unconsumed counts against max_read_buffer, not
                // input that arrived for the next job meanwhile, nor input it yielded (not
                // read yet: it is presented again before anything more is read, so it cannot
                // grow).
                tail_overflow =
                    data.len() - k > limits.max_read_buffer && actions.input != Some(true);
                let mut tail = data;
                tail.drain(..k);
                // Input that arrived meanwhile is appended next: settling first would copy
                // twice.
                if c.input.is_empty() {
                    tail = self.core.pool.settle(tail);
                }
                c.tail_len = tail.len();
                tail.extend_from_slice(&c.input);
                self.core.pool.put(std::mem::replace(&mut c.input, tail));
                if k > 0 || c.input_since == NEVER {
                    c.input_since = now;
                }
            }
            Some(k) => {
                log::error!(
                    "on_data on connection {id:?} consumed {k} bytes of {}; failing the connection",
                    data.len()
                );
                self.core.pool.put(data);
                overconsumed = true;
                failed = true;
            }
            None => self.core.pool.put(data),
        }
        let held = c.take_held_writes();
        if out.is_empty() {
            self.core.pool.put(out);
        } else if c.out.len() + out.len() > limits.max_write_buffer {
            self.core.pool.put(out);
            self.core
                .request_close(id, CloseReason::WriteOverflow, CloseMode::Abort);
        } else {
            c.out.push_owned(out, &mut self.core.pool);
            Core::mark_dirty(&mut self.core.dirty, c);
        }
        // Writes accepted while the job ran keep their place even if a close arrived after
        // them (a deferred error answer followed by its close).
        for data in held {
            let Some(c) = lookup(&mut self.core.conns, id) else {
                break;
            };
            if c.out.len() + data.len() > limits.max_write_buffer {
                self.core
                    .request_close(id, CloseReason::WriteOverflow, CloseMode::Abort);
                break;
            }
            c.out.push_owned(data, &mut self.core.pool);
            Core::mark_dirty(&mut self.core.dirty, c);
        }
        if overconsumed && !(actions.failed || actions.counted) {
            // One failure per job: a callback that reported one already was counted above.
            bump_shared(&self.core.stats().handler_failures, 1);
        }
        for op in actions.timers {
            match op {
                TimerOp::Set(after, tag) => self.core.set_user_timer(id, after, tag),
                TimerOp::Cancel(tag) => {
                    self.core.cancel_user_timers(id, tag);
                }
            }
        }
        if overconsumed {
            self.core
                .request_close(id, CloseReason::HandlerFailed, CloseMode::Abort);
        } else if let Some((reason, mode)) = actions.close {
            self.core.request_close(id, reason, mode);
        } else if failed {
            self.core
                .request_close(id, CloseReason::HandlerFailed, CloseMode::Abort);
        }
        match actions.input {
            Some(false) => self.core.pause_input(id),
            Some(true) => self.core.resume_input(id),
            None => {}
        }
        if let Some(c) = self.core.get_mut(id)
            && c.pending & P_RESUME_LATER != 0
        {
            c.pending &= !P_RESUME_LATER;
            self.core.resume_input(id);
        }
        if eof && !actions.keep_open {
            self.core
                .request_close(id, CloseReason::PeerClosed, CloseMode::Flush);
        }
        if tail_overflow {
            self.core
                .request_close(id, CloseReason::ReadOverflow, CloseMode::Abort);
        }
        // A graceful close that waited for this job can now complete.
        if let Some(c) = lookup(&mut self.core.conns, id)
            && c.closing.is_some()
        {
            Core::mark_dirty(&mut self.core.dirty, c);
        }
        self.core.arm(id.slot());
        // Input that arrived while the job ran goes to the next job first, even when stopping.
        self.dispatch(id);
        self.close_if_settled(id);
        self.check_pending_input(id);
        // Reading waited for the input presented again to be handled (`RESUMING`).
        if let Some(c) = self.core.get(id)
            && c.flags & READ_READY != 0
            && c.flags & NO_READ == 0
        {
            self.make_ready(id);
        }
    }

    /// A job's deadline timer fired: close the connection if the job has been running for
    /// `handler_timeout`, otherwise check again when it could.
    fn check_job_deadline(&mut self, id: ConnId, seq: u64) {
        let (Some(pool), Some(timeout)) = (self.pool.as_ref(), self.core.limits.handler_timeout)
        else {
            return;
        };
        let now = self.core.now;
        let started = pool.shared.started(seq);
        let Some(c) = lookup(&mut self.core.conns, id).filter(|c| c.job_seq == seq) else {
            return;
        };
        let at = match started {
            Some(t) if now >= t.saturating_add(timeout) => {
                log::warn!(
                    "handler on connection {id:?} ran past handler_timeout; closing the connection"
                );
                c.job_timer = None;
                self.close_now(id, CloseReason::HandlerTimeout);
                return;
            }
            Some(t) => t.saturating_add(timeout),
            // Still queued (or just finished): the deadline counts from its start.
            None => now.saturating_add(timeout),
        };
        c.job_timer = Some(
            self.core
                .timers
                .insert(at, TimerEvent::JobDeadline { id, seq }),
        );
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.accept_more = false;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shared().forget_waiter(self.core.index);
        let grace = self
            .core
            .now
            .saturating_add(ticks(self.config.shutdown_grace));
        self.core.timers.insert(grace, TimerEvent::ShutdownGrace);
        for slot in 0..self.core.conns.len() {
            let Some(c) = self.core.conns[slot].as_ref() else {
                continue;
            };
            let id = c.id;
            if c.flags & CONNECTING != 0 {
                self.close_now(id, CloseReason::Shutdown);
            } else if !settled(c) {
                // A handler still running on a worker, input it yielded and not yet presented
                // again (requests pipelined past `max_pipelined`), or a handler that holds
                // input back while it waits to answer (a deferred HTTP response, perhaps
                // streaming, with output still queued): it gets the grace period too, and the
                // connection closes once it has settled (see `close_if_settled`) or when the
                // grace period ends (with a reset: see `close_now`).
            } else {
                self.core
                    .request_close(id, CloseReason::Shutdown, CloseMode::Flush);
            }
        }
        self.service_dirty();
    }

    /// While shutting down, closes a connection that kept its grace period (see
    /// `begin_shutdown`) once nothing is left to run for it: no job on a worker, no yielded
    /// input waiting to be presented again, and input not held back for an answer. Input read
    /// before the shutdown is served this way; nothing more is read once it closes.
    fn close_if_settled(&mut self, id: ConnId) {
        if self.stopping
            && let Some(c) = self.core.get(id)
            && settled(c)
            && c.close_req.is_none()
            && c.closing.is_none()
        {
            self.core
                .request_close(id, CloseReason::Shutdown, CloseMode::Flush);
        }
    }

    fn close_all(&mut self, reason: CloseReason) {
        for slot in 0..self.core.conns.len() {
            if let Some(id) = self.core.conns[slot].as_ref().map(|c| c.id) {
                self.close_now(id, reason);
            }
        }
    }

    /// After the loop: nothing may be left without its `on_close`.
    pub(crate) fn finish(&mut self) {
        // Nothing more goes to the workers: whatever remains runs here, so every connection
        // still gets its `on_close` (for a job still running when shutdown gave up, its
        // worker calls it once the job returns).
        let backlog = std::mem::take(&mut self.backlog);
        let pool = self.pool.take();
        if let Some(pool) = &pool {
            pool.shared.unstall(self.core.index);
            // Jobs still running see their connection closed (`Conn::is_closing`, writes
            // fail), as for any close while a job runs.
            for c in self.core.conns.iter().flatten() {
                if c.job_seq != 0 {
                    pool.shared.cancel(c.job_seq);
                }
            }
        }
        self.close_all(CloseReason::Shutdown);
        if let Some(pool) = pool {
            // Jobs still running (shutdown gave up on them) hand their state back through
            // the channel until the gate closes, and run `on_close` on their worker after.
            pool.shared.gates[self.core.index].close(&self.zombies);
            while let Ok(done) = pool.done.try_recv() {
                self.in_flight -= 1;
                if done.actions.failed || done.actions.counted {
                    bump_shared(&self.core.stats().handler_failures, 1);
                }
                if let Some(state) = done.state {
                    let reason = self
                        .zombies
                        .remove(&done.id)
                        .unwrap_or(CloseReason::Shutdown);
                    self.call_on_close(done.id, state, reason);
                }
            }
        }
        for job in backlog {
            let reason = match job.kind {
                JobKind::Close(r) => r,
                JobKind::Events(_) => self
                    .zombies
                    .remove(&job.id)
                    .unwrap_or(CloseReason::Shutdown),
            };
            self.call_on_close(job.id, job.state, reason);
        }
        // After this no `connect` can hand this reactor a socket; drain what already came.
        self.remote().close_inbox();
        while let Some(cmd) = self.inbox.try_recv() {
            match cmd {
                Command::Connect { id, stream } => {
                    drop(stream);
                    self.remote().slots.release(id.slot());
                    bump(&self.core.stats().closed[CloseReason::Shutdown.index()], 1);
                    if let Some(state) = self.new_state() {
                        self.call_on_close(id, state, CloseReason::Shutdown);
                    }
                }
                Command::Adopt { stream } => {
                    drop(stream);
                    bump(&self.core.stats().accept_errors, 1);
                    self.shared().release_reserved();
                }
                _ => {}
            }
        }
        self.publish_stats();
        log::debug!("reactor {} stopped", self.core.index);
    }

    /// A fresh handler state; `None` (logged and counted) if `Default` panicked.
    fn new_state(&self) -> Option<H::State> {
        match catch_unwind(H::State::default) {
            Ok(s) => Some(s),
            Err(payload) => {
                log::error!(
                    "handler state Default panicked: {}",
                    panic_message(&*payload)
                );
                bump_shared(&self.core.stats().handler_failures, 1);
                None
            }
        }
    }
}

/// Kills a reactor's slot table when dropped with the reactor: however it ends (its loop
/// finished, a panic unwinding, never started), no id of it is live any more, so a thread
/// waiting on one of its connections (a paced writer) stops waiting.
struct KillSlots {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for KillSlots {
    fn drop(&mut self) {
        if let Some(r) = self.shared.remotes.get(self.index) {
            r.slots.kill();
        }
    }
}

/// Bytes the kernel still holds in the socket's send queue (sent but unacknowledged, or not
/// yet sent). An idle connection with a non-empty queue has a peer that stopped reading after
/// the kernel took the last of shoal's output, which shoal's own write timeout cannot see.
fn unsent(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) on a TCP socket writes one int through the pointer, which
    // points at a live local of that type; the descriptor is owned by `stream`.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Discarded output after which the allocator is asked to return free memory.
const TRIM_AFTER: usize = 8 << 20;
/// Least time between two such requests, in ticks (milliseconds).
const TRIM_EVERY: u64 = 1000;

/// Returns free heap memory to the system (glibc keeps freed chunks of every thread's arena;
/// `malloc_trim` releases the free pages of all of them). Elsewhere, nothing to do.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and trims the allocator's own free lists; it takes
    // the arena locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Nothing is left to run for the connection: no job on a worker, no yielded input waiting
/// to be presented again, and input not held back for an answer.
fn settled(c: &Connection) -> bool {
    c.job_seq == 0 && c.flags & (INPUT_HELD | REDELIVER | RESUMING) == 0
}

/// Closes for which the output still queued in the kernel is abandoned, so the connection is
/// reset rather than closed: an abort, a peer that does not read, output past its bound.
fn resets(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::Aborted
            | CloseReason::WriteTimeout
            | CloseReason::WriteOverflow
            | CloseReason::ReadOverflow
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_get_nodelay_and_keepalive() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let s = TcpStream::from_std(s);
        let config = Config::default().keepalive(Some(Duration::from_secs(30)));
        configure_stream(&s, &config).unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    }

    /// An idle connection's footprint is most of the engine's memory per connection
    /// (bench/RESULTS.md): a field added here should be a choice, not an accident.
    #[test]
    fn an_idle_connection_stays_small() {
        assert!(
            std::mem::size_of::<Option<Connection>>() <= 296,
            "Connection grew to {} bytes",
            std::mem::size_of::<Option<Connection>>()
        );
    }

    #[test]
    fn user_timers_spill_past_the_first_and_cancel_by_tag() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut c = Connection {
            stream: TcpStream::from_std(s),
            id: ConnId::new(0, 1, 1),
            flags: 0,
            input: Vec::new(),
            out: OutQueue::default(),
            timer: None,
            timer1: None,
            timer_at: 0,
            last_active: 0,
            input_since: 0,
            stall_since: 0,
            queued_since: 0,
            sent_since: 0,
            close_req: None,
            closing: None,
            linger_at: 0,
            pending: 0,
            job_seq: 0,
            job_timer: None,
            addrs: AddrPair::default(),
            tail_len: 0,
            extra: None,
        };
        let mut wheel = TimerWheel::new();
        let keys: Vec<TimerId> = (0..4).map(|i| wheel.insert(10 + i, ())).collect();
        // Tags 7, 8, 7, 9: one inline, three spilled.
        for (&k, tag) in keys.iter().zip([7, 8, 7, 9]) {
            c.add_user_timer(tag, k);
        }
        assert!(c.extra.is_some());
        let mut cancelled = Vec::new();
        assert_eq!(c.remove_user_timers(7, |k| cancelled.push(k)), 2);
        assert_eq!(cancelled, [keys[2], keys[0]]);
        // A cancelled timer that fires anyway is not delivered; a pending one is, once.
        assert!(!c.take_user_timer(keys[0]));
        assert!(c.take_user_timer(keys[3]));
        assert!(!c.take_user_timer(keys[3]));
        let mut rest = Vec::new();
        c.clear_user_timers(|k| rest.push(k));
        assert_eq!(rest, [keys[1]]);
        assert!(c.timer1.is_none() && c.extra.as_ref().unwrap().timers.is_empty());
        // Without a timer or pool state the connection allocates nothing for them.
        let mut plain = Connection { extra: None, ..c };
        plain.add_user_timer(1, keys[1]);
        assert!(plain.extra.is_none());
        assert!(plain.take_user_timer(keys[1]));
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::from_micros(1)), 2);
        assert_eq!(ticks(Duration::from_millis(5)), 6);
        assert_eq!(ticks(Duration::from_micros(5001)), 7);
        assert_eq!(ticks(Duration::ZERO), 1);
    }
}
