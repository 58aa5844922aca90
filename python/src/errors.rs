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
create_exception!(
    shoal,
    ConfigError,
    ShoalError,
    "A configuration value is out of range."
);

/// Converts an engine error to the matching Python exception.
pub(crate) fn err(e: shoal_core::Error) -> PyErr {
    use shoal_core::Error;
    let msg = e.to_string();
    match e {
        Error::Closed => ConnectionClosed::new_err(msg),
        Error::Stopped => ServerStopped::new_err(msg),
        Error::WriteOverflow => WriteOverflow::new_err(msg),
        Error::InvalidResponse(_) => InvalidResponse::new_err(msg),
        Error::InvalidConfig(_) => ConfigError::new_err(msg),
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
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}
