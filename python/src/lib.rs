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
    logging::install();
    Ok(())
}
