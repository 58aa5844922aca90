//! Python `logging` for shoal: the engine's `log` records go to the logger `shoal` (through
//! a thread of their own), and exceptions raised by callbacks are logged there with their
//! traceback.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `logging.getLogger("shoal")`, looked up once.
pub(crate) fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            Ok(py
                .import("logging")?
                .call_method1("getLogger", ("shoal",))?
                .unbind())
        })
        .map(|l| l.bind(py))
}

/// Logs a callback's exception, with its traceback, to the `shoal` logger.
pub(crate) fn log_exception(py: Python<'_>, what: &str, e: PyErr) {
    let result = logger(py).and_then(|l| {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("exc_info", e.into_value(py))?;
        l.call_method("error", ("exception in %s", what), Some(&kwargs))
    });
    if let Err(inner) = result {
        // Logging itself failed (a broken handler): fall back to stderr.
        inner.print(py);
    }
}

/// Forwards `log` records to Python logging. A record is handed to one `shoal-log` thread,
/// which takes the interpreter to log it: the thread that made it (a reactor, most often)
/// never waits for the interpreter, which a callback may hold for a long time (the reactor
/// must still close that callback's connection at its `handler_timeout`). A burst beyond
/// the queue is dropped, and counted in the next record that gets through.
struct Bridge;

/// Records waiting for the `shoal-log` thread.
const QUEUE: usize = 1024;

struct Queue {
    tx: std::sync::mpsc::SyncSender<(i32, String)>,
    dropped: std::sync::atomic::AtomicU64,
    /// Records queued, and records the thread has logged: `flush` waits for these to meet.
    sent: std::sync::atomic::AtomicU64,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

static QUEUE_TX: std::sync::OnceLock<Option<Queue>> = std::sync::OnceLock::new();

fn queue() -> Option<&'static Queue> {
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(i32, String)>(QUEUE);
            let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let logged = done.clone();
            std::thread::Builder::new()
                .name("shoal-log".into())
                .spawn(move || {
                    while let Ok((level, msg)) = rx.recv() {
                        Python::attach(|py| {
                            if let Ok(l) = logger(py) {
                                let _ = l.call_method1("log", (level, msg));
                            }
                        });
                        logged.fetch_add(1, std::sync::atomic::Ordering::Release);
                    }
                })
                .ok()
                .map(|_| Queue {
                    tx,
                    dropped: std::sync::atomic::AtomicU64::new(0),
                    sent: std::sync::atomic::AtomicU64::new(0),
                    done,
                })
        })
        .as_ref()
}

impl log::Log for Bridge {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug | log::Level::Trace => 10,
        };
        let Some(q) = queue() else {
            return;
        };
        let dropped = q.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        let msg = if dropped == 0 {
            format!("{} ({})", record.args(), record.target())
        } else {
            format!(
                "{} ({}; {dropped} earlier records dropped)",
                record.args(),
                record.target()
            )
        };
        // Counted before it can be logged, so `flush` never sees more done than sent.
        q.sent.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if q.tx.try_send((level, msg)).is_err() {
            q.sent.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            q.dropped
                .fetch_add(dropped + 1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Waits, with the interpreter released, until the records queued so far are logged, for at
/// most `limit` (at exit, so the last records of the engine are not lost).
pub(crate) fn flush(py: Python<'_>, limit: std::time::Duration) {
    let Some(q) = QUEUE_TX.get().and_then(Option::as_ref) else {
        return;
    };
    let target = q.sent.load(std::sync::atomic::Ordering::Acquire);
    let deadline = std::time::Instant::now() + limit;
    while q.done.load(std::sync::atomic::Ordering::Acquire) < target
        && std::time::Instant::now() < deadline
    {
        py.detach(|| std::thread::sleep(std::time::Duration::from_millis(1)));
    }
}

/// Installs the bridge (once per process; if another logger is installed already, records
/// go there). Warnings and errors are forwarded; Python's logging configuration filters them.
pub(crate) fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}
