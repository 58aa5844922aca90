//! The server: binding, starting and stopping reactor threads, and the any-thread handle.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, Dispatch};
use crate::conn::ConnId;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::pool::{PoolParts, PoolShared, WorkerPool};
use crate::reactor::{self, CloseMode, Command, Reactor, Remote, WAKER};
use crate::stats::{ReactorStats, Stats};

/// State shared by all reactors and handles of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) remotes: Box<[Remote]>,
    pub(crate) stats: Box<[ReactorStats]>,
    /// Open connections plus accept reservations, across reactors.
    active: AtomicUsize,
    /// Reactors that paused accepting at `max_connections`.
    waiters: Box<[AtomicBool]>,
    waiting: AtomicUsize,
    stopping: AtomicBool,
    next_connect: AtomicUsize,
    local_addr: SocketAddr,
    /// Time origin of every reactor's clock and of the workers' job start times.
    pub(crate) epoch: Instant,
    pub(crate) pool: Option<Arc<PoolShared>>,
    /// An HTTP server: its layer owns the connections' input, output and timers, so the
    /// handle's stream calls are refused ([`Error::WrongKind`]).
    http: bool,
}

impl Shared {
    /// Reserves room for one inbound connection under `max_connections`.
    pub(crate) fn try_reserve(&self) -> bool {
        let max = self.config.max_connections;
        let mut cur = self.active.load(SeqCst);
        loop {
            if cur >= max {
                return false;
            }
            match self
                .active
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// Counts an outbound connection (these are not refused at the limit).
    pub(crate) fn reserve_unchecked(&self) {
        self.active.fetch_add(1, SeqCst);
    }

    /// Gives back a reservation or a closed connection's place, waking reactors that paused
    /// accepting at the limit.
    pub(crate) fn release_reserved(&self) {
        let prev = self.active.fetch_sub(1, SeqCst);
        if prev <= self.config.max_connections && self.waiting.load(SeqCst) > 0 {
            for (i, w) in self.waiters.iter().enumerate() {
                if w.swap(false, SeqCst) {
                    self.waiting.fetch_sub(1, SeqCst);
                    let _ = self.remotes[i].send(Command::ResumeAccept);
                }
            }
        }
    }

    /// Registers reactor `index` as paused at the limit. Returns true if room appeared
    /// meanwhile (the caller should go on accepting); otherwise a `ResumeAccept` command
    /// arrives once a connection closes.
    pub(crate) fn wait_for_room(&self, index: usize) -> bool {
        self.waiters[index].store(true, SeqCst);
        self.waiting.fetch_add(1, SeqCst);
        if self.active.load(SeqCst) < self.config.max_connections
            && self.waiters[index].swap(false, SeqCst)
        {
            self.waiting.fetch_sub(1, SeqCst);
            return true;
        }
        false
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(SeqCst)
    }

    pub(crate) fn forget_waiter(&self, index: usize) {
        if self.waiters[index].swap(false, SeqCst) {
            self.waiting.fetch_sub(1, SeqCst);
        }
    }
}

/// Writes to one connection from another thread, with flow control: between writes,
/// [`PacedWriter::wait_writable`] waits until the connection's output (what every writer and
/// callback queued, plus this writer's writes still on their way to the reactor) has drained
/// to `write_low_watermark`, so a producer faster than its client stays within
/// `max_write_buffer` instead of having the connection closed with `WriteOverflow`: at most
/// the low watermark plus one piece per waiting producer is queued.
///
/// Made by [`ServerHandle::paced_writer`]. Clones share the count; several writers of one
/// connection each wait for the same output to drain. Writes keep their order with the
/// connection's other writes from the same thread. Once the connection closes, or begins to
/// (no write lands any more), waits fail with [`Error::Closed`].
///
/// ```no_run
/// # fn produce(handle: shoal_core::ServerHandle, id: shoal_core::ConnId) -> shoal_core::Result<()> {
/// use std::time::Duration;
/// let w = handle.paced_writer(id)?;
/// for piece in std::iter::repeat_n(vec![b'x'; 1 << 20], 100) {
///     if !w.wait_writable(Some(Duration::from_secs(30)))? {
///         return w.close(); // the client stopped reading
///     }
///     w.write_owned(piece)?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PacedWriter {
    handle: ServerHandle,
    id: ConnId,
    pacer: Arc<reactor::Pacer>,
}

impl PacedWriter {
    /// The connection this writes to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues a copy of `data` at once, whatever is queued already (as
    /// [`ServerHandle::write`]): call [`PacedWriter::wait_writable`] between writes.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.handle.shared.config.max_write_buffer {
            return self.handle.overflow(self.id);
        }
        self.write_owned(data.to_vec())
    }

    /// Queues `data` without copying it again (as [`ServerHandle::write_owned`]).
    pub fn write_owned(&self, data: Vec<u8>) -> Result<()> {
        if data.is_empty() {
            return self.handle.remote_for(self.id).map(drop);
        }
        self.handle.write_paced(self.id, data, &self.pacer)
    }

    /// Bytes queued on the connection and not yet handed to the kernel: its output queue,
    /// and this writer's writes still on their way to the reactor.
    pub fn queued(&self) -> usize {
        self.pacer.queued()
    }

    /// Waits until at most `write_low_watermark` bytes are queued: `Ok(true)` when writable,
    /// `Ok(false)` when `timeout` passed first (`None`: no limit). [`Error::Closed`] once the
    /// connection is gone; [`Error::WrongThread`] on one of the server's own threads (its
    /// reactor could not flush while it waited). The first wait of a new writer also waits
    /// for the reactor to report the connection's output (a moment: a zero timeout may see
    /// `Ok(false)` then).
    pub fn wait_writable(&self, timeout: Option<Duration>) -> Result<bool> {
        self.pacer.wait(&self.handle, self.id, timeout)
    }

    /// Closes the connection gracefully (as [`ServerHandle::close`]).
    pub fn close(&self) -> Result<()> {
        self.handle.close(self.id)
    }
}

/// A cloneable, `Send + Sync` handle to a server: write to, close, and time connections, open
/// outbound connections, read stats and stop the server, from any thread.
///
/// Calls travel to the owning reactor through its inbox and take effect there, in the order
/// they were made from one thread. Every call first checks the id: a closed or reused id fails
/// with [`Error::Closed`]. A connection that closes after the check drops the operation.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

thread_local! {
    /// The [`ServerHandle::owner_key`] of the server whose reactor or worker this thread is.
    static OWNER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as one of the threads of the server with `key`.
pub(crate) fn mark_owned(key: usize) {
    OWNER.set(key);
}

impl ServerHandle {
    /// A key unique to this server while it lives: the address of its shared state.
    pub(crate) fn owner_key(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Whether the calling thread is one of this server's reactors or workers (so is running
    /// one of its callbacks, or is about to).
    pub fn is_own_thread(&self) -> bool {
        OWNER.get() == self.owner_key()
    }

    fn remote_for(&self, id: ConnId) -> Result<&Remote> {
        let remote = self.shared.remotes.get(id.reactor()).ok_or(Error::Closed)?;
        if remote.slots.is_live(id) {
            Ok(remote)
        } else {
            Err(Error::Closed)
        }
    }

    fn send(&self, id: ConnId, cmd: Command) -> Result<()> {
        self.remote_for(id)?.send(cmd).map_err(|_| Error::Closed)
    }

    /// Queues a copy of `data` on connection `id`. As [`ServerHandle::write_owned`] for
    /// data larger than `max_write_buffer`.
    pub fn write(&self, id: ConnId, data: &[u8]) -> Result<()> {
        self.for_streams("write")?;
        if data.len() > self.shared.config.max_write_buffer {
            return self.overflow(id);
        }
        self.queue(id, data.to_vec())
    }

    /// [`Error::WrongKind`] on an HTTP server (see [`Error::WrongKind`]).
    #[inline]
    fn for_streams(&self, call: &'static str) -> Result<()> {
        if self.shared.http {
            return Err(Error::WrongKind(call));
        }
        Ok(())
    }

    /// Queues `data` on connection `id` without copying it again.
    ///
    /// [`Error::WriteOverflow`] at once for data larger than `max_write_buffer` (it can never
    /// be queued; the connection is closed with `WriteOverflow`, as for a write that finds
    /// the queue too full when the reactor carries it out).
    pub fn write_owned(&self, id: ConnId, data: Vec<u8>) -> Result<()> {
        self.for_streams("write_owned")?;
        self.queue(id, data)
    }

    /// [`ServerHandle::write_owned`] for any server (the HTTP layer's own writes).
    pub(crate) fn queue(&self, id: ConnId, data: Vec<u8>) -> Result<()> {
        if data.len() > self.shared.config.max_write_buffer {
            return self.overflow(id);
        }
        self.send(id, Command::Write { id, data })
    }

    /// As [`ServerHandle::write_owned`], for a writer that paces itself with `pacer`.
    pub(crate) fn write_paced(
        &self,
        id: ConnId,
        data: Vec<u8>,
        pacer: &Arc<reactor::Pacer>,
    ) -> Result<()> {
        if data.len() > self.shared.config.max_write_buffer {
            return self.overflow(id);
        }
        let n = data.len();
        pacer.sending(n);
        let pacer = pacer.clone();
        self.send(id, Command::WritePaced { id, data, pacer })
    }

    /// A writer for connection `id` that paces itself ([`PacedWriter`]): for a producer on
    /// another thread sending more than `max_write_buffer` to a client that may read slowly.
    /// [`Error::Closed`] when `id` names no live connection.
    pub fn paced_writer(&self, id: ConnId) -> Result<PacedWriter> {
        self.for_streams("paced_writer")?;
        let pacer = Arc::new(reactor::Pacer::new(self.low_watermark(), false));
        // Registered at once, so the first wait knows what others queued before it.
        self.send(
            id,
            Command::WritePaced {
                id,
                data: Vec::new(),
                pacer: pacer.clone(),
            },
        )?;
        Ok(PacedWriter {
            pacer,
            handle: self.clone(),
            id,
        })
    }

    /// The connection's low watermark (where a paced writer goes on).
    pub(crate) fn low_watermark(&self) -> usize {
        self.shared.config.write_low_watermark
    }

    /// Closes `id` with `WriteOverflow` for a write that can never be queued.
    fn overflow(&self, id: ConnId) -> Result<()> {
        self.send(id, Command::Overflow { id })?;
        Err(Error::WriteOverflow)
    }

    /// Queues several buffers, in order, as one write. As [`ServerHandle::write_owned`] for
    /// data larger than `max_write_buffer`.
    pub fn write_vectored(&self, id: ConnId, bufs: &[IoSlice<'_>]) -> Result<()> {
        self.for_streams("write_vectored")?;
        self.remote_for(id)?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > self.shared.config.max_write_buffer {
            return self.overflow(id);
        }
        let mut data = Vec::with_capacity(total);
        for b in bufs {
            data.extend_from_slice(b);
        }
        self.queue(id, data)
    }

    /// Closes `id` gracefully: queued output is flushed first.
    pub fn close(&self, id: ConnId) -> Result<()> {
        self.send(
            id,
            Command::Close {
                id,
                mode: CloseMode::Flush,
            },
        )
    }

    /// Closes `id` in two steps, as [`crate::Conn::shutdown`]: flush, shut down writing,
    /// discard input until the peer closes or `linger_timeout`, then close.
    pub fn shutdown(&self, id: ConnId) -> Result<()> {
        self.send(
            id,
            Command::Close {
                id,
                mode: CloseMode::Linger,
            },
        )
    }

    /// Closes `id` at once, discarding queued output.
    pub fn abort(&self, id: ConnId) -> Result<()> {
        self.send(
            id,
            Command::Close {
                id,
                mode: CloseMode::Abort,
            },
        )
    }

    /// Resumes input paused by [`crate::Conn::pause_input`]: the unconsumed input is
    /// presented again through `Handler::on_resume`, then reading continues.
    pub fn resume_input(&self, id: ConnId) -> Result<()> {
        self.for_streams("resume_input")?;
        self.resume(id)
    }

    /// [`ServerHandle::resume_input`] for any server (the HTTP layer's own resume, after a
    /// deferred answer).
    pub(crate) fn resume(&self, id: ConnId) -> Result<()> {
        self.send(id, Command::Resume { id })
    }

    /// Arms a timer on `id` that calls `Handler::on_timer` with `tag` after `after`. On an
    /// outbound connection still connecting, a timer that comes due waits for `on_open` and
    /// follows it.
    pub fn set_timer(&self, id: ConnId, after: Duration, tag: u64) -> Result<()> {
        self.for_streams("set_timer")?;
        self.send(id, Command::SetTimer { id, after, tag })
    }

    /// Cancels every pending timer of `id` with `tag`.
    pub fn cancel_timer(&self, id: ConnId, tag: u64) -> Result<()> {
        self.for_streams("cancel_timer")?;
        self.send(id, Command::CancelTimer { id, tag })
    }

    /// Starts an outbound connection, served by this server's handler like an accepted one:
    /// `on_open` once connected; a refusal, an error or `connect_timeout` arrive as the
    /// `on_close` reason. Returns the id at once; callable from any thread, including handlers.
    /// If the handler's `State::default` panics for it, the connection is dropped without any
    /// callback (there is no state to pass one), logged and counted in `handler_failures`.
    pub fn connect(&self, addr: SocketAddr) -> Result<ConnId> {
        self.for_streams("connect")?;
        if self.is_stopping() {
            return Err(Error::Stopped);
        }
        let n = self.shared.remotes.len();
        let r = self.shared.next_connect.fetch_add(1, SeqCst) % n;
        let remote = &self.shared.remotes[r];
        if remote.slots.is_dead() {
            return Err(Error::Stopped);
        }
        let Some((slot, generation)) = remote.slots.alloc() else {
            // A reactor that died since the check above has no slots to give either.
            if remote.slots.is_dead() || self.is_stopping() {
                return Err(Error::Stopped);
            }
            return Err(io::Error::other("no free connection slot").into());
        };
        let id = ConnId::new(r, slot, generation);
        let stream = match mio::net::TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                remote.slots.release(slot);
                return Err(e.into());
            }
        };
        if remote
            .send_guarded(Command::Connect { id, stream })
            .is_err()
        {
            remote.slots.release(slot);
            return Err(Error::Stopped);
        }
        Ok(id)
    }

    /// Whether `id` names a live connection right now.
    pub fn is_live(&self, id: ConnId) -> bool {
        self.remote_for(id).is_ok()
    }

    /// Stops the server: accepting ends at once; commands already sent (writes, closes) are
    /// carried out; queued output, a handler still running on a worker, input a handler
    /// yielded (HTTP requests pipelined past `max_pipelined`), and a handler holding input
    /// back (`pause_input`: a deferred HTTP response, or a handler's own pause) get
    /// `shutdown_grace` to finish; then the remaining connections close with `Shutdown` (reset if their output
    /// or answer is incomplete, so a cut response never ends like a whole one). Idempotent;
    /// returns immediately (`Server::wait` or `Server::run` return once everything closed).
    ///
    /// Async-signal-safe: it only stores an atomic flag and writes each reactor's `eventfd`
    /// (no allocation, no lock), so it may be called from a signal handler.
    pub fn stop(&self) {
        if self.shared.stopping.swap(true, SeqCst) {
            return;
        }
        for r in self.shared.remotes.iter() {
            r.wake();
        }
    }

    /// Whether `stop` was called.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(SeqCst)
    }

    /// A snapshot of the counters, summed over reactors.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for r in self.shared.stats.iter() {
            s.add(r);
        }
        if let Some(p) = &self.shared.pool {
            s.jobs_running = p.running.load(std::sync::atomic::Ordering::Relaxed);
            s.jobs_completed = p.completed.load(std::sync::atomic::Ordering::Relaxed);
        }
        s
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Number of reactor threads.
    pub fn threads(&self) -> usize {
        self.shared.remotes.len()
    }
}

/// A TCP server: `threads` reactors serving one address with one [`Handler`].
///
/// ```no_run
/// use shoal_core::{Config, Conn, Handler, Server};
///
/// struct Echo;
/// impl Handler for Echo {
///     type State = ();
///     fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
///         let _ = conn.write(data);
///         data.len()
///     }
/// }
///
/// let config = Config::new("127.0.0.1:9000".parse().unwrap()).threads(2);
/// let server = Server::bind(config, Echo).unwrap();
/// println!("listening on {}", server.local_addr());
/// server.run().unwrap();
/// ```
pub struct Server<H: Handler> {
    handle: ServerHandle,
    pending: Vec<Reactor<H>>,
    threads: Vec<JoinHandle<()>>,
    pool_parts: Option<PoolParts<H>>,
    pool: Option<WorkerPool>,
    /// The process that started the threads: a child forked after `start` has none of them.
    pid: u32,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .field("running", &!self.threads.is_empty())
            .finish_non_exhaustive()
    }
}

fn bind_listener(config: &Config, addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if config.reuse_port {
        sock.set_reuse_port(true)?;
    }
    // Set on the listener so accepted sockets start with them (and so the receive buffer
    // size takes part in window scaling, which is fixed at the handshake).
    if let Some(n) = config.recv_buffer_size {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(n) = config.send_buffer_size {
        sock.set_send_buffer_size(n)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(config.backlog)?;
    Ok(TcpListener::from_std(sock.into()))
}

impl<H: Handler> Server<H> {
    /// Validates `config` and binds the listening sockets (so [`Server::local_addr`] knows a
    /// port-0 port). No thread runs until [`Server::start`] or [`Server::run`].
    pub fn bind(config: Config, handler: H) -> Result<Self> {
        Self::bind_shared(config, Arc::new(handler))
    }

    /// As [`Server::bind`], with a handler the caller keeps a reference to.
    pub fn bind_shared(config: Config, handler: Arc<H>) -> Result<Self> {
        Self::bind_as(config, handler, false)
    }

    /// [`Server::bind_shared`]; `http` for the HTTP layer's server (see `Shared::http`).
    pub(crate) fn bind_as(config: Config, handler: Arc<H>, http: bool) -> Result<Self> {
        config.validate()?;
        let n = config.threads;
        let first = bind_listener(&config, config.addr)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![Some(first)];
        for _ in 1..n {
            listeners.push(if config.reuse_port {
                Some(bind_listener(&config, local_addr)?)
            } else {
                None
            });
        }
        let mut polls = Vec::with_capacity(n);
        let mut remotes = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (remote, inbox) = reactor::channel(waker);
            polls.push(poll);
            remotes.push(remote);
            inboxes.push(inbox);
        }
        let epoch = Instant::now();
        let pool_shared = match config.dispatch {
            Dispatch::Inline => None,
            Dispatch::Pool { workers, .. } => Some(Arc::new(PoolShared::new(
                workers,
                n,
                epoch,
                config.handler_timeout,
                config.max_write_buffer,
            ))),
        };
        let dispatch = config.dispatch;
        let shared = Arc::new(Shared {
            epoch,
            pool: pool_shared.clone(),
            remotes: remotes.into_boxed_slice(),
            stats: (0..n).map(|_| ReactorStats::default()).collect(),
            active: AtomicUsize::new(0),
            waiters: (0..n).map(|_| AtomicBool::new(false)).collect(),
            waiting: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            next_connect: AtomicUsize::new(0),
            local_addr,
            config,
            http,
        });
        let handle = ServerHandle { shared };
        let mut pool_parts = match (dispatch, pool_shared) {
            (
                Dispatch::Pool {
                    workers,
                    queue_capacity,
                },
                Some(ps),
            ) => Some(PoolParts::new(
                workers,
                queue_capacity,
                n,
                handler.clone(),
                &handle,
                ps,
            )),
            _ => None,
        };
        let mut links = pool_parts
            .as_mut()
            .map(|p| std::mem::take(&mut p.links).into_iter());
        let mut pending = Vec::with_capacity(n);
        for (i, ((poll, listener), inbox)) in
            polls.into_iter().zip(listeners).zip(inboxes).enumerate()
        {
            let link = links.as_mut().and_then(|l| l.next());
            pending.push(Reactor::new(
                i,
                poll,
                listener,
                inbox,
                handler.clone(),
                handle.clone(),
                link,
            )?);
        }
        Ok(Server {
            handle,
            pending,
            threads: Vec::new(),
            pool_parts,
            pool: None,
            pid: 0,
        })
    }

    /// A handle for use from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Starts the reactor threads and returns. If a thread cannot be spawned, the threads
    /// already running are stopped and joined and every id from `connect` gets its
    /// `on_close` before the error returns: the server is then finished (`wait` returns at
    /// once, another `start` is [`Error::AlreadyStarted`]).
    pub fn start(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Err(Error::AlreadyStarted);
        }
        self.pid = std::process::id();
        if let Some(parts) = self.pool_parts.take() {
            match parts.start() {
                Ok(pool) => self.pool = Some(pool),
                Err((e, spawned)) => {
                    self.pool = Some(spawned);
                    return Err(self.abandon_start(e));
                }
            }
        }
        let mut pending = std::mem::take(&mut self.pending).into_iter();
        while let Some(reactor) = pending.next() {
            let name = format!("shoal-reactor-{}", self.threads.len());
            let owner = self.handle.owner_key();
            let handler = reactor.handler().clone();
            let mut unstarted = Unstarted(Some(reactor));
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                mark_owned(owner);
                handler.thread_scope(&mut || {
                    if let Some(r) = unstarted.0.take() {
                        r.run();
                    }
                });
            });
            match spawned {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    // The reactor went down with the closure (its guard finished it).
                    self.pending.extend(pending);
                    return Err(self.abandon_start(e));
                }
            }
        }
        Ok(())
    }

    /// A start that could not spawn every thread: the threads already running are stopped
    /// and joined and the reactors never started are finished (ids from `connect` get their
    /// `on_close`), so nothing is left half running. The server is then finished.
    fn abandon_start(&mut self, e: io::Error) -> Error {
        log::error!("shoal server could not start its threads: {e}");
        self.handle.stop();
        // First the reactors that never ran: they hold senders of the workers' queue, which
        // the workers wait on before they can be joined.
        for mut r in self.pending.drain(..) {
            r.finish();
        }
        let _ = self.wait();
        e.into()
    }

    /// Waits for the reactor threads to finish (after `stop`). [`Error::WrongThread`] from one
    /// of this server's own threads (a callback), which would otherwise wait for itself.
    ///
    /// In a child process forked after `start`, whose copy of the server has no threads (they
    /// run in the parent), it returns at once, and dropping the server there waits for
    /// nothing either.
    pub fn wait(&mut self) -> Result<()> {
        if self.handle.is_own_thread() {
            return Err(Error::WrongThread);
        }
        if self.forget_if_forked() {
            return Ok(());
        }
        let mut result = Ok(());
        for (i, t) in self.threads.drain(..).enumerate() {
            if t.join().is_err() && result.is_ok() {
                result = Err(Error::ReactorPanicked(i));
            }
        }
        // Every reactor is gone, and with them the queue's senders: workers finish and exit.
        if let Some(pool) = self.pool.take() {
            pool.join();
        }
        result
    }

    /// Whether the server was started and every reactor thread has since finished (after
    /// `stop`): `wait` then returns at once. Lets a caller that must stay responsive (a Python
    /// `run()` watching for Ctrl-C) poll instead of blocking in `wait`.
    pub fn is_finished(&self) -> bool {
        self.pending.is_empty() && (self.forked() || self.threads.iter().all(|t| t.is_finished()))
    }

    /// Whether this is a copy of a started server in a child forked after `start`.
    fn forked(&self) -> bool {
        self.pid != 0 && self.pid != std::process::id()
    }

    /// In a forked child: lets go of the parent's threads without joining them (they do not
    /// exist here; a join would wait forever) and returns true.
    fn forget_if_forked(&mut self) -> bool {
        if !self.forked() {
            return false;
        }
        for t in self.threads.drain(..) {
            std::mem::forget(t);
        }
        std::mem::forget(self.pool.take());
        true
    }

    /// Starts and blocks until the server is stopped (by `stop` on any handle).
    pub fn run(mut self) -> Result<()> {
        self.start()?;
        self.wait()
    }

    /// Stops the server (see [`ServerHandle::stop`]).
    pub fn stop(&self) {
        self.handle.stop();
    }
}

/// A reactor on its way to its thread: finished where it is dropped if it never ran (its
/// thread could not be spawned, or `thread_scope` did not call it).
struct Unstarted<H: Handler>(Option<Reactor<H>>);

impl<H: Handler> Drop for Unstarted<H> {
    fn drop(&mut self) {
        if let Some(mut r) = self.0.take() {
            r.finish();
        }
    }
}

impl<H: Handler> Drop for Server<H> {
    fn drop(&mut self) {
        if self.forget_if_forked() {
            return;
        }
        if !self.threads.is_empty() && self.handle.is_own_thread() {
            // Dropped by a callback (it owned the last reference): joining would wait for
            // this very thread. Stop and let the threads finish on their own.
            self.handle.stop();
            log::error!("shoal server dropped from its own thread; stopping without waiting");
            // Dropping the join handles detaches the threads.
            self.threads.clear();
            self.pool = None;
            return;
        }
        if !self.threads.is_empty() {
            self.handle.stop();
            let _ = self.wait();
        }
        // Never started: ids handed out by `connect` still get their `on_close`.
        for mut r in self.pending.drain(..) {
            r.finish();
        }
    }
}
