//! One exception hierarchy (`shoal.ShoalError` and subclasses) and one mapping from engine
//! errors; OS errors keep Python's `OSError` subclasses.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    shoal,
    ShoalError,
    PyException,
    "Base class of the errors shoal raises."
);
create_exception!(
    shoal,
    ConnectionClosed,
    ShoalError,
    "The connection is closed (or the object names a connection that no longer exists)."
);
create_exception!(
    shoal,
    ServerStopped,
    ShoalError,
    "The server is stopped or stopping."
);
create_exception!(
    shoal,
    WriteOverflow,
    ShoalError,
    "The write would exceed max_write_buffer; the connection is being closed."
);
create_exception!(
    shoal,
    InvalidResponse,
    ShoalError,
    "A response could not be sent as asked (a bad header, a response already sent)."
);
/// `shoal.ConfigError`: a `ShoalError` and a `ValueError` (a bad option value is one), made
/// at import with both bases, which `create_exception!` cannot give.
static CONFIG_ERROR: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> =
    pyo3::sync::PyOnceLock::new();

fn config_error_type(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyType>> {
    CONFIG_ERROR
        .get_or_try_init(py, || {
            let ns = pyo3::types::PyDict::new(py);
            ns.set_item("__module__", "shoal")?;
            ns.set_item("__doc__", "A configuration value is out of range.")?;
            let bases = (py.get_type::<ShoalError>(), py.get_type::<PyValueError>());
            Ok(py
                .get_type::<pyo3::types::PyType>()
                .call1(("ConfigError", bases, ns))?
                .cast_into::<pyo3::types::PyType>()?
                .unbind())
        })
        .map(|t| t.bind(py))
}

/// A `shoal.ConfigError` with `msg`.
pub(crate) fn config_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match config_error_type(py) {
        Ok(t) => PyErr::from_type(t.clone(), msg),
        Err(e) => e,
    })
}

/// Converts an engine error to the matching Python exception.
pub(crate) fn err(e: shoal_core::Error) -> PyErr {
    use shoal_core::Error;
    let msg = e.to_string();
    match e {
        Error::Closed => ConnectionClosed::new_err(msg),
        Error::Stopped => ServerStopped::new_err(msg),
        Error::WriteOverflow => WriteOverflow::new_err(msg),
        Error::InvalidResponse(_) => InvalidResponse::new_err(msg),
        Error::InvalidConfig(_) => config_error(msg),
        Error::Io(io) => io.into(),
        Error::AlreadyStarted => ShoalError::new_err("the server is already started"),
        _ => ShoalError::new_err(msg),
    }
}

/// A `ValueError` for a bad argument.
pub(crate) fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ShoalError", py.get_type::<ShoalError>())?;
    m.add("ConnectionClosed", py.get_type::<ConnectionClosed>())?;
    m.add("ServerStopped", py.get_type::<ServerStopped>())?;
    m.add("WriteOverflow", py.get_type::<WriteOverflow>())?;
    m.add("InvalidResponse", py.get_type::<InvalidResponse>())?;
    m.add("ConfigError", config_error_type(py)?)?;
    Ok(())
}
