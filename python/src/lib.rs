//! `shoal._shoal`: the native module under the `shoal` Python package. Servers run on shoal's
//! own threads; the reactors never hold the interpreter unless `inline=True`, and workers take
//! it once per batch of callbacks.

#![allow(
    missing_debug_implementations,
    reason = "Python classes show themselves through __repr__"
)]

mod conn;
mod errors;
mod http;
mod logging;
mod options;
mod server;

use pyo3::prelude::*;

/// A pointer moved into `Python::detach`, which runs its closure synchronously on the calling
/// thread.
struct OnThisThread<T>(*mut T);

// SAFETY: `Python::detach` demands `Send` only to keep interpreter tokens out of the detached
// closure; the pointer is dereferenced by that closure on the same thread, during the call,
// and points to a stack slot that outlives it. No Python object travels through it.
unsafe impl<T> Send for OnThisThread<T> {}

/// shoal threads (reactors and workers) alive, each of which may still take the GIL. The
/// exit hook waits for none to be left: before Python 3.14 a thread that takes the GIL
/// while the interpreter finalizes is ended by `pthread_exit`, whose forced unwind through
/// Rust frames aborts the process.
pub(crate) static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a thread in [`THREADS`] until dropped, after its last touch of the interpreter.
struct Counted;

impl Counted {
    fn new() -> Self {
        THREADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        THREADS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// In a child just forked: only the forking thread exists, so no shoal thread is alive.
#[pyfunction]
fn _forked_child() {
    THREADS.store(0, std::sync::atomic::Ordering::SeqCst);
}

/// Runs a shoal thread's whole life (a reactor or a worker) registered with the interpreter
/// but without holding the GIL: the thread state is created once here, so each callback's
/// `Python::attach` is only a GIL acquisition, not a thread-state creation and teardown.
/// During interpreter shutdown the thread runs unregistered (its callbacks then fail their
/// connections).
pub(crate) fn thread_scope(run: &mut dyn FnMut()) {
    let _counted = Counted::new();
    let mut pending: Option<&mut dyn FnMut()> = Some(run);
    let slot = OnThisThread(&raw mut pending);
    let _ = Python::try_attach(|py| {
        py.detach(move || {
            let slot = slot;
            // SAFETY: see `OnThisThread`: `pending` lives on this thread's stack for the
            // whole `try_attach` call, and nothing else touches it meanwhile.
            if let Some(run) = unsafe { (*slot.0).take() } {
                run();
            }
        })
    });
    if let Some(run) = pending.take() {
        run();
    }
}

#[pymodule]
fn _shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<conn::Connection>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<http::HttpServer>()?;
    m.add_class::<http::Request>()?;
    m.add_class::<http::Headers>()?;
    m.add_class::<http::Response>()?;
    m.add_class::<http::Responder>()?;
    m.add_class::<http::Stream>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(server::_shutdown_all, m)?)?;
    // Servers still running at exit are stopped and joined before the interpreter goes away.
    py.import("atexit")?
        .call_method1("register", (m.getattr("_shutdown_all")?,))?;
    // A child forked from a process with servers has none of their threads.
    m.add_function(wrap_pyfunction!(_forked_child, m)?)?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", m.getattr("_forked_child")?)?;
    py.import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    logging::install();
    Ok(())
}
