//! `shoal.Server` (stream callbacks) and the lifecycle both server classes share: start,
//! stop, wait, run with Ctrl-C, context manager, stats, and a stop-and-join at interpreter
//! exit for servers still running.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use shoal_core::http::{HttpServer, HttpStatsHandle};
use shoal_core::{CloseReason, ServerHandle, Stats};

use crate::conn::{Callbacks, PyHandler};
use crate::errors::{ShoalError, err, value_error};
use crate::http::PyHttp;
use crate::options::{ENGINE_OPTIONS, Options};

/// The engine under a Python server object.
pub(crate) enum Engine {
    Stream(shoal_core::Server<PyHandler>),
    Http(HttpServer<PyHttp>),
}

impl Engine {
    fn start(&mut self) -> shoal_core::Result<()> {
        match self {
            Engine::Stream(s) => s.start(),
            Engine::Http(s) => s.start(),
        }
    }

    fn wait(&mut self) -> shoal_core::Result<()> {
        match self {
            Engine::Stream(s) => s.wait(),
            Engine::Http(s) => s.wait(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Engine::Stream(s) => s.is_finished(),
            Engine::Http(s) => s.is_finished(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    /// `start` is spawning the threads, the engine out of the lock meanwhile (a failed start
    /// runs `on_close` callbacks on the starting thread, which may look at the server).
    Starting,
    Running,
    /// Threads joined; the server cannot start again.
    Done,
}

/// What the lock guards. Rule: this lock is only ever taken with the interpreter released
/// (inside `Python::detach`), because a holder may wait for worker threads that need the
/// interpreter to finish their callbacks.
pub(crate) struct Life {
    engine: Option<Engine>,
    phase: Phase,
}

/// What the garbage collector sees of an unstarted server. Rule: only locked with the
/// interpreter held (so a collection, which holds it too, always finds the same state).
struct Gc {
    /// The Python callables the engine's handler holds; taken out when the server starts.
    refs: Option<Refs>,
    /// A `connect` was made: dropping the engine would then run `on_close`, Python code,
    /// which must not run in the middle of a collection, so the server is not collectable.
    connected: bool,
}

/// Where the engine's handler keeps its Python callables: visited by `Server.__traverse__`
/// while the server is unstarted, so a reference cycle through it (a callback closing over
/// its own server) is collected, and its port released, instead of living to the end.
pub(crate) enum Refs {
    Stream(Arc<PyHandler>),
    Http(Arc<Py<PyAny>>),
}

impl Refs {
    fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Refs::Stream(h) => {
                let cb = &h.cb;
                for f in [
                    &cb.on_open,
                    &cb.on_data,
                    &cb.on_eof,
                    &cb.on_drain,
                    &cb.on_timer,
                    &cb.on_close,
                ]
                .into_iter()
                .flatten()
                {
                    visit.call(f)?;
                }
                Ok(())
            }
            Refs::Http(f) => visit.call(&**f),
        }
    }
}

/// The shared part of a server object, also listed for the exit hook while running.
pub(crate) struct Core {
    life: Mutex<Life>,
    gc: Mutex<Gc>,
    pub(crate) handle: ServerHandle,
    pub(crate) addr: SocketAddr,
    pub(crate) http_stats: Option<HttpStatsHandle>,
}

/// Servers started and not yet joined, stopped and joined by the exit hook.
static LIVE: Mutex<Vec<Arc<Core>>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<Arc<Core>>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Core {
    pub(crate) fn new(engine: Engine, refs: Refs) -> Arc<Self> {
        let (handle, addr, http_stats) = match &engine {
            Engine::Stream(s) => (s.handle(), s.local_addr(), None),
            Engine::Http(s) => (s.handle(), s.local_addr(), Some(s.http_stats_handle())),
        };
        Arc::new(Core {
            life: Mutex::new(Life {
                engine: Some(engine),
                phase: Phase::Created,
            }),
            gc: Mutex::new(Gc {
                refs: Some(refs),
                connected: false,
            }),
            handle,
            addr,
            http_stats,
        })
    }

    /// Locks the state; call with the interpreter released.
    fn lock(&self) -> MutexGuard<'_, Life> {
        self.life
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The garbage collector's view; lock with the interpreter held.
    fn gc(&self) -> MutexGuard<'_, Gc> {
        self.gc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        // Once started (or finished) the server is no longer the collector's to visit: its
        // threads hold the handler until they end, and then let it go.
        drop(self.gc().refs.take());
        let r = py.detach(|| {
            let mut engine = {
                let mut life = self.lock();
                match life.phase {
                    Phase::Starting | Phase::Running => {
                        return Err("the server is already started");
                    }
                    Phase::Done => return Err("the server has finished; create a new one"),
                    Phase::Created => {}
                }
                life.phase = Phase::Starting;
                life.engine.take().expect("present until joined")
            };
            // A panic must not leave the phase at `Starting` (every wait would spin).
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.start()));
            let mut life = self.lock();
            life.engine = Some(engine);
            let Ok(started) = started else {
                life.phase = Phase::Done;
                return Err("the server failed to start (an internal panic)");
            };
            match started {
                Ok(()) => {
                    life.phase = Phase::Running;
                    live().push(self.clone());
                    Ok(Ok(()))
                }
                Err(e) => {
                    // Threads could not be made: the engine stopped what it had started and
                    // is finished.
                    life.phase = Phase::Done;
                    Ok(Err(e))
                }
            }
        });
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(err(e)),
            Err(msg) => Err(ShoalError::new_err(msg)),
        }
    }

    /// Whether the threads have finished; joins them (once) when they have.
    fn finished(&self) -> shoal_core::Result<bool> {
        let mut life = self.lock();
        match life.phase {
            Phase::Created | Phase::Starting => Ok(false),
            Phase::Done => Ok(true),
            Phase::Running => {
                let engine = life.engine.as_mut().expect("present until joined");
                if !engine.is_finished() {
                    return Ok(false);
                }
                let r = engine.wait();
                if matches!(r, Err(shoal_core::Error::WrongThread)) {
                    return r.map(|()| false);
                }
                life.phase = Phase::Done;
                // Dropping the engine drops the handler and its Python callables; this
                // thread has the interpreter released, so defer that to the caller.
                drop(life);
                live().retain(|c| !std::ptr::eq(&**c, self));
                r.map(|()| true)
            }
        }
    }

    /// Waits up to `timeout` (forever if None) for the server to finish, checking for
    /// signals every few milliseconds. A signal handler's exception is returned as is.
    fn wait(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<bool> {
        if self.handle.is_own_thread() {
            return Err(err(shoal_core::Error::WrongThread));
        }
        {
            let created = py.detach(|| self.lock().phase == Phase::Created);
            if created {
                return Err(ShoalError::new_err("the server was not started"));
            }
        }
        // A timeout past what an Instant can hold (sys.maxsize seconds) waits forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if py.detach(|| self.finished()).map_err(err)? {
                return Ok(true);
            }
            py.check_signals()?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let nap = deadline.map_or(POLL, |d| (d - now).min(POLL));
            py.detach(|| std::thread::sleep(nap));
        }
    }

    /// Stops and waits for the server to finish. A signal handler's exception (a second
    /// Ctrl-C during a graceful stop) ends the wait at once and is returned; the server goes
    /// on stopping by itself.
    fn stop_and_join(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.stop();
        if self.handle.is_own_thread() {
            return Ok(());
        }
        loop {
            if py.detach(|| self.finished()).map_err(err)? {
                return Ok(());
            }
            py.check_signals()?;
            py.detach(|| std::thread::sleep(POLL));
        }
    }

    fn phase(&self, py: Python<'_>) -> Phase {
        py.detach(|| self.lock().phase)
    }
}

const POLL: Duration = Duration::from_millis(10);

/// Stops and joins every server still running, then waits until no shoal thread is left
/// (registered with `atexit`). A callback still running past the shutdown grace keeps its
/// worker thread alive, and such a thread must not take the GIL once the interpreter
/// finalizes (see [`crate::THREADS`]): like a non-daemon `threading.Thread`, it is waited
/// for, with a note on stderr after a few seconds. A Ctrl-C during that wait ends the
/// process at once (`os._exit(130)`, after flushing stdout and stderr) rather than let it
/// finalize under running callbacks.
#[pyfunction]
pub(crate) fn _shutdown_all(py: Python<'_>) -> PyResult<()> {
    let servers: Vec<Arc<Core>> = py.detach(|| live().clone());
    for s in &servers {
        s.handle.stop();
    }
    let started = Instant::now();
    let mut noted = false;
    loop {
        // Joined as they finish (a server's own thread cannot join it; it stops by itself).
        let mut joined = true;
        for s in &servers {
            if !s.handle.is_own_thread() {
                joined &= py.detach(|| s.finished()).unwrap_or(true);
            }
        }
        let left = crate::THREADS.load(std::sync::atomic::Ordering::SeqCst);
        if joined && left == 0 {
            break;
        }
        if let Err(e) = py.check_signals() {
            return exit_now(py, e);
        }
        if !noted && started.elapsed() >= EXIT_NOTE_AFTER {
            noted = true;
            let _ = write_stderr(
                py,
                &format!(
                    "shoal: waiting at exit for {left} server thread(s) whose callbacks are \
                     still running (Ctrl-C to exit at once)\n"
                ),
            );
        }
        py.detach(|| std::thread::sleep(POLL));
    }
    // The engine's last records (those of the stops above among them) reach `logging`
    // before it shuts down.
    crate::logging::flush(py, Duration::from_secs(2));
    Ok(())
}

/// How long the exit hook waits for running callbacks before it says so.
const EXIT_NOTE_AFTER: Duration = Duration::from_secs(3);

fn write_stderr(py: Python<'_>, text: &str) -> PyResult<()> {
    let stderr = py.import("sys")?.getattr("stderr")?;
    stderr.call_method1("write", (text,))?;
    stderr.call_method0("flush")?;
    Ok(())
}

/// Ends the process from the exit hook without finalizing the interpreter, which shoal
/// threads still inside callbacks would otherwise abort (see [`crate::THREADS`]).
fn exit_now(py: Python<'_>, e: PyErr) -> PyResult<()> {
    let left = crate::THREADS.load(std::sync::atomic::Ordering::SeqCst);
    if left == 0 {
        return Err(e);
    }
    let _ = write_stderr(
        py,
        &format!("shoal: exiting at once, {left} server thread(s) still running callbacks\n"),
    );
    let sys = py.import("sys")?;
    let _ = sys.getattr("stdout")?.call_method0("flush");
    py.import("os")?.call_method1("_exit", (130,))?;
    Err(e)
}

/// A TCP server calling Python functions for connection events.
///
/// Callbacks (each optional except ``on_data``), called with a :class:`Connection`, given as
/// keywords or as the methods of a ``handler`` object (positional):
///
/// - ``on_open(conn)``: a connection was accepted (or an outbound one established).
/// - ``on_data(conn, data) -> int | None``: bytes arrived. Return how many were consumed
///   (the rest is presented again with more), or None for all of them.
/// - ``on_eof(conn) -> bool``: the peer finished sending; return True to keep the
///   connection open for writing (default: close once output is flushed).
/// - ``on_drain(conn)``: queued output fell below the low watermark.
/// - ``on_timer(conn, tag)``: a timer set with :meth:`Connection.set_timer` fired.
/// - ``on_close(conn, reason)``: the connection closed; ``reason`` is a string such as
///   ``"peer_closed"`` or ``"idle_timeout"``. Called exactly once per connection, also for
///   an outbound one that never connected (``"connect_failed"``).
///
/// By default callbacks run on ``workers`` (4) threads, so they may block; the reactor
/// threads never take the interpreter. ``inline=True`` runs them on the reactor threads
/// instead: faster for callbacks that never block. An exception in a callback is logged to
/// the ``shoal`` logger and closes that connection only.
///
/// Keyword options: ``host`` ("127.0.0.1"), ``port`` (0: any free port), ``threads``,
/// ``workers``, ``queue``, ``inline``, ``gil_batch`` (callbacks a worker runs per interpreter
/// acquisition, 16), ``reuse_port``, ``backlog``, ``nodelay``, ``keepalive``,
/// ``recv_buffer_size``, ``send_buffer_size``, ``read_buffer_size``, ``max_read_buffer``,
/// ``write_high_watermark``, ``write_low_watermark``, ``max_write_buffer``, ``idle_timeout``,
/// ``read_timeout``, ``write_timeout``, ``write_min_rate`` (bytes/s), ``connect_timeout``,
/// ``max_connections``,
/// ``shutdown_grace``, ``linger_timeout``, ``max_pending_input``, ``handler_timeout``,
/// ``accept_backoff``, ``events_capacity``, ``read_budget``, ``pool_buffer_size``,
/// ``pool_max_free``.
/// Times are in seconds; None turns off ``keepalive``, ``idle_timeout``, ``read_timeout``,
/// ``write_timeout`` and ``handler_timeout`` (the other times cannot be off). ``keepalive`` is 1 to 32767 s;
/// ``read_buffer_size`` and ``pool_buffer_size`` at most 64 MiB; ``events_capacity`` and
/// ``queue`` at most 1048576.
///
/// .. code-block:: python
///
///     with shoal.Server(on_data=lambda conn, data: conn.write(data)) as srv:
///         print("echo on port", srv.port)
///         srv.wait()
#[pyclass(module = "shoal._shoal", name = "Server", subclass, frozen, weakref)]
pub struct Server {
    pub(crate) core: Arc<Core>,
}

impl Server {
    pub(crate) fn from_core(core: Arc<Core>) -> Self {
        Server { core }
    }
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (handler=None, *, on_data=None, on_open=None, on_eof=None, on_drain=None, on_timer=None, on_close=None, **options))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        handler: Option<Bound<'_, PyAny>>,
        on_data: Option<Py<PyAny>>,
        on_open: Option<Py<PyAny>>,
        on_eof: Option<Py<PyAny>>,
        on_drain: Option<Py<PyAny>>,
        on_timer: Option<Py<PyAny>>,
        on_close: Option<Py<PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut cb = [on_data, on_open, on_eof, on_drain, on_timer, on_close];
        const NAMES: [&str; 6] = [
            "on_data", "on_open", "on_eof", "on_drain", "on_timer", "on_close",
        ];
        if let Some(obj) = &handler {
            // An object with the callbacks as methods; a keyword may add one it lacks, not
            // give one it has.
            for (slot, name) in cb.iter_mut().zip(NAMES) {
                if let Some(m) = obj.getattr_opt(name)?
                    && !m.is_none()
                {
                    if slot.is_some() {
                        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                            "{name} given both by the handler object and as a keyword"
                        )));
                    }
                    *slot = Some(m.unbind());
                }
            }
        }
        for (f, name) in cb.iter().zip(NAMES) {
            if let Some(f) = f
                && !f.bind(py).is_callable()
            {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "{name} must be callable"
                )));
            }
        }
        let [on_data, on_open, on_eof, on_drain, on_timer, on_close] = cb;
        let Some(on_data) = on_data else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "Server() needs on_data: as a keyword, or as a method of the handler object",
            ));
        };
        let opts = Options::new(options, &[ENGINE_OPTIONS], "Server")?;
        let (config, common) = opts.engine()?;
        let handler = Arc::new(PyHandler::new(
            Callbacks {
                on_open,
                on_data: Some(on_data),
                on_eof,
                on_drain,
                on_timer,
                on_close,
            },
            common.gil_batch,
        ));
        let server = py.detach(|| {
            shoal_core::Server::bind_shared(config, handler.clone()).map_err(|e| e.to_string())
        });
        let server = server.map_err(bind_error)?;
        // Before any connect: on_close of a connect that never opened needs it.
        let _ = handler.handle.set(server.handle());
        Ok(Server::from_core(Core::new(
            Engine::Stream(server),
            Refs::Stream(handler),
        )))
    }

    /// Visits the callables of an unstarted server whose state this object alone holds.
    /// Once started, the server is kept alive by the exit hook's list until it finishes, and
    /// nothing is visited. The lock is only tried (never waited for, the GIL being held).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if Arc::strong_count(&self.core) != 1 {
            return Ok(());
        }
        let Ok(gc) = self.core.gc.try_lock() else {
            return Ok(());
        };
        match &gc.refs {
            Some(refs) if !gc.connected => refs.visit(&visit),
            _ => Ok(()),
        }
    }

    /// Breaks a reference cycle through an unstarted server: its engine (the listening
    /// socket with it) and handler go, and it can no longer start.
    fn __clear__(&self) {
        let Ok(mut gc) = self.core.gc.try_lock() else {
            return;
        };
        if gc.connected || gc.refs.is_none() {
            return;
        }
        let Ok(mut life) = self.core.life.try_lock() else {
            return;
        };
        if life.phase != Phase::Created {
            return;
        }
        life.phase = Phase::Done;
        let engine = life.engine.take();
        drop(life);
        let refs = gc.refs.take();
        drop(gc);
        // No connect was made, so the engine's drop runs no callback.
        drop(engine);
        drop(refs);
    }

    /// Starts the reactor (and worker) threads and returns; the server is then listening.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.core.start(py)
    }

    /// Asks the server to stop: no new connections, in-flight callbacks finish, queued
    /// output flushes within ``shutdown_grace``, then every connection closes. Returns at once
    /// (see :meth:`wait`); safe from any thread, a callback or a signal handler.
    fn stop(&self) {
        self.core.handle.stop();
    }

    /// Waits until a started server has finished (after :meth:`stop`), at most ``timeout``
    /// seconds if given (one too far in the future to count, such as ``sys.maxsize``, waits
    /// without limit); returns whether it finished. The interpreter is released meanwhile;
    /// an exception raised by a signal handler (KeyboardInterrupt) propagates and leaves the
    /// server running.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout
            .map(|t| crate::options::seconds("timeout", &t.into_pyobject(py)?.into_any()))
            .transpose()?;
        self.core.wait(py, timeout)
    }

    /// Starts (unless started) and serves until stopped. On Ctrl-C (or any exception from a
    /// signal handler) it stops gracefully, waits for in-flight work, then re-raises
    /// (KeyboardInterrupt).
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        if self.core.phase(py) == Phase::Created {
            self.core.start(py)?;
        }
        match self.core.wait(py, None) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.core.stop_and_join(py)?;
                Err(e)
            }
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().core.start(slf.py())?;
        Ok(slf)
    }

    /// Stops and waits for the server (also on an exception, which then propagates).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.core.stop_and_join(py)?;
        Ok(false)
    }

    /// The port the server listens on (the one picked when ``port=0``).
    #[getter]
    fn port(&self) -> u16 {
        self.core.addr.port()
    }

    /// The ``(host, port)`` the server listens on.
    #[getter]
    fn address(&self) -> (String, u16) {
        (self.core.addr.ip().to_string(), self.core.addr.port())
    }

    /// Whether the server is running (started, and not finished).
    #[getter]
    fn running(&self, py: Python<'_>) -> bool {
        self.core.phase(py) == Phase::Running && !self.core.handle.is_stopping()
    }

    /// Opens an outbound connection to ``(host, port)`` served by the same callbacks; returns
    /// its id once ``host`` is resolved (a name lookup runs with the interpreter released;
    /// ``ValueError`` if it fails), without waiting for the connection. ``on_open`` runs once
    /// connected; if it never connects, ``on_close`` alone runs, with a :class:`Connection`
    /// of that id (no ``peer``) and the reason ``"connect_failed"``, ``"connect_timeout"`` or
    /// ``"shutdown"``. A connect the system refuses to begin at all (no route to the
    /// network, no local address left) raises ``OSError`` instead, and no callback runs;
    /// ``ServerStopped`` once the server is stopping.
    fn connect(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<u64> {
        // A name lookup may block for seconds: other Python threads run meanwhile.
        let addr: SocketAddr = py
            .detach(|| resolve_first(host, port))
            .map_err(|e| value_error(format!("cannot resolve {host:?}: {e}")))?;
        // From now on the engine's drop may call on_close: no longer the collector's.
        self.core.gc().connected = true;
        self.core
            .handle
            .connect(addr)
            .map(|id| id.as_u64())
            .map_err(err)
    }

    /// A snapshot of the server's counters as a dict (``closed`` maps close reasons to
    /// counts; an HTTP server adds ``http``).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = stats_dict(py, &self.core.handle.stats())?;
        if let Some(h) = &self.core.http_stats {
            d.set_item("http", crate::http::http_stats_dict(py, &h.get())?)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("<shoal.Server on {}>", self.core.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server object dropped while running (never stopped): stop it and let its threads
        // finish. The engine joins them when dropped, which the exit hook or the last thread
        // holding the core does, never with the interpreter held here.
        self.core.handle.stop();
    }
}

/// The first address `host` resolves to (a literal address is taken as is).
fn resolve_first(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for this name")
    })
}

/// Turns a bind failure into `OSError` (address in use, permission) or `ConfigError`.
pub(crate) fn bind_error(msg: String) -> PyErr {
    if msg.starts_with("invalid configuration") {
        crate::errors::config_error(msg)
    } else {
        pyo3::exceptions::PyOSError::new_err(msg)
    }
}

pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let closed = PyDict::new(py);
    for r in CloseReason::ALL {
        closed.set_item(r.name(), s.closed(r))?;
    }
    let fields: [(&str, u64); 19] = [
        ("accepted", s.accepted),
        ("connected", s.connected),
        ("active", s.active),
        ("bytes_in", s.bytes_in),
        ("bytes_out", s.bytes_out),
        ("accept_paused_limit", s.accept_paused_limit),
        ("accept_paused_emfile", s.accept_paused_emfile),
        ("accept_errors", s.accept_errors),
        ("pool_hits", s.pool_hits),
        ("pool_misses", s.pool_misses),
        ("commands", s.commands),
        ("handler_failures", s.handler_failures),
        ("read_pauses", s.read_pauses),
        ("jobs_queued", s.jobs_queued),
        ("jobs_running", s.jobs_running),
        ("jobs_completed", s.jobs_completed),
        ("queue_high_water", s.queue_high_water),
        ("backpressure_pauses", s.backpressure_pauses),
        ("timeouts", s.timeouts()),
    ];
    for (k, v) in fields {
        d.set_item(k, v)?;
    }
    d.set_item("closed", closed)?;
    Ok(d)
}
