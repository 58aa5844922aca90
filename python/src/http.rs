//! `shoal.HttpServer`: one Python function answers each request, by returning the response
//! (bytes, str, a dict for JSON, a `(status, body)` or `(status, headers, body)` tuple, a
//! `Response`, or an iterable for a streamed body), or by deferring it to answer later from
//! any thread.

use std::cell::Cell;
use std::sync::Mutex;

use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString, PyTuple};
use shoal_core::http::{
    ChunkedBody, Deferred, HttpHandler, HttpServer as CoreHttpServer, HttpStats, ParseError,
    Request as CoreRequest, Response as CoreResponse, Version,
};

use crate::errors::{err, value_error};
use crate::logging::log_exception;
use crate::options::{ENGINE_OPTIONS, HTTP_OPTIONS, Options};
use crate::server::{Core, Engine, Server, bind_error};

thread_local! {
    /// The response of the request being handled on this thread: (request serial, pointer).
    static LIVE: Cell<(u64, *mut ())> = const { Cell::new((0, std::ptr::null_mut())) };
    static SERIAL: Cell<u64> = const { Cell::new(0) };
}

/// Marks `res` as the live response of request `serial` until dropped (also on unwinding).
struct LiveGuard {
    prev: (u64, *mut ()),
}

impl LiveGuard {
    fn enter(serial: u64, res: &mut CoreResponse<'_, '_>) -> Self {
        let ptr = std::ptr::from_mut(res).cast::<()>();
        LiveGuard {
            prev: LIVE.with(|c| c.replace((serial, ptr))),
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE.with(|c| c.set(self.prev));
    }
}

/// Runs `f` on the live response of request `serial`, if it is being handled on this thread.
fn with_live<R>(serial: u64, f: impl FnOnce(&mut CoreResponse<'_, '_>) -> R) -> Option<R> {
    let (cur, ptr) = LIVE.with(Cell::get);
    if cur != serial || ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` came from the `&mut Response` of the handler call running on this thread
    // (LiveGuard), which does not touch it while the Python handler runs; the guard clears
    // the pointer before that call returns, and serials are never reused, so this is the
    // same, live response.
    let res = unsafe { &mut *ptr.cast::<CoreResponse<'_, '_>>() };
    Some(f(res))
}

/// Header fields of a request: a read-only, case-insensitive mapping from name to value
/// (`str`, decoded as Latin-1). Repeated fields: `get`/`[]` give the first, `getall` all;
/// `keys`, `items`, iteration and `len` count every field, as received.
#[pyclass(module = "shoal._shoal", name = "Headers", frozen, mapping)]
pub struct Headers {
    fields: Vec<(String, String)>,
}

impl Headers {
    fn find(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[pymethods]
impl Headers {
    /// The first value of `name`, or `default`.
    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> Py<PyAny> {
        match self.find(name) {
            Some(v) => PyString::new(py, v).into_any().unbind(),
            None => default.unwrap_or_else(|| py.None()),
        }
    }

    /// Every value of `name`, in the order received.
    fn getall(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `(name, value)` pairs, in the order received.
    fn items(&self) -> Vec<(&str, &str)> {
        self.fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// The names, in the order received.
    fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The values, in the order received.
    fn values(&self) -> Vec<&str> {
        self.fields.iter().map(|(_, v)| v.as_str()).collect()
    }

    fn __getitem__(&self, name: &str) -> PyResult<&str> {
        self.find(name)
            .ok_or_else(|| PyKeyError::new_err(name.to_owned()))
    }

    fn __contains__(&self, name: &Bound<'_, PyAny>) -> bool {
        name.extract::<&str>().is_ok_and(|n| self.find(n).is_some())
    }

    fn __len__(&self) -> usize {
        self.fields.len()
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyIterator>> {
        let names = PyList::new(py, self.fields.iter().map(|(n, _)| n.as_str()))?;
        Ok(PyIterator::from_object(&names)?.unbind())
    }

    fn __repr__(&self) -> String {
        let inner: Vec<String> = self
            .fields
            .iter()
            .map(|(n, v)| format!("{n:?}: {v:?}"))
            .collect();
        format!("Headers({{{}}})", inner.join(", "))
    }
}

/// One HTTP request. Everything is copied out of the connection, so it stays valid after the
/// handler returns; :meth:`defer` works only during the handler call.
#[pyclass(module = "shoal._shoal", name = "Request", frozen)]
pub struct Request {
    serial: u64,
    method: String,
    target: String,
    /// Where the path and the query lie in `target` (as the core found them: an
    /// absolute-form target's path comes after its authority); `None`: the path is `/` (an
    /// absolute-form target without one) or there is no query.
    path: Option<std::ops::Range<usize>>,
    query: Option<std::ops::Range<usize>>,
    version: Version,
    headers: Py<Headers>,
    body: Py<PyBytes>,
    conn_id: u64,
    peer: PyOnceLock<Option<(String, u16)>>,
}

#[pymethods]
impl Request {
    /// The method, such as ``"GET"``.
    #[getter]
    fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent: path and query.
    #[getter]
    fn target(&self) -> &str {
        &self.target
    }

    /// The path: the target up to ``?`` (for an absolute-form target, without its scheme and
    /// authority).
    #[getter]
    fn path(&self) -> &str {
        self.path.clone().map_or("/", |r| &self.target[r])
    }

    /// The query, after ``?`` (None without one).
    #[getter]
    fn query(&self) -> Option<&str> {
        self.query.clone().map(|r| &self.target[r])
    }

    /// ``"HTTP/1.1"`` or ``"HTTP/1.0"``.
    #[getter]
    fn version(&self) -> &'static str {
        match self.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    /// The header fields.
    #[getter]
    fn headers(&self, py: Python<'_>) -> Py<Headers> {
        self.headers.clone_ref(py)
    }

    /// The body (de-chunked), as bytes.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The id of the connection the request came on.
    #[getter]
    fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The client's ``(host, port)``: looked up on first use during the handler call, and
    /// kept; None if first asked after the handler returned.
    #[getter]
    fn peer(&self, py: Python<'_>) -> Option<(String, u16)> {
        self.peer
            .get_or_init(py, || {
                with_live(self.serial, |res| {
                    res.conn()
                        .peer_addr()
                        .ok()
                        .map(|a| (a.ip().to_string(), a.port()))
                })
                .flatten()
            })
            .clone()
    }

    /// Takes the response away to answer it later, from any thread, through the returned
    /// :class:`Responder`; the handler then returns None. Requests pipelined behind this one
    /// wait. Only during the handler call.
    fn defer(&self) -> PyResult<Responder> {
        match with_live(self.serial, |res| res.defer()) {
            Some(Ok(d)) => Ok(Responder {
                conn_id: d.id().as_u64(),
                inner: Mutex::new(Some(d)),
            }),
            Some(Err(e)) => Err(err(e)),
            None => Err(PyRuntimeError::new_err(
                "defer() must be called during the handler call, on its thread",
            )),
        }
    }

    fn __repr__(&self) -> String {
        format!("<shoal.Request {} {}>", self.method, self.target)
    }
}

/// A response a handler returns: status, headers and body. ``body`` is bytes, str (sent as
/// UTF-8), a dict or list (sent as JSON), or an iterable of bytes/str chunks (sent with
/// chunked encoding; returned from the handler, the chunks are gathered while it runs and
/// leave once it returns, at most ``max_write_buffer`` in all: for a large or endless body,
/// :meth:`Request.defer` and :meth:`Responder.stream` from another thread, which waits for
/// the client between pieces). An iterable is
/// not run for a response without a body (HEAD, 204, 304). ``content_type`` sets the
/// Content-Type header (otherwise one suited to the body is added unless ``headers`` has
/// one).
#[pyclass(module = "shoal._shoal", name = "Response", frozen)]
pub struct Response {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    headers: Py<PyAny>,
    #[pyo3(get)]
    body: Py<PyAny>,
    #[pyo3(get)]
    content_type: Option<String>,
}

#[pymethods]
impl Response {
    #[new]
    #[pyo3(signature = (body=None, status=200, headers=None, content_type=None))]
    fn new(
        py: Python<'_>,
        body: Option<Py<PyAny>>,
        status: i64,
        headers: Option<Py<PyAny>>,
        content_type: Option<String>,
    ) -> PyResult<Self> {
        let status = check_status(status)?;
        Ok(Response {
            status,
            headers: headers.unwrap_or_else(|| py.None()),
            body: body.unwrap_or_else(|| PyBytes::new(py, b"").into_any().unbind()),
            content_type,
        })
    }

    fn __repr__(&self) -> String {
        format!("<shoal.Response {}>", self.status)
    }
}

/// A status given as an argument: a three-digit code (`ValueError` otherwise, however large).
fn check_status(status: i64) -> PyResult<u16> {
    match u16::try_from(status) {
        Ok(s) if (100..=999).contains(&s) => Ok(s),
        _ => Err(value_error(format!(
            "status must be a three-digit code, got {status}"
        ))),
    }
}

/// The status at the head of a tuple a handler returned: an int, which is checked; anything
/// else is a `TypeError` that says what the tuple must be (a Flask-style `(body, status)`
/// lands here).
fn tuple_status(item: &Bound<'_, PyAny>) -> PyResult<u16> {
    if item.is_instance_of::<pyo3::types::PyInt>() && !item.is_instance_of::<pyo3::types::PyBool>()
    {
        return match item.extract::<i64>() {
            Ok(n) => check_status(n),
            Err(_) => Err(value_error(format!(
                "status must be a three-digit code, got {item}"
            ))),
        };
    }
    let kind = item.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "a handler's tuple is (status, body) or (status, headers, body), the status first; \
         its first item is a {kind}, not an int"
    )))
}

/// Header fields to send, owned.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn field_bytes(what: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = v.extract::<PyBackedBytes>() {
        return Ok(b.to_vec());
    }
    if v.extract::<i64>().is_ok() {
        return Ok(v.str()?.to_str()?.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "header {what} must be str or bytes"
    )))
}

/// `None`, a mapping (dict, Headers) or an iterable of `(name, value)` pairs.
fn fields(headers: Option<&Bound<'_, PyAny>>) -> PyResult<Fields> {
    let Some(h) = headers else {
        return Ok(Vec::new());
    };
    if h.is_none() {
        return Ok(Vec::new());
    }
    let pairs = if let Ok(d) = h.cast::<PyDict>() {
        d.items().into_any()
    } else if h.hasattr("items")? {
        h.call_method0("items")?
    } else {
        h.clone()
    };
    let mut out = Vec::new();
    for item in pairs.try_iter()? {
        let item = item?;
        let (n, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
            PyTypeError::new_err("headers must be a mapping or an iterable of (name, value)")
        })?;
        out.push((field_bytes("name", &n)?, field_bytes("value", &v)?));
    }
    Ok(out)
}

fn has_field(fields: &Fields, name: &str) -> bool {
    fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// A body as bytes, with the Content-Type it suggests; None for something to stream.
enum Body {
    Bytes(Vec<u8>, Option<&'static str>),
    Borrowed(Py<PyBytes>, Option<&'static str>),
    Stream(Py<PyAny>),
}

fn body(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Body> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Body::Borrowed(
            b.clone().unbind(),
            Some("application/octet-stream"),
        ));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Body::Bytes(
            s.to_str()?.as_bytes().to_vec(),
            Some("text/plain; charset=utf-8"),
        ));
    }
    if v.is_none() {
        return Ok(Body::Bytes(Vec::new(), None));
    }
    if v.is_instance_of::<PyDict>() || v.is_instance_of::<PyList>() {
        let json = py.import("json")?.call_method1("dumps", (v,))?;
        let s = json.cast::<PyString>()?.to_str()?.as_bytes().to_vec();
        return Ok(Body::Bytes(s, Some("application/json")));
    }
    if v.is_instance_of::<pyo3::types::PyByteArray>()
        || v.is_instance_of::<pyo3::types::PyMemoryView>()
    {
        let b = py.get_type::<PyBytes>().call1((v,))?;
        return Ok(Body::Borrowed(
            b.cast_into::<PyBytes>()?.unbind(),
            Some("application/octet-stream"),
        ));
    }
    if v.try_iter().is_ok() {
        return Ok(Body::Stream(v.clone().unbind()));
    }
    Err(PyTypeError::new_err(format!(
        "cannot send a {} as a body: use bytes, str, dict/list (JSON) or an iterable of chunks",
        v.get_type().name()?
    )))
}

fn chunk_bytes(v: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<()>) -> PyResult<()> {
    if let Ok(s) = v.cast::<PyString>() {
        return f(s.to_str()?.as_bytes());
    }
    crate::conn::with_bytes(v, f)
}

/// Where a response goes: the live one in the handler, or a deferred one.
trait Sink {
    fn send(
        &mut self,
        status: u16,
        fields: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> shoal_core::Result<()>;
    fn start(&mut self, status: u16, fields: &[(&[u8], &[u8])]) -> shoal_core::Result<()>;
    fn chunk(&mut self, data: &[u8]) -> shoal_core::Result<()>;
    fn end(&mut self) -> shoal_core::Result<()>;
    /// Whether the started stream carries a body (not for HEAD, 204, 304).
    fn streams_body(&self) -> bool;
    /// For a stream sent from another thread: the wait for room in its connection.
    fn waiter(&self) -> Option<shoal_core::http::BodyWaiter> {
        None
    }
}

impl Sink for CoreResponse<'_, '_> {
    fn send(
        &mut self,
        status: u16,
        fields: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> shoal_core::Result<()> {
        CoreResponse::send(self, status, fields, body)
    }
    fn start(&mut self, status: u16, fields: &[(&[u8], &[u8])]) -> shoal_core::Result<()> {
        self.start_chunked(status, fields)
    }
    fn chunk(&mut self, data: &[u8]) -> shoal_core::Result<()> {
        self.write_chunk(data)
    }
    fn end(&mut self) -> shoal_core::Result<()> {
        self.finish()
    }
    fn streams_body(&self) -> bool {
        CoreResponse::streams_body(self)
    }
}

/// A deferred response: the `Deferred` until started, then its `ChunkedBody`.
enum DeferredSink {
    Fresh(Deferred),
    Streaming(ChunkedBody),
    Done,
}

impl Sink for DeferredSink {
    fn send(
        &mut self,
        status: u16,
        fields: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> shoal_core::Result<()> {
        match self {
            DeferredSink::Fresh(d) => {
                let r = d.send(status, fields, body);
                // A refused response (bad header) wrote nothing: the responder stays usable.
                if !matches!(r, Err(shoal_core::Error::InvalidResponse(_))) {
                    *self = DeferredSink::Done;
                }
                r
            }
            _ => Err(shoal_core::Error::InvalidResponse(
                "the response was already started",
            )),
        }
    }
    fn start(&mut self, status: u16, fields: &[(&[u8], &[u8])]) -> shoal_core::Result<()> {
        match std::mem::replace(self, DeferredSink::Done) {
            DeferredSink::Fresh(mut d) => match d.start_chunked(status, fields) {
                Ok(body) => {
                    *self = DeferredSink::Streaming(body);
                    Ok(())
                }
                // A refused head (bad header) wrote nothing: the responder stays usable.
                Err(e @ shoal_core::Error::InvalidResponse(_)) => {
                    *self = DeferredSink::Fresh(d);
                    Err(e)
                }
                Err(e) => Err(e),
            },
            other => {
                *self = other;
                Err(shoal_core::Error::InvalidResponse(
                    "the response was already started",
                ))
            }
        }
    }
    fn waiter(&self) -> Option<shoal_core::http::BodyWaiter> {
        match self {
            DeferredSink::Streaming(b) => Some(b.waiter()),
            _ => None,
        }
    }
    fn chunk(&mut self, data: &[u8]) -> shoal_core::Result<()> {
        match self {
            DeferredSink::Streaming(b) => b.write(data),
            _ => Err(shoal_core::Error::InvalidResponse(
                "no streamed response was started",
            )),
        }
    }
    fn end(&mut self) -> shoal_core::Result<()> {
        match std::mem::replace(self, DeferredSink::Done) {
            DeferredSink::Streaming(b) => b.finish(),
            other => {
                *self = other;
                Err(shoal_core::Error::InvalidResponse(
                    "no streamed response was started",
                ))
            }
        }
    }
    fn streams_body(&self) -> bool {
        matches!(self, DeferredSink::Streaming(b) if b.streams_body())
    }
}

/// Sends `status`, `headers` and `body` (a body object as returned by a handler) to `sink`.
fn send_parts(
    py: Python<'_>,
    sink: &mut dyn Sink,
    status: u16,
    headers: Option<&Bound<'_, PyAny>>,
    content_type: Option<&str>,
    body_obj: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let mut fields = fields(headers)?;
    let body = body(py, body_obj)?;
    let suggested = match &body {
        Body::Bytes(_, ct) | Body::Borrowed(_, ct) => *ct,
        Body::Stream(_) => None,
    };
    if !has_field(&fields, "content-type")
        && let Some(ct) = content_type.or(suggested)
    {
        fields.push((b"Content-Type".to_vec(), ct.as_bytes().to_vec()));
    }
    let refs: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    match body {
        Body::Bytes(b, _) => sink.send(status, &refs, &b).map_err(err),
        Body::Borrowed(b, _) => sink.send(status, &refs, b.as_bytes(py)).map_err(err),
        Body::Stream(it) => {
            sink.start(status, &refs).map_err(err)?;
            if !sink.streams_body() {
                // HEAD, 204, 304: the head is the whole answer; the iterable is not run (an
                // endless one would never end).
                return sink.end().map_err(err);
            }
            let waiter = sink.waiter();
            for chunk in it.bind(py).try_iter()? {
                let chunk = chunk?;
                if let Some(w) = &waiter {
                    wait_for_room(py, w)?;
                }
                chunk_bytes(&chunk, |data| {
                    if data.is_empty() {
                        Ok(())
                    } else {
                        sink.chunk(data).map_err(err)
                    }
                })?;
            }
            sink.end().map_err(err)
        }
    }
}

/// Sends whatever a handler returned.
fn send_value(py: Python<'_>, sink: &mut dyn Sink, v: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(r) = v.cast::<Response>() {
        let r = r.get();
        let headers = r.headers.bind(py);
        return send_parts(
            py,
            sink,
            r.status,
            Some(headers),
            r.content_type.as_deref(),
            r.body.bind(py),
        );
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return match t.len() {
            2 => send_parts(
                py,
                sink,
                tuple_status(&t.get_item(0)?)?,
                None,
                None,
                &t.get_item(1)?,
            ),
            3 => send_parts(
                py,
                sink,
                tuple_status(&t.get_item(0)?)?,
                Some(&t.get_item(1)?),
                None,
                &t.get_item(2)?,
            ),
            n => Err(PyTypeError::new_err(format!(
                "a handler may return (status, body) or (status, headers, body), not a {n}-tuple"
            ))),
        };
    }
    send_parts(py, sink, 200, None, None, v)
}

/// A response taken with :meth:`Request.defer`, answered from any thread: once with
/// :meth:`send`, or streamed with :meth:`stream`. Dropping it unanswered sends a 500. After
/// the connection closed, answering raises ``ConnectionClosed``.
#[pyclass(module = "shoal._shoal", name = "Responder", frozen)]
pub struct Responder {
    conn_id: u64,
    inner: Mutex<Option<Deferred>>,
}

impl Responder {
    fn take(&self) -> PyResult<Deferred> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| {
                crate::errors::InvalidResponse::new_err("this response was already answered")
            })
    }
}

#[pymethods]
impl Responder {
    /// Sends the response (body as for a handler's return value; a dict is sent as JSON).
    #[pyo3(signature = (body=None, status=200, headers=None, content_type=None))]
    fn send(
        &self,
        py: Python<'_>,
        body: Option<&Bound<'_, PyAny>>,
        status: i64,
        headers: Option<&Bound<'_, PyAny>>,
        content_type: Option<&str>,
    ) -> PyResult<()> {
        let status = check_status(status)?;
        let mut sink = DeferredSink::Fresh(self.take()?);
        let empty = PyBytes::new(py, b"");
        let body = body.unwrap_or(empty.as_any());
        let r = send_parts(py, &mut sink, status, headers, content_type, body);
        if r.is_err()
            && let DeferredSink::Fresh(d) = sink
        {
            // Nothing was sent (a bad header, a bad body): the caller may try again.
            *self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(d);
        }
        r
    }

    /// Starts a streamed (chunked) response; returns the :class:`Stream` to write its body.
    #[pyo3(signature = (status=200, headers=None, content_type=None))]
    fn stream(
        &self,
        status: i64,
        headers: Option<&Bound<'_, PyAny>>,
        content_type: Option<&str>,
    ) -> PyResult<Stream> {
        let status = check_status(status)?;
        let mut fields = fields(headers)?;
        if let Some(ct) = content_type
            && !has_field(&fields, "content-type")
        {
            fields.push((b"Content-Type".to_vec(), ct.as_bytes().to_vec()));
        }
        let refs: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let mut d = self.take()?;
        match d.start_chunked(status, &refs) {
            Ok(body) => Ok(Stream {
                inner: Mutex::new(Some(body)),
            }),
            Err(e) => {
                if matches!(e, shoal_core::Error::InvalidResponse(_)) {
                    *self
                        .inner
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(d);
                }
                Err(err(e))
            }
        }
    }

    /// The id of the connection the response goes to.
    #[getter]
    fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Whether it is used up: answered, streaming, or failed for good (the connection
    /// closed). A send refused for a bad header or body leaves it usable.
    #[getter]
    fn done(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none()
    }
}

/// The body of a streamed deferred response: :meth:`write` pieces, then :meth:`finish`.
/// As a context manager it finishes on a clean exit and cuts the connection on an exception
/// (a truncated body never looks complete). Dropped unfinished, the connection is cut too.
#[pyclass(module = "shoal._shoal", name = "Stream", frozen)]
pub struct Stream {
    inner: Mutex<Option<ChunkedBody>>,
}

/// Waits until the stream's connection has room (see `Stream.write`), in slices, checking
/// for signals between them; returns at once on one of the server's own threads.
fn wait_for_room(py: Python<'_>, w: &shoal_core::http::BodyWaiter) -> PyResult<()> {
    // A server thread never waits (its reactor could not flush meanwhile).
    match crate::conn::wait_for_room(py, None, |t| w.wait_writable(t))? {
        Ok(_) | Err(shoal_core::Error::WrongThread) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

impl Stream {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ChunkedBody>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl Stream {
    /// Sends one piece of the body (bytes-like or str). From a thread of the application's
    /// own, it first waits, with the interpreter released, while more than the low watermark
    /// of output is queued, so a large body stays within `max_write_buffer` however slowly the
    /// client reads. Inside a callback it does not wait.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        // The wait holds neither the interpreter nor the lock (a writer on another thread
        // may need both to get on).
        let waiter = self.lock().as_ref().map(ChunkedBody::waiter);
        if let Some(w) = waiter {
            wait_for_room(py, &w)?;
        }
        // The lock is taken only once the bytes are at hand: turning `data` into bytes may run
        // Python code (`__bytes__`) that lets another thread run, and that thread may block on
        // this lock while holding the interpreter. No Python code runs while it is held.
        chunk_bytes(data, |d| {
            let mut guard = self.lock();
            let body = guard
                .as_mut()
                .ok_or_else(|| crate::errors::InvalidResponse::new_err("the stream is finished"))?;
            body.write(d).map_err(err)
        })
    }

    /// Ends the body.
    fn finish(&self) -> PyResult<()> {
        match self.lock().take() {
            Some(b) => b.finish().map_err(err),
            None => Err(crate::errors::InvalidResponse::new_err(
                "the stream is finished",
            )),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let body = self.lock().take();
        match body {
            Some(b) if exc_type.is_none_or(|t| t.is_none()) => b.finish().map_err(err)?,
            // Dropping it unfinished cuts the connection.
            Some(b) => drop(b),
            None => {}
        }
        Ok(false)
    }
}

/// The HTTP handler calling a Python function.
pub(crate) struct PyHttp {
    /// Shared with the server object's `Refs`, for the garbage collector.
    handler: std::sync::Arc<Py<PyAny>>,
    batch: usize,
}

impl HttpHandler for PyHttp {
    fn handle(&self, req: &CoreRequest<'_>, res: &mut CoreResponse<'_, '_>) {
        let attached = Python::try_attach(|py| {
            let serial = SERIAL.with(|s| {
                let v = s.get() + 1;
                s.set(v);
                // Thread-unique serials: the thread's id in the top bits.
                (thread_key() << 40) | (v & ((1 << 40) - 1))
            });
            let request = match make_request(py, serial, req, res.conn().id().as_u64()) {
                Ok(r) => r,
                Err(e) => {
                    log_exception(py, "the HTTP handler", e);
                    res.fail();
                    return;
                }
            };
            let guard = LiveGuard::enter(serial, res);
            let r = self.handler.bind(py).call1((request,));
            drop(guard);
            let r = r.and_then(|v| {
                if v.is_none() {
                    if res.is_started() {
                        Ok(())
                    } else {
                        Err(PyTypeError::new_err(
                            "the HTTP handler returned None without deferring the response",
                        ))
                    }
                } else if res.is_started() {
                    Err(crate::errors::InvalidResponse::new_err(
                        "the HTTP handler deferred the response and also returned one",
                    ))
                } else {
                    send_value(py, res, &v)
                }
            });
            if let Err(e) = r {
                log_exception(py, "the HTTP handler", e);
                res.fail();
            }
        });
        if attached.is_none() {
            // The interpreter is shutting down.
            res.fail();
        }
    }

    fn thread_scope(&self, run: &mut dyn FnMut()) {
        crate::thread_scope(run);
    }

    fn worker_batch(&self) -> usize {
        self.batch
    }

    fn worker_scope(&self, run: &mut dyn FnMut()) {
        if Python::try_attach(|_| run()).is_none() {
            run();
        }
    }
}

fn thread_key() -> u64 {
    thread_local! {
        static KEY: u64 = {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
    }
    KEY.with(|k| *k)
}

fn make_request<'py>(
    py: Python<'py>,
    serial: u64,
    req: &CoreRequest<'_>,
    conn_id: u64,
) -> PyResult<Bound<'py, Request>> {
    let headers = Headers {
        fields: req
            .headers()
            .map(|(n, v)| (n.to_owned(), latin1(v)))
            .collect(),
    };
    let target = req.target().to_owned();
    Bound::new(
        py,
        Request {
            serial,
            method: req.method().to_owned(),
            path: span(req.target(), req.path()),
            query: req.query().and_then(|q| span(req.target(), q)),
            target,
            version: req.version(),
            headers: Py::new(py, headers)?,
            body: PyBytes::new(py, req.body()).unbind(),
            conn_id,
            peer: PyOnceLock::new(),
        },
    )
}

/// Where `part` (a slice of `whole`) lies in it; `None` if it is not a slice of it.
fn span(whole: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// An HTTP/1.1 server calling ``handler(request)`` for every request.
///
/// The handler returns the response: ``bytes`` (200, application/octet-stream), ``str``
/// (200, text/plain, UTF-8), a ``dict`` or ``list`` (200, JSON), ``(status, body)``,
/// ``(status, headers, body)``, a :class:`Response`, or an iterable of chunks (chunked; see
/// :class:`Response` for its limits).
/// Or it calls :meth:`Request.defer` and returns None, answering later from any thread.
/// An exception is logged to the ``shoal`` logger and answered with 500, and that
/// connection closes.
///
/// Keyword options: those of :class:`Server`, plus ``max_header_bytes``, ``max_headers``,
/// ``max_target_len``, ``max_body_size``, ``max_chunk_line``, ``max_pipelined``,
/// ``max_requests_per_connection``, ``header_read_timeout``, ``body_read_timeout``,
/// ``body_min_rate`` (bytes/s; None turns it off), ``keepalive_timeout`` (seconds),
/// ``response_timeout`` (seconds from a request to the end of its deferred answer; past it the
/// client gets a 503, or a stream under way is cut, and the late answer raises
/// :class:`ConnectionClosed`; None, the default, turns it off). ``write_timeout`` defaults to
/// 60 s here, so a client that stops reading is closed (None turns it off).
///
/// .. code-block:: python
///
///     def hello(req: shoal.Request) -> str:
///         return "Hello, World!"
///
///     shoal.HttpServer(hello, port=8080).run()
#[pyclass(module = "shoal._shoal", name = "HttpServer", extends = Server, frozen)]
pub struct HttpServer;

#[pymethods]
impl HttpServer {
    #[new]
    #[pyo3(signature = (handler, **options))]
    fn new(
        py: Python<'_>,
        handler: Py<PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        if !handler.bind(py).is_callable() {
            return Err(PyTypeError::new_err("handler must be callable"));
        }
        let opts = Options::new(options, &[ENGINE_OPTIONS, HTTP_OPTIONS], "HttpServer")?;
        let (engine, common) = opts.engine()?;
        let config = opts.http(engine)?;
        let handler = std::sync::Arc::new(handler);
        let h = PyHttp {
            handler: handler.clone(),
            batch: common.gil_batch,
        };
        let server = py
            .detach(|| CoreHttpServer::bind(config, h).map_err(|e| e.to_string()))
            .map_err(bind_error)?;
        let core = Core::new(Engine::Http(server), crate::server::Refs::Http(handler));
        Ok(PyClassInitializer::from(Server::from_core(core)).add_subclass(HttpServer))
    }

    fn __repr__(slf: PyRef<'_, Self>) -> String {
        format!("<shoal.HttpServer on {}>", slf.as_super().core.addr)
    }
}

pub(crate) fn http_stats_dict<'py>(py: Python<'py>, s: &HttpStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("requests", s.requests)?;
    let classes = PyDict::new(py);
    for (i, n) in s.responses.iter().enumerate() {
        classes.set_item(format!("{}xx", i + 1), n)?;
    }
    d.set_item("responses", classes)?;
    d.set_item("keepalive_reuses", s.keepalive_reuses)?;
    let errors = PyDict::new(py);
    for kind in ParseError::ALL {
        errors.set_item(kind.name(), s.parse_errors(kind))?;
    }
    d.set_item("parse_errors", errors)?;
    d.set_item("incomplete", s.incomplete)?;
    d.set_item("header_timeouts", s.header_timeouts)?;
    d.set_item("body_timeouts", s.body_timeouts)?;
    d.set_item("keepalive_timeouts", s.keepalive_timeouts)?;
    d.set_item("continues", s.continues)?;
    d.set_item("deferred", s.deferred)?;
    d.set_item("handler_failures", s.handler_failures)?;
    d.set_item("response_timeouts", s.response_timeouts)?;
    Ok(d)
}
