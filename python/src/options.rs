//! Keyword options of `Server` and `HttpServer`, checked by name and type: an unknown name
//! is a `TypeError` (as for any Python function), a bad value a `ValueError`, and the engine's
//! own validation a `ConfigError`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use shoal_core::Config;
use shoal_core::http::HttpConfig;

use crate::errors::value_error;

/// Options every server takes, besides the engine's.
pub(crate) struct Common {
    pub(crate) gil_batch: usize,
}

pub(crate) const ENGINE_OPTIONS: &[&str] = &[
    "host",
    "port",
    "threads",
    "workers",
    "queue",
    "inline",
    "gil_batch",
    "reuse_port",
    "backlog",
    "nodelay",
    "keepalive",
    "recv_buffer_size",
    "send_buffer_size",
    "read_buffer_size",
    "max_read_buffer",
    "write_high_watermark",
    "write_low_watermark",
    "max_write_buffer",
    "idle_timeout",
    "read_timeout",
    "write_timeout",
    "write_min_rate",
    "connect_timeout",
    "max_connections",
    "shutdown_grace",
    "linger_timeout",
    "max_pending_input",
    "handler_timeout",
    "accept_backoff",
    "events_capacity",
    "read_budget",
    "pool_buffer_size",
    "pool_max_free",
];

pub(crate) const HTTP_OPTIONS: &[&str] = &[
    "max_header_bytes",
    "max_headers",
    "max_target_len",
    "max_body_size",
    "max_chunk_line",
    "max_pipelined",
    "max_requests_per_connection",
    "header_read_timeout",
    "body_read_timeout",
    "body_min_rate",
    "keepalive_timeout",
    "response_timeout",
];

/// Reads options out of a kwargs dict.
pub(crate) struct Options<'py> {
    dict: Option<Bound<'py, PyDict>>,
}

impl<'py> Options<'py> {
    /// Checks that every key is a known option.
    pub(crate) fn new(
        kwargs: Option<&Bound<'py, PyDict>>,
        known: &[&[&str]],
        class: &str,
    ) -> PyResult<Self> {
        if let Some(d) = kwargs {
            for key in d.keys() {
                let k: String = key.extract()?;
                if !known.iter().any(|set| set.contains(&k.as_str())) {
                    return Err(PyTypeError::new_err(format!(
                        "{class}() got an unexpected keyword argument '{k}'"
                    )));
                }
            }
        }
        Ok(Options {
            dict: kwargs.cloned(),
        })
    }

    fn raw(&self, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        match &self.dict {
            Some(d) => d.get_item(name),
            None => Ok(None),
        }
    }

    /// A value that must not be None when given.
    fn get<T: for<'a> FromPyObject<'a, 'py>>(&self, name: &str) -> PyResult<Option<T>> {
        match self.raw(name)? {
            None => Ok(None),
            Some(v) if v.is_none() => Err(value_error(format!("{name} must not be None"))),
            // A bool is an int to Python, never a count or a size here.
            Some(v) if v.is_instance_of::<pyo3::types::PyBool>() && int_option::<T>() => Err(
                PyTypeError::new_err(format!("{name}: expected an int, got bool")),
            ),
            Some(v) => v
                .extract::<T>()
                .map(Some)
                .map_err(|_| option_error::<T>(name, &v)),
        }
    }

    fn size(&self, name: &str) -> PyResult<Option<usize>> {
        self.get::<usize>(name)
    }

    /// Seconds as a float or int; `None` in the dict means "off" (the outer `None`: absent).
    fn seconds_or_off(&self, name: &str) -> PyResult<Option<Option<Duration>>> {
        match self.raw(name)? {
            None => Ok(None),
            Some(v) if v.is_none() => Ok(Some(None)),
            Some(v) => Ok(Some(Some(seconds(name, &v)?))),
        }
    }

    fn seconds(&self, name: &str) -> PyResult<Option<Duration>> {
        match self.raw(name)? {
            None => Ok(None),
            Some(v) if v.is_none() => Err(value_error(format!(
                "{name} cannot be turned off; give a number of seconds"
            ))),
            Some(v) => Ok(Some(seconds(name, &v)?)),
        }
    }

    /// The engine configuration and the binding's own options.
    pub(crate) fn engine(&self) -> PyResult<(Config, Common)> {
        let host: String = self.get("host")?.unwrap_or_else(|| "127.0.0.1".to_owned());
        let port: u16 = self.get("port")?.unwrap_or(0);
        let addr = resolve(self.dict.as_ref().map(|d| d.py()), &host, port)?;
        let mut c = Config::new(addr);
        if let Some(v) = self.size("threads")? {
            c.threads = v;
        }
        let inline: bool = self.get("inline")?.unwrap_or(false);
        let workers = self.size("workers")?;
        if inline && workers.is_some() {
            return Err(value_error(
                "inline=True runs callbacks on the reactor threads: it takes no workers",
            ));
        }
        if !inline {
            let queue = self.size("queue")?.unwrap_or(1024);
            c = c.workers(workers.unwrap_or(4), queue);
        }
        let gil_batch = self.size("gil_batch")?.unwrap_or(16);
        if gil_batch == 0 {
            return Err(value_error("gil_batch must be at least 1"));
        }
        if let Some(v) = self.get::<bool>("reuse_port")? {
            c.reuse_port = v;
        }
        if let Some(v) = self.get::<i32>("backlog")? {
            c.backlog = v;
        }
        if let Some(v) = self.get::<bool>("nodelay")? {
            c.nodelay = v;
        }
        if let Some(v) = self.seconds_or_off("keepalive")? {
            c.keepalive = v;
        }
        if let Some(v) = self.size("recv_buffer_size")? {
            c.recv_buffer_size = Some(v);
        }
        if let Some(v) = self.size("send_buffer_size")? {
            c.send_buffer_size = Some(v);
        }
        if let Some(v) = self.size("read_buffer_size")? {
            c.read_buffer_size = v;
        }
        if let Some(v) = self.size("max_read_buffer")? {
            c.max_read_buffer = v;
        }
        if let Some(v) = self.size("write_high_watermark")? {
            c.write_high_watermark = v;
        }
        if let Some(v) = self.size("write_low_watermark")? {
            c.write_low_watermark = v;
        }
        if let Some(v) = self.size("max_write_buffer")? {
            c.max_write_buffer = v;
        }
        if let Some(v) = self.seconds_or_off("idle_timeout")? {
            c.idle_timeout = v;
        }
        if let Some(v) = self.seconds_or_off("read_timeout")? {
            c.read_timeout = v;
        }
        if let Some(v) = self.seconds_or_off("write_timeout")? {
            c.write_timeout = v;
        }
        match self.raw("write_min_rate")? {
            None => {}
            Some(v) if v.is_none() => c.write_min_rate = None,
            Some(_) => c.write_min_rate = self.get("write_min_rate")?,
        }
        if let Some(v) = self.seconds("connect_timeout")? {
            c.connect_timeout = v;
        }
        if let Some(v) = self.size("max_connections")? {
            c.max_connections = v;
        }
        if let Some(v) = self.seconds("shutdown_grace")? {
            c.shutdown_grace = v;
        }
        if let Some(v) = self.seconds("linger_timeout")? {
            c.linger_timeout = v;
        }
        if let Some(v) = self.seconds("accept_backoff")? {
            c.accept_backoff = v;
        }
        if let Some(v) = self.size("events_capacity")? {
            c.events_capacity = v;
        }
        if let Some(v) = self.size("read_budget")? {
            c.read_budget = v;
        }
        if let Some(v) = self.size("pool_buffer_size")? {
            c.pool_buffer_size = v;
        }
        if let Some(v) = self.size("pool_max_free")? {
            c.pool_max_free = v;
        }
        if let Some(v) = self.size("max_pending_input")? {
            c.max_pending_input = v;
        }
        if let Some(v) = self.seconds_or_off("handler_timeout")? {
            if v.is_some() && inline {
                return Err(value_error(
                    "handler_timeout applies to callbacks on workers, not inline=True",
                ));
            }
            c.handler_timeout = v;
        }
        Ok((c, Common { gil_batch }))
    }

    /// The HTTP configuration around `engine`.
    pub(crate) fn http(&self, engine: Config) -> PyResult<HttpConfig> {
        let mut h = HttpConfig::new(engine);
        // An explicit `write_timeout=None` turns off the HTTP default too.
        if let Some(v) = self.seconds_or_off("write_timeout")? {
            h.engine.write_timeout = v;
        }
        if let Some(v) = self.size("max_header_bytes")? {
            h.max_header_bytes = v;
        }
        if let Some(v) = self.size("max_headers")? {
            h.max_headers = v;
        }
        if let Some(v) = self.size("max_target_len")? {
            h.max_target_len = v;
        }
        if let Some(v) = self.size("max_body_size")? {
            h.max_body_size = v;
        }
        if let Some(v) = self.size("max_chunk_line")? {
            h.max_chunk_line = v;
        }
        if let Some(v) = self.size("max_pipelined")? {
            h.max_pipelined = v;
        }
        match self.raw("max_requests_per_connection")? {
            None => {}
            Some(v) if v.is_none() => h.max_requests_per_connection = None,
            Some(_) => h.max_requests_per_connection = self.get("max_requests_per_connection")?,
        }
        if let Some(v) = self.seconds("header_read_timeout")? {
            h.header_read_timeout = v;
        }
        if let Some(v) = self.seconds("body_read_timeout")? {
            h.body_read_timeout = v;
        }
        match self.raw("body_min_rate")? {
            None => {}
            Some(v) if v.is_none() => h.body_min_rate = None,
            Some(_) => h.body_min_rate = self.get("body_min_rate")?,
        }
        if let Some(v) = self.seconds("keepalive_timeout")? {
            h.keepalive_timeout = v;
        }
        if let Some(v) = self.seconds_or_off("response_timeout")? {
            h.response_timeout = v;
        }
        Ok(h)
    }
}

/// Whether `T` is one of the integer types options are read as.
fn int_option<T>() -> bool {
    matches!(
        std::any::type_name::<T>(),
        "usize" | "u64" | "u32" | "u16" | "i32"
    )
}

/// The error for an option value that does not convert to `T`, in Python's terms: a
/// `ValueError` for an int out of `T`'s range, a `TypeError` for a value of the wrong type.
fn option_error<T>(name: &str, v: &Bound<'_, PyAny>) -> PyErr {
    let rust = std::any::type_name::<T>();
    let range = match rust {
        "usize" | "u64" => Some(format!("0..={}", u64::MAX)),
        "u32" => Some(format!("0..={}", u32::MAX)),
        "u16" => Some(format!("0..={}", u16::MAX)),
        "i32" => Some(format!("{}..={}", i32::MIN, i32::MAX)),
        _ => None,
    };
    let is_int =
        v.is_instance_of::<pyo3::types::PyInt>() && !v.is_instance_of::<pyo3::types::PyBool>();
    if let (Some(range), true) = (&range, is_int) {
        return value_error(format!("{name} must be in {range}, got {v}"));
    }
    let expected = match rust {
        _ if range.is_some() => "an int",
        "bool" => "a bool",
        "alloc::string::String" => "a str",
        _ => "a value of another type",
    };
    let got = v
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string());
    PyTypeError::new_err(format!("{name}: expected {expected}, got {got}"))
}

/// Seconds (int or float, finite, not negative) as a duration.
pub(crate) fn seconds(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected seconds, got bool"
        )));
    }
    let s: f64 = v
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected seconds (int or float)")))?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| value_error(format!("{name} must be a finite number of seconds >= 0")))
}

/// A literal address, or a host name resolved once (the first answer), with the interpreter
/// released meanwhile (a lookup can take seconds; other Python threads go on).
fn resolve(py: Option<Python<'_>>, host: &str, port: u16) -> PyResult<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let lookup = || (host, port).to_socket_addrs().map(|mut found| found.next());
    let found = match py {
        Some(py) => py.detach(lookup),
        None => lookup(),
    };
    found
        .map_err(|e| value_error(format!("cannot resolve host {host:?}: {e}")))?
        .ok_or_else(|| value_error(format!("host {host:?} has no address")))
}
