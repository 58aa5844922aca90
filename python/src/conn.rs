//! `shoal.Connection`, and the stream handler that calls Python callbacks.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shoal_core::{AddrPair, CloseReason, Conn, ConnId, Handler, PacedWriter, ServerHandle};

use crate::errors::{err, value_error};
use crate::logging::log_exception;

/// Which connection of which server: connection ids are unique only within one server (two
/// servers with one reactor each give their first connections the same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    /// The server's [`ServerKey`].
    server: u64,
    conn: u64,
}

/// A number unique to one stream server for the life of the process (never reused, unlike
/// an address), shared by its handler and its `Connection` objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerKey(u64);

impl ServerKey {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ServerKey(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

type Current = (Key, *mut ());

const NO_CURRENT: Current = (Key { server: 0, conn: 0 }, std::ptr::null_mut());

thread_local! {
    /// The connection whose callback is running on this thread, so that `conn.write()` inside
    /// the callback goes straight into its output queue instead of through the inbox.
    static CURRENT: Cell<Current> = const { Cell::new(NO_CURRENT) };
}

/// Marks `conn` as the running callback's connection until dropped (also on unwinding).
struct CurrentGuard {
    prev: Current,
}

impl CurrentGuard {
    fn enter(server: ServerKey, conn: &mut Conn<'_>) -> Self {
        let key = Key {
            server: server.0,
            conn: conn.id().as_u64(),
        };
        let ptr = std::ptr::from_mut(conn).cast::<()>();
        let prev = CURRENT.with(|c| c.replace((key, ptr)));
        CurrentGuard { prev }
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

/// Runs `f` on the running callback's `Conn` if connection `id` of server `server` is its
/// connection. A connection of another server, even with the same id, goes through its own
/// server's handle instead.
fn with_current_conn<R>(
    server: ServerKey,
    id: ConnId,
    f: impl FnOnce(&mut Conn<'_>) -> R,
) -> Option<R> {
    let (cur, ptr) = CURRENT.with(Cell::get);
    let key = Key {
        server: server.0,
        conn: id.as_u64(),
    };
    if cur != key || ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was made from the `&mut Conn` of the callback running on this thread
    // (CurrentGuard), which stays alive and unused by its owner while Python code it called
    // runs; the guard clears it before the callback returns, so it never dangles. The key
    // names the same server and connection, so it is this connection's `Conn`.
    let conn = unsafe { &mut *ptr.cast::<Conn<'_>>() };
    Some(f(conn))
}

/// Copies a bytes-like object (bytes, bytearray, memoryview, any buffer) into a closure.
pub(crate) fn with_bytes<R>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> PyResult<R>,
) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return f(b.as_bytes());
    }
    if obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(
            "expected a bytes-like object, not str (encode it first)",
        ));
    }
    // An object with `__bytes__`: what it returns. Any other buffer (bytearray, memoryview,
    // array): one copy through bytes(memoryview(..)). The memoryview refuses what is not a
    // buffer, where bytes() alone would make five NUL bytes of 5 and b"hi" of [104, 105].
    let py = obj.py();
    if obj.get_type().hasattr(pyo3::intern!(py, "__bytes__"))? {
        let copied = py.get_type::<PyBytes>().call1((obj,))?;
        return f(copied.cast::<PyBytes>()?.as_bytes());
    }
    let view = py
        .get_type::<pyo3::types::PyMemoryView>()
        .call1((obj,))
        .map_err(|e| {
            if e.is_instance_of::<PyTypeError>(py) {
                let name = obj
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string());
                PyTypeError::new_err(format!("expected a bytes-like object, not {name}"))
            } else {
                e
            }
        })?;
    let copied = py.get_type::<PyBytes>().call1((view,))?;
    let b = copied.cast::<PyBytes>()?;
    f(b.as_bytes())
}

fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| value_error("seconds must be a finite number >= 0"))
}

/// Waits for room in a connection's output through `wait` (a pacer's `wait_writable`): first
/// without handing off the interpreter (room already, or a refusal), then in slices with it
/// released, checking for signals between them, until `deadline` (`None`: no limit). The
/// outer error is a signal handler's exception; the inner result is the wait's.
pub(crate) fn wait_for_room(
    py: Python<'_>,
    deadline: Option<std::time::Instant>,
    wait: impl Fn(Option<Duration>) -> shoal_core::Result<bool> + Sync,
) -> PyResult<shoal_core::Result<bool>> {
    const SLICE: Duration = Duration::from_millis(100);
    match wait(Some(Duration::ZERO)) {
        Ok(false) => {}
        r => return Ok(r),
    }
    loop {
        let slice = deadline.map_or(SLICE, |d| {
            d.saturating_duration_since(std::time::Instant::now())
                .min(SLICE)
        });
        match py.detach(|| wait(Some(slice))) {
            Ok(false) if deadline.is_some_and(|d| std::time::Instant::now() >= d) => {
                return Ok(Ok(false));
            }
            Ok(false) => py.check_signals()?,
            r => return Ok(r),
        }
    }
}

fn addr_tuple(a: Option<SocketAddr>) -> Option<(String, u16)> {
    a.map(|a| (a.ip().to_string(), a.port()))
}

/// A connection of a `shoal.Server`. Passed to every callback; usable from any thread
/// (writes from other threads go through the connection's reactor). Set any attribute on it
/// to keep per-connection state. Once closed, every method raises `ConnectionClosed`.
///
/// ```python
/// def on_data(conn, data):
///     conn.write(data)
/// ```
#[pyclass(module = "shoal._shoal", name = "Connection", frozen, dict)]
pub struct Connection {
    id: ConnId,
    server: ServerKey,
    handle: ServerHandle,
    /// Taken at `on_open`: after a reset the socket no longer knows its peer.
    addrs: AddrPair,
    /// Made by the first `wait_writable`: from then on, writes from outside a callback count
    /// in it, so a wait also covers writes still on their way to the reactor.
    paced: OnceLock<PacedWriter>,
}

impl Connection {
    fn new(server: ServerKey, conn: &Conn<'_>) -> Self {
        Connection {
            id: conn.id(),
            server,
            handle: conn.handle().clone(),
            addrs: match (conn.peer_addr(), conn.local_addr()) {
                (Ok(p), Ok(l)) => AddrPair::new(p, l),
                _ => AddrPair::default(),
            },
            paced: OnceLock::new(),
        }
    }

    /// For a connection that closed without opening (an outbound connect that failed): no
    /// addresses.
    fn never_opened(server: ServerKey, id: ConnId, handle: ServerHandle) -> Self {
        Connection {
            id,
            server,
            handle,
            addrs: AddrPair::default(),
            paced: OnceLock::new(),
        }
    }

    fn current<R>(&self, f: impl FnOnce(&mut Conn<'_>) -> R) -> Option<R> {
        with_current_conn(self.server, self.id, f)
    }
}

#[pymethods]
impl Connection {
    /// Queues bytes for writing (bytes, bytearray or memoryview). Raises
    /// `ConnectionClosed` once the connection is gone and `WriteOverflow` past
    /// `max_write_buffer`.
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        with_bytes(data, |bytes| match self.current(|c| c.write(bytes)) {
            Some(r) => r.map_err(err),
            None => match self.paced.get() {
                Some(w) => w.write(bytes).map_err(err),
                None => self.handle.write(self.id, bytes).map_err(err),
            },
        })
    }

    /// From a thread of the application's own: waits, with the interpreter released, until
    /// at most ``write_low_watermark`` bytes are queued on the connection, so a producer
    /// writing more than ``max_write_buffer`` to a slow client never overflows it. Call it
    /// before each write. Returns False when ``timeout`` seconds passed first (None: no
    /// limit); raises ``ConnectionClosed`` once the connection is gone, and ``ShoalError``
    /// inside a callback or on one of the server's threads, whose reactor could not flush
    /// while it waited.
    #[pyo3(signature = (timeout = None))]
    fn wait_writable(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        // A time past what an Instant holds waits without a limit.
        let deadline = match timeout {
            Some(t) => std::time::Instant::now().checked_add(self::seconds(t)?),
            None => None,
        };
        if self.handle.is_own_thread() {
            return Err(err(shoal_core::Error::WrongThread));
        }
        let w = match self.paced.get() {
            Some(w) => w,
            None => {
                let made = self.handle.paced_writer(self.id).map_err(err)?;
                self.paced.get_or_init(|| made)
            }
        };
        wait_for_room(py, deadline, |t| w.wait_writable(t))?.map_err(err)
    }

    /// Closes once queued output is flushed.
    fn close(&self) -> PyResult<()> {
        match self.current(|c| c.close()) {
            Some(()) => Ok(()),
            None => self.handle.close(self.id).map_err(err),
        }
    }

    /// Closes in two steps so the peer reads everything even while it is still sending:
    /// queued output is flushed, the write side shut down, and input discarded until the
    /// peer closes (or ``linger_timeout`` passes). A plain :meth:`close` with unread input
    /// can make the kernel reset the connection before the peer reads the last reply.
    fn shutdown(&self) -> PyResult<()> {
        match self.current(|c| c.shutdown()) {
            Some(()) => Ok(()),
            None => self.handle.shutdown(self.id).map_err(err),
        }
    }

    /// Closes at once, discarding queued output.
    fn abort(&self) -> PyResult<()> {
        match self.current(|c| c.abort()) {
            Some(()) => Ok(()),
            None => self.handle.abort(self.id).map_err(err),
        }
    }

    /// Arms a timer: `on_timer(conn, tag)` runs after `seconds`. Several timers may share a
    /// tag; none fires after `on_close`.
    #[pyo3(signature = (seconds, tag = 0))]
    fn set_timer(&self, seconds: f64, tag: u64) -> PyResult<()> {
        let after = self::seconds(seconds)?;
        match self.current(|c| c.set_timer(after, tag)) {
            Some(()) => Ok(()),
            None => self.handle.set_timer(self.id, after, tag).map_err(err),
        }
    }

    /// Cancels every pending timer of this connection with `tag`.
    #[pyo3(signature = (tag = 0))]
    fn cancel_timer(&self, tag: u64) -> PyResult<()> {
        match self.current(|c| {
            c.cancel_timer(tag);
        }) {
            Some(()) => Ok(()),
            None => self.handle.cancel_timer(self.id, tag).map_err(err),
        }
    }

    /// The connection's id (an int, unique for the server's lifetime).
    #[getter]
    fn id(&self) -> u64 {
        self.id.as_u64()
    }

    /// The peer's `(host, port)`.
    #[getter]
    fn peer(&self) -> Option<(String, u16)> {
        addr_tuple(self.addrs.peer())
    }

    /// The local `(host, port)`.
    #[getter]
    fn local(&self) -> Option<(String, u16)> {
        addr_tuple(self.addrs.local())
    }

    /// Whether the connection is still open.
    #[getter]
    fn open(&self) -> bool {
        self.handle.is_live(self.id)
    }

    fn __repr__(&self) -> String {
        match self.addrs.peer() {
            Some(p) => format!("<shoal.Connection {} from {p}>", self.id.as_u64()),
            None => format!("<shoal.Connection {}>", self.id.as_u64()),
        }
    }
}

/// The Python callables of a stream server.
#[derive(Default)]
pub(crate) struct Callbacks {
    pub(crate) on_open: Option<Py<PyAny>>,
    pub(crate) on_data: Option<Py<PyAny>>,
    pub(crate) on_eof: Option<Py<PyAny>>,
    pub(crate) on_drain: Option<Py<PyAny>>,
    pub(crate) on_timer: Option<Py<PyAny>>,
    pub(crate) on_close: Option<Py<PyAny>>,
}

/// A stream handler calling Python. Each callback attaches to the interpreter (a no-op inside
/// a worker's batch, which already holds it).
pub(crate) struct PyHandler {
    pub(crate) cb: Callbacks,
    pub(crate) batch: usize,
    /// This server's key, in its `Connection` objects and the running callback's marker.
    pub(crate) key: ServerKey,
    /// The server's handle, set right after binding: `on_close` of a connection that never
    /// opened makes its `Connection` with it.
    pub(crate) handle: OnceLock<ServerHandle>,
}

impl PyHandler {
    pub(crate) fn new(cb: Callbacks, batch: usize) -> Self {
        PyHandler {
            cb,
            batch,
            key: ServerKey::new(),
            handle: OnceLock::new(),
        }
    }
}

/// Calls a Python callback for `conn`; an exception is logged and fails the connection.
fn call<'py>(
    py: Python<'py>,
    server: ServerKey,
    conn: &mut Conn<'_>,
    what: &str,
    f: &Py<PyAny>,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> Option<Bound<'py, PyAny>> {
    let guard = CurrentGuard::enter(server, conn);
    let r = f.bind(py).call1(args);
    drop(guard);
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log_exception(py, what, e);
            conn.fail();
            None
        }
    }
}

impl Handler for PyHandler {
    type State = Option<Py<Connection>>;

    fn on_open(&self, conn: &mut Conn<'_>, st: &mut Self::State) {
        let attached = Python::try_attach(|py| {
            let obj = match Py::new(py, Connection::new(self.key, conn)) {
                Ok(o) => o,
                Err(e) => {
                    log_exception(py, "on_open", e);
                    conn.fail();
                    return;
                }
            };
            *st = Some(obj.clone_ref(py));
            if let Some(f) = &self.cb.on_open {
                call(py, self.key, conn, "on_open", f, (obj,));
            }
        });
        if attached.is_none() {
            // The interpreter is shutting down: no callback can run for this connection.
            conn.fail();
        }
    }

    fn on_data(&self, conn: &mut Conn<'_>, st: &mut Self::State, data: &[u8]) -> usize {
        let (Some(f), Some(obj)) = (&self.cb.on_data, st.as_ref()) else {
            return data.len();
        };
        let consumed = Python::try_attach(|py| {
            let bytes = PyBytes::new(py, data);
            let Some(r) = call(py, self.key, conn, "on_data", f, (obj.clone_ref(py), bytes)) else {
                return 0;
            };
            if r.is_none() {
                return data.len();
            }
            match r.extract::<usize>() {
                Ok(n) if n <= data.len() => n,
                _ => {
                    log_exception(
                        py,
                        "on_data",
                        PyTypeError::new_err(format!(
                            "on_data must return None or an int in 0..={}, got {}",
                            data.len(),
                            r.repr().map_or_else(|_| "?".to_owned(), |s| s.to_string())
                        )),
                    );
                    conn.fail();
                    0
                }
            }
        });
        consumed.unwrap_or_else(|| {
            conn.fail();
            0
        })
    }

    fn on_eof(&self, conn: &mut Conn<'_>, st: &mut Self::State) -> bool {
        let (Some(f), Some(obj)) = (&self.cb.on_eof, st.as_ref()) else {
            return false;
        };
        Python::try_attach(|py| {
            let r = call(py, self.key, conn, "on_eof", f, (obj.clone_ref(py),))?;
            // A value whose truth raises (an array, say) is the callback's failure too.
            match r.is_truthy() {
                Ok(keep) => Some(keep),
                Err(e) => {
                    log_exception(py, "on_eof", e);
                    conn.fail();
                    None
                }
            }
        })
        .flatten()
        .unwrap_or(false)
    }

    fn on_drain(&self, conn: &mut Conn<'_>, st: &mut Self::State) {
        if let (Some(f), Some(obj)) = (&self.cb.on_drain, st.as_ref()) {
            Python::try_attach(|py| {
                call(py, self.key, conn, "on_drain", f, (obj.clone_ref(py),));
            });
        }
    }

    fn on_timer(&self, conn: &mut Conn<'_>, st: &mut Self::State, tag: u64) {
        if let (Some(f), Some(obj)) = (&self.cb.on_timer, st.as_ref()) {
            Python::try_attach(|py| {
                call(py, self.key, conn, "on_timer", f, (obj.clone_ref(py), tag));
            });
        }
    }

    fn on_close(&self, id: ConnId, st: Self::State, reason: CloseReason) {
        Python::try_attach(|py| {
            if let Some(f) = &self.cb.on_close {
                // A connection that never opened (an outbound connect that failed, timed out
                // or was cut by shutdown) gets its `Connection` now: on_close runs for every
                // connection, exactly once.
                let obj = match st.as_ref() {
                    Some(obj) => Ok(obj.clone_ref(py)),
                    None => self.handle.get().map_or_else(
                        || Err(PyRuntimeError::new_err("the server has no handle yet")),
                        |h| Py::new(py, Connection::never_opened(self.key, id, h.clone())),
                    ),
                };
                if let Err(e) = obj.and_then(|obj| f.bind(py).call1((obj, reason.name()))) {
                    log_exception(py, "on_close", e);
                }
            }
            drop(st);
        });
    }

    fn thread_scope(&self, run: &mut dyn FnMut()) {
        crate::thread_scope(run);
    }

    fn worker_batch(&self) -> usize {
        self.batch
    }

    fn worker_scope(&self, run: &mut dyn FnMut()) {
        // Attached once for the whole batch: each callback's own attach is then a counter
        // increment. During interpreter shutdown the callbacks see that and fail their
        // connections.
        if Python::try_attach(|_| run()).is_none() {
            run();
        }
    }
}
