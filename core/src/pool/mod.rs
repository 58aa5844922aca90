//! The worker pool: handler callbacks on worker threads, so handlers may block.
//!
//! A reactor turns a connection's pending events (open, new input, fired timers, drain,
//! end-of-stream) into one [`Job`] and sends it on a bounded channel shared by all reactors.
//! A connection has at most one job queued or running, so its callbacks run one at a time and
//! in order, and events that arrive meanwhile batch into its next job. The worker runs the
//! callbacks with a [`Conn`] whose writes collect in a buffer, then sends a [`Done`] back to
//! the reactor (typed channel, woken through the reactor's waker); the reactor queues the
//! output in one piece, applies closes and timers, and dispatches the next job.
//!
//! Backpressure: when the channel is full a reactor keeps the job in its own backlog and stops
//! reading that connection; when a connection's input waiting for its worker passes
//! `max_pending_input` it stops reading too. Memory stays bounded by those two limits.
//!
//! Handler deadline: each worker publishes which job it runs and since when in its
//! [`WorkerSlot`]; a reactor timer checks it and closes the connection when the job outlives
//! `handler_timeout`, marking the slot so the callback's further writes fail.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::conn::{Conn, ConnId};
use crate::error::{CloseReason, Error, Result};
use crate::handler::Handler;
use crate::reactor::CloseMode;
use crate::server::ServerHandle;
use crate::stats::bump_shared;

/// A timer request made from a worker, applied by the reactor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerOp {
    Set(Duration, u64),
    Cancel(u64),
}

/// What a worker's callbacks asked for, applied by the reactor when the job is done.
#[derive(Debug, Default)]
pub(crate) struct Actions {
    pub(crate) close: Option<(CloseReason, CloseMode)>,
    /// The last `pause_input` (false) or `resume_input` (true) request.
    pub(crate) input: Option<bool>,
    pub(crate) failed: bool,
    /// A failure to count that does not close (the protocol layer closes later).
    pub(crate) counted: bool,
    pub(crate) timers: Vec<TimerOp>,
    /// `on_eof` asked to keep the connection open.
    pub(crate) keep_open: bool,
}

/// Events batched into one job, in the order they run.
#[derive(Debug, Default)]
pub(crate) struct JobEvents {
    pub(crate) open: bool,
    /// New input (after any unconsumed tail); empty when no input arrived.
    pub(crate) data: Vec<u8>,
    pub(crate) timers: Vec<u64>,
    pub(crate) drain: bool,
    pub(crate) eof: bool,
    /// `data` is input presented again after `resume_input` (`on_resume`, even if empty).
    pub(crate) resume: bool,
}

#[derive(Debug)]
pub(crate) enum JobKind {
    Events(JobEvents),
    Close(CloseReason),
}

/// One connection's callbacks to run on a worker.
pub(crate) struct Job<H: Handler> {
    pub(crate) id: ConnId,
    pub(crate) seq: u64,
    pub(crate) state: H::State,
    pub(crate) kind: JobKind,
    /// A pooled buffer for the callbacks' output.
    pub(crate) out: Vec<u8>,
    /// Output already queued on the reactor when the job was made.
    pub(crate) queued: usize,
    pub(crate) addrs: Option<(SocketAddr, SocketAddr)>,
}

/// A finished job, back to its reactor.
pub(crate) struct Done<H: Handler> {
    pub(crate) id: ConnId,
    pub(crate) seq: u64,
    /// `None` for a close job (the state was consumed by `on_close`).
    pub(crate) state: Option<H::State>,
    /// The input buffer, handed back for its unconsumed tail and reuse.
    pub(crate) data: Vec<u8>,
    /// What `on_data` returned (`None` if it did not run or panicked).
    pub(crate) consumed: Option<usize>,
    pub(crate) out: Vec<u8>,
    pub(crate) actions: Actions,
    /// The job carried end-of-stream and `on_eof` ran.
    pub(crate) eof: bool,
    /// The job carried end-of-stream, but the handler held back or yielded input first:
    /// `on_eof` is due again after that input.
    pub(crate) eof_deferred: bool,
    /// The job presented yielded input again (`on_resume`).
    pub(crate) resumed: bool,
}

/// What one worker is running, for the handler deadline. 64-byte aligned so workers do not
/// share cache lines.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct WorkerSlot {
    /// Sequence number of the running job, 0 when idle.
    seq: AtomicU64,
    /// Reactor tick at which it started.
    started: AtomicU64,
    /// Set to the running job's sequence number when its connection was closed under it.
    cancelled: AtomicU64,
}

/// Pool state shared with reactors and stats (not generic over the handler).
#[derive(Debug)]
pub(crate) struct PoolShared {
    pub(crate) workers: Box<[WorkerSlot]>,
    next_seq: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) completed: AtomicU64,
    /// Reactors with jobs held back because the queue was full.
    stalled: Box<[AtomicBool]>,
    stalled_count: AtomicUsize,
    pub(crate) epoch: Instant,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_write_buffer: usize,
    /// One per reactor: guards handing finished jobs back against that reactor exiting.
    pub(crate) gates: Box<[DoneGate]>,
    /// Jobs cancelled while no worker ran them (still queued, or just taken): a worker about
    /// to run one finds it here. `cancels` counts them, so a worker checks the list only
    /// when it is not empty (almost never).
    cancelled_queued: Mutex<Vec<u64>>,
    cancels: AtomicUsize,
}

/// Set in a [`DoneGate`] once its reactor takes no more finished jobs.
const GONE: usize = 1 << (usize::BITS - 1);

/// Guards the hand-back of finished jobs to one reactor. Each reactor closes its gate on
/// its way out; only jobs it gave up waiting for at shutdown (they outlived twice the grace
/// period) can still be running then. A worker that finds the gate closed calls `on_close`
/// itself, so every connection still gets its `on_close` exactly once. The count of workers
/// inside and the closed bit share one atomic, so a worker either enters before the gate
/// closes (and the reactor waits for it and then takes what it sent) or sees it closed.
/// Cache-line aligned: each reactor's gate is touched by every job of that reactor.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct DoneGate {
    state: AtomicUsize,
    /// Why the connections whose jobs the reactor left behind were closed, for their
    /// `on_close` (filled before the gate closes, read only after).
    reasons: Mutex<HashMap<ConnId, CloseReason>>,
}

impl DoneGate {
    /// Enters to hand a result back; false (and not entered) once the gate is closed.
    fn enter(&self) -> bool {
        if self.state.fetch_add(1, Ordering::AcqRel) & GONE == 0 {
            return true;
        }
        self.state.fetch_sub(1, Ordering::AcqRel);
        false
    }

    fn leave(&self) {
        self.state.fetch_sub(1, Ordering::AcqRel);
    }

    fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & GONE != 0
    }

    /// Records why each connection left behind was closed, then closes the gate and waits
    /// for the workers inside it (each only sending one message): afterwards everything
    /// handed back is in the channel, and nothing more comes.
    pub(crate) fn close(&self, reasons: &HashMap<ConnId, CloseReason>) {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(reasons);
        self.state.fetch_or(GONE, Ordering::AcqRel);
        while self.state.load(Ordering::Acquire) & !GONE != 0 {
            std::thread::yield_now();
        }
    }

    /// Why `id` was closed (taken: asked once per connection).
    fn reason(&self, id: ConnId) -> CloseReason {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .unwrap_or(CloseReason::Shutdown)
    }
}

impl PoolShared {
    pub(crate) fn new(
        workers: usize,
        reactors: usize,
        epoch: Instant,
        timeout: Option<Duration>,
        max_write_buffer: usize,
    ) -> Self {
        PoolShared {
            workers: (0..workers).map(|_| WorkerSlot::default()).collect(),
            next_seq: AtomicU64::new(1),
            running: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            stalled: (0..reactors).map(|_| AtomicBool::new(false)).collect(),
            stalled_count: AtomicUsize::new(0),
            epoch,
            timeout,
            max_write_buffer,
            gates: (0..reactors).map(|_| DoneGate::default()).collect(),
            cancelled_queued: Mutex::new(Vec::new()),
            cancels: AtomicUsize::new(0),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The tick at which job `seq` started running, if a worker is running it now.
    pub(crate) fn started(&self, seq: u64) -> Option<u64> {
        self.workers.iter().find_map(|w| {
            if w.seq.load(Ordering::Acquire) != seq {
                return None;
            }
            let t = w.started.load(Ordering::Acquire);
            (w.seq.load(Ordering::Acquire) == seq).then_some(t)
        })
    }

    /// Makes job `seq` see its connection as closed, whether a worker runs it now or later.
    /// It is listed first, then looked for among the running jobs; a worker stores the
    /// job it starts, then looks at the list (all sequentially consistent), so one of the two
    /// sides sees the other. Whoever finds it in the list takes it out.
    pub(crate) fn cancel(&self, seq: u64) {
        self.list_cancel(seq);
        for w in self.workers.iter() {
            if w.seq.load(Ordering::SeqCst) == seq {
                w.cancelled.store(seq, Ordering::Release);
                self.take_cancel(seq);
            }
        }
    }

    fn list_cancel(&self, seq: u64) {
        let mut list = self
            .cancelled_queued
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        list.push(seq);
        self.cancels.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes `seq` off the list of cancelled jobs; whether it was there.
    fn take_cancel(&self, seq: u64) -> bool {
        let mut list = self
            .cancelled_queued
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match list.iter().position(|&s| s == seq) {
            Some(i) => {
                list.swap_remove(i);
                self.cancels.fetch_sub(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// A worker starting job `seq` (already stored as its running job): whether it was
    /// cancelled before any worker ran it.
    fn cancelled_before_start(&self, seq: u64) -> bool {
        self.cancels.load(Ordering::SeqCst) != 0 && self.take_cancel(seq)
    }

    /// The reactor, taking back job `seq` after its connection closed: a cancel that came
    /// after the job had finished (no worker ran it any more) is dropped from the list.
    pub(crate) fn forget_cancel(&self, seq: u64) {
        if self.cancels.load(Ordering::SeqCst) != 0 {
            self.take_cancel(seq);
        }
    }

    /// Registers reactor `index` as waiting for queue space (the reactor retries once after
    /// registering, in case a worker took a job before the registration was visible).
    pub(crate) fn stall(&self, index: usize) {
        if !self.stalled[index].swap(true, Ordering::SeqCst) {
            self.stalled_count.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn unstall(&self, index: usize) {
        if self.stalled[index].swap(false, Ordering::SeqCst) {
            self.stalled_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Called by a worker after taking a job: wakes reactors waiting for queue space.
    fn wake_stalled(&self, handle: &ServerHandle) {
        if self.stalled_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        for (i, s) in self.stalled.iter().enumerate() {
            if s.swap(false, Ordering::SeqCst) {
                self.stalled_count.fetch_sub(1, Ordering::SeqCst);
                handle.shared.remotes[i].wake();
            }
        }
    }

    fn now_tick(&self) -> u64 {
        crate::reactor::tick_since(self.epoch)
    }
}

/// The worker side of a [`Conn`]: one per worker thread, reset for each job; output and
/// requests collect here while the job's callbacks run.
#[derive(Debug)]
pub(crate) struct WorkerCtx {
    index: usize,
    shared: Arc<PoolShared>,
    pub(crate) handle: ServerHandle,
    out: Vec<u8>,
    actions: Actions,
    queued: usize,
    seq: u64,
    started: Instant,
    addrs: Option<(SocketAddr, SocketAddr)>,
}

impl WorkerCtx {
    fn slot(&self) -> &WorkerSlot {
        &self.shared.workers[self.index]
    }

    fn cancelled(&self) -> bool {
        self.slot().cancelled.load(Ordering::Acquire) == self.seq
    }

    fn check_write(&mut self, len: usize) -> Result<()> {
        if self.cancelled() || self.actions.close.is_some() {
            return Err(Error::Closed);
        }
        if self
            .queued
            .saturating_add(self.out.len())
            .saturating_add(len)
            > self.shared.max_write_buffer
        {
            self.actions.close = Some((CloseReason::WriteOverflow, CloseMode::Abort));
            return Err(Error::WriteOverflow);
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check_write(data.len())?;
        self.out.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn write_with(&mut self, max: usize, f: impl FnOnce(&mut Vec<u8>)) -> Result<usize> {
        self.check_write(max)?;
        let start = self.out.len();
        self.out.reserve(max);
        f(&mut self.out);
        Ok(self.out.len().saturating_sub(start))
    }

    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<()> {
        self.check_write(bufs.iter().map(|b| b.len()).sum())?;
        for b in bufs {
            self.out.extend_from_slice(b);
        }
        Ok(())
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued + self.out.len()
    }

    pub(crate) fn request_close(&mut self, reason: CloseReason, mode: CloseMode) {
        if !matches!(self.actions.close, Some((_, m)) if m >= mode) {
            self.actions.close = Some((reason, mode));
        }
    }

    pub(crate) fn fail(&mut self) {
        self.actions.failed = true;
        self.actions.close = Some((CloseReason::HandlerFailed, CloseMode::Abort));
    }

    pub(crate) fn actions_failed(&mut self) {
        self.actions.failed = true;
    }

    pub(crate) fn count_failure(&mut self) {
        self.actions.counted = true;
    }

    pub(crate) fn input(&mut self, resume: bool) {
        self.actions.input = Some(resume);
    }

    /// Whether the handler paused or resumed input during this job.
    pub(crate) fn input_requested(&self) -> bool {
        self.actions.input.is_some()
    }

    pub(crate) fn timer(&mut self, op: TimerOp) {
        self.actions.timers.push(op);
    }

    pub(crate) fn addrs(&self) -> Result<(SocketAddr, SocketAddr)> {
        self.addrs.ok_or(Error::Closed)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.actions.close.is_some() || self.cancelled()
    }

    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.shared
            .timeout
            .map(|t| t.saturating_sub(self.started.elapsed()))
    }
}

/// The running pool: its threads and the sending side of its queue.
pub(crate) struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
    shared: Arc<PoolShared>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// Everything a worker thread needs.
struct Worker<H: Handler> {
    jobs: Receiver<Job<H>>,
    done: Arc<[Sender<Done<H>>]>,
    handler: Arc<H>,
    ctx: WorkerCtx,
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

impl<H: Handler> Worker<H> {
    fn run(mut self) {
        let handler = self.handler.clone();
        let batch = handler.worker_batch().max(1);
        while let Ok(job) = self.jobs.recv() {
            // Up to `batch` jobs inside one scope: the first, then whatever is queued.
            let mut next = Some(job);
            handler.worker_scope(&mut || {
                let mut ran = 0;
                while let Some(job) = next.take() {
                    self.finish(job);
                    ran += 1;
                    if ran < batch {
                        next = self.jobs.try_recv().ok();
                    }
                }
            });
        }
    }

    fn finish(&mut self, job: Job<H>) {
        self.ctx.shared.wake_stalled(&self.ctx.handle);
        let id = job.id;
        let r = id.reactor();
        if self.ctx.shared.gates[r].is_closed() {
            // The reactor has exited, closing the connection: only `on_close` is left to run.
            match job.kind {
                JobKind::Events(_) => {
                    if self.ctx.shared.cancels.load(Ordering::SeqCst) != 0 {
                        self.ctx.shared.take_cancel(job.seq);
                    }
                    self.orphan(id, job.state);
                }
                JobKind::Close(_) => {
                    if self.run_job(job).actions.failed {
                        bump_shared(&self.ctx.handle.shared.stats[r].handler_failures, 1);
                    }
                }
            }
            return;
        }
        let done = self.run_job(job);
        let unsent = if self.ctx.shared.gates[r].enter() {
            let sent = self.done[r].send(done);
            self.ctx.shared.gates[r].leave();
            match sent {
                Ok(()) => {
                    self.ctx.handle.shared.remotes[r].wake();
                    None
                }
                // The reactor thread ended without closing its gate (it panicked).
                Err(e) => Some(e.into_inner()),
            }
        } else {
            Some(done)
        };
        if let Some(state) = unsent.and_then(|d| d.state) {
            self.orphan(id, state);
        }
    }

    /// `on_close` for a connection whose reactor exited while its job ran (or waited), with
    /// the reason the reactor closed it for. Counted as a job, like the callbacks it replaces.
    fn orphan(&self, id: ConnId, state: H::State) {
        let shared = &self.ctx.shared;
        let reason = shared.gates[id.reactor()].reason(id);
        shared.running.fetch_add(1, Ordering::Relaxed);
        let handler = &*self.handler;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler.on_close(id, state, reason)))
        {
            log::error!(
                "handler panicked in on_close on connection {id:?}: {}",
                panic_message(&*payload)
            );
            bump_shared(
                &self.ctx.handle.shared.stats[id.reactor()].handler_failures,
                1,
            );
        }
        shared.running.fetch_sub(1, Ordering::Relaxed);
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }

    fn run_job(&mut self, job: Job<H>) -> Done<H> {
        let ctx = &mut self.ctx;
        let shared = ctx.shared.clone();
        let slot = &shared.workers[ctx.index];
        slot.started.store(shared.now_tick(), Ordering::Release);
        slot.seq.store(job.seq, Ordering::SeqCst);
        shared.running.fetch_add(1, Ordering::Relaxed);
        let Job {
            id,
            seq,
            mut state,
            kind,
            out,
            queued,
            addrs,
        } = job;
        let handler = &*self.handler;
        // A job that waited in the queue while its reactor closed the connection runs as
        // cancelled: its input reaches no callback and its writes fail, as for a job cancelled
        // while it runs (`PoolShared::cancel`). Every kind of job takes its entry off the list
        // (a job turned into `on_close` while it waited in the reactor's backlog too).
        if shared.cancelled_before_start(seq) {
            slot.cancelled.store(seq, Ordering::Release);
        }
        let done = match kind {
            JobKind::Events(ev) => {
                ctx.out = out;
                ctx.actions = Actions::default();
                ctx.queued = queued;
                ctx.seq = seq;
                ctx.started = Instant::now();
                ctx.addrs = addrs;
                let mut consumed = None;
                let mut eof_deferred = false;
                let data = &ev.data;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let mut conn = Conn::on_worker(id, ctx);
                    if ev.open {
                        handler.on_open(&mut conn, &mut state);
                    }
                    if ev.resume && !conn.is_closing() {
                        consumed = Some(handler.on_resume(&mut conn, &mut state, data));
                    } else if !data.is_empty() && !conn.is_closing() {
                        consumed = Some(handler.on_data(&mut conn, &mut state, data));
                    }
                    for &tag in &ev.timers {
                        if !conn.is_closing() {
                            handler.on_timer(&mut conn, &mut state, tag);
                        }
                    }
                    if ev.drain && !conn.is_closing() {
                        handler.on_drain(&mut conn, &mut state);
                    }
                    // Input the handler held back or yielded comes first: end-of-stream waits
                    // until it has been presented again (the reactor keeps it pending).
                    if ev.eof && !conn.is_closing() {
                        if conn.input_requested() {
                            eof_deferred = true;
                        } else {
                            let keep = handler.on_eof(&mut conn, &mut state);
                            ctx.actions.keep_open = keep;
                        }
                    }
                }));
                if let Err(payload) = result {
                    log::error!(
                        "handler panicked on a worker on connection {id:?}: {}",
                        panic_message(&*payload)
                    );
                    consumed = None;
                    ctx.fail();
                }
                Done {
                    id,
                    seq,
                    state: Some(state),
                    data: ev.data,
                    consumed,
                    out: std::mem::take(&mut ctx.out),
                    actions: std::mem::take(&mut ctx.actions),
                    eof: ev.eof && !eof_deferred,
                    eof_deferred,
                    resumed: ev.resume,
                }
            }
            JobKind::Close(reason) => {
                let mut actions = Actions::default();
                if let Err(payload) =
                    catch_unwind(AssertUnwindSafe(|| handler.on_close(id, state, reason)))
                {
                    log::error!(
                        "handler panicked in on_close on connection {id:?}: {}",
                        panic_message(&*payload)
                    );
                    actions.failed = true;
                }
                Done {
                    id,
                    seq,
                    state: None,
                    data: Vec::new(),
                    consumed: None,
                    out,
                    actions,
                    eof: false,
                    eof_deferred: false,
                    resumed: false,
                }
            }
        };
        slot.seq.store(0, Ordering::Release);
        shared.running.fetch_sub(1, Ordering::Relaxed);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        done
    }
}

/// The reactor's end of the pool.
pub(crate) struct PoolLink<H: Handler> {
    pub(crate) jobs: Sender<Job<H>>,
    pub(crate) done: Receiver<Done<H>>,
    pub(crate) shared: Arc<PoolShared>,
}

/// The pieces `Server::bind` hands out: one link per reactor, and the unstarted workers.
pub(crate) struct PoolParts<H: Handler> {
    pub(crate) links: Vec<PoolLink<H>>,
    workers: Vec<Worker<H>>,
    shared: Arc<PoolShared>,
}

impl<H: Handler> PoolParts<H> {
    pub(crate) fn new(
        workers: usize,
        queue_capacity: usize,
        reactors: usize,
        handler: Arc<H>,
        handle: &ServerHandle,
        shared: Arc<PoolShared>,
    ) -> Self {
        let (job_tx, job_rx) = crossbeam_channel::bounded(queue_capacity);
        let mut done_txs = Vec::with_capacity(reactors);
        let mut links = Vec::with_capacity(reactors);
        for _ in 0..reactors {
            let (tx, rx) = crossbeam_channel::unbounded();
            done_txs.push(tx);
            links.push(PoolLink {
                jobs: job_tx.clone(),
                done: rx,
                shared: shared.clone(),
            });
        }
        let done: Arc<[Sender<Done<H>>]> = done_txs.into();
        let workers = (0..workers)
            .map(|index| Worker {
                jobs: job_rx.clone(),
                done: done.clone(),
                handler: handler.clone(),
                ctx: WorkerCtx {
                    index,
                    shared: shared.clone(),
                    handle: handle.clone(),
                    out: Vec::new(),
                    actions: Actions::default(),
                    queued: 0,
                    seq: 0,
                    started: Instant::now(),
                    addrs: None,
                },
            })
            .collect();
        PoolParts {
            links,
            workers,
            shared,
        }
    }

    /// Starts the worker threads.
    /// Spawns the workers. If one cannot be spawned, the error comes with the pool of those
    /// that were, to be joined once the reactors (the senders of their queue) are gone.
    pub(crate) fn start(self) -> std::result::Result<WorkerPool, (std::io::Error, WorkerPool)> {
        let mut pool = WorkerPool {
            threads: Vec::with_capacity(self.workers.len()),
            shared: self.shared,
        };
        for w in self.workers {
            let name = format!("shoal-worker-{}", w.ctx.index);
            let owner = w.ctx.handle.owner_key();
            let handler = w.handler.clone();
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                crate::server::mark_owned(owner);
                let mut worker = Some(w);
                handler.thread_scope(&mut || {
                    if let Some(w) = worker.take() {
                        w.run();
                    }
                });
            });
            match spawned {
                Ok(t) => pool.threads.push(t),
                Err(e) => return Err((e, pool)),
            }
        }
        Ok(pool)
    }
}

impl WorkerPool {
    /// Joins the workers once every reactor has exited (the queue's senders are gone). A
    /// worker still inside a callback that never returns is left running, with a warning,
    /// rather than hanging the caller.
    pub(crate) fn join(self) {
        let running = self.shared.running.load(Ordering::Relaxed);
        if running > 0 {
            log::warn!("{running} handler callbacks still running after shutdown; not waiting");
            return;
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_that_meets_no_job_is_taken_by_the_next_job_or_forgotten() {
        let shared = PoolShared::new(2, 1, Instant::now(), None, 1 << 20);
        // Cancelled while it waited (no worker runs it): listed until a worker starts it.
        shared.cancel(5);
        assert_eq!(shared.cancels.load(Ordering::SeqCst), 1);
        assert!(shared.cancelled_before_start(5));
        assert!(!shared.cancelled_before_start(5), "taken once");
        // Cancelled after it finished (the reactor had not taken its result yet): the
        // reactor forgets it when it takes the result, so no later job scans for it.
        shared.cancel(6);
        shared.forget_cancel(6);
        assert_eq!(shared.cancels.load(Ordering::SeqCst), 0);
        assert!(shared.cancelled_queued.lock().unwrap().is_empty());
        // Running on a worker: marked there, never listed.
        shared.workers[1].seq.store(7, Ordering::SeqCst);
        shared.cancel(7);
        assert_eq!(shared.workers[1].cancelled.load(Ordering::Acquire), 7);
        assert_eq!(shared.cancels.load(Ordering::SeqCst), 0);
    }
}
