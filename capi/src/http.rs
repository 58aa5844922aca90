//! HTTP from C: request getters, responses now, later, or streamed.

use std::ffi::{c_char, c_void};

use shoal_core::http::{ChunkedBody, Deferred, PreparedHeaders, Request, Response, Version};

use crate::boundary::{
    Live, ffi_guard, live_mut_or, live_or, live_ref_or, mut_or, ref_or, slice_or,
};
use crate::callbacks::shoal_conn_id;
use crate::error::{SHOAL_ERR_NOT_FOUND, SHOAL_OK, fail, null_arg, result, shoal_status};

/// The request an `on_request` callback answers. Valid, with every pointer read from it, only
/// during that callback, on its thread (a `shoal_request` or `shoal_response` pointer kept
/// past it is refused with SHOAL_ERR_WRONG_THREAD).
#[derive(Debug)]
pub struct shoal_request {
    _private: [u8; 0],
}

/// The response to that request. Valid only during `on_request`; take a shoal_deferred with
/// shoal_response_defer() to answer later.
#[derive(Debug)]
pub struct shoal_response {
    _private: [u8; 0],
}

/// A response answered later, from any thread. Owned by the caller: free it with
/// shoal_deferred_free() (which sends a 500 if it was never answered).
#[derive(Debug)]
pub struct shoal_deferred {
    inner: Deferred,
}

/// The body of a streamed response sent from any thread. Owned by the caller: end it with
/// shoal_chunked_finish(), then free it with shoal_chunked_free() (freeing an unfinished body
/// aborts the connection).
#[derive(Debug)]
pub struct shoal_chunked {
    inner: Option<ChunkedBody>,
}

/// Response header fields checked and serialized once by shoal_headers_new(), for answers
/// that repeat them: shoal_response_send_prepared() copies the block instead of checking and
/// writing each field again. Immutable: any number of threads may send with one at once.
/// Owned by the caller: free it with shoal_headers_free() once no call is using it.
#[derive(Debug)]
pub struct shoal_headers {
    inner: PreparedHeaders,
}

/// A response header field: name and value as (pointer, length) pairs. Names must be tokens;
/// values must not contain CR, LF, NUL or other control bytes (else
/// SHOAL_ERR_INVALID_RESPONSE). Content-Length and Transfer-Encoding are written by shoal.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shoal_header {
    /// Field name bytes.
    pub name: *const c_char,
    /// Length of the name.
    pub name_len: usize,
    /// Field value bytes.
    pub value: *const c_char,
    /// Length of the value.
    pub value_len: usize,
}

macro_rules! req_or {
    ($p:expr) => {
        live_ref_or!($p.cast::<Request<'_>>(), Live::Request)
    };
}

macro_rules! res_or {
    ($p:expr) => {
        live_mut_or!($p.cast::<Response<'_, '_>>(), Live::Response)
    };
}

/// Up to this many header fields are borrowed through a stack array (every ordinary
/// response); more go through a `Vec`.
const INLINE_FIELDS: usize = 16;

type Field<'a> = (&'a [u8], &'a [u8]);

/// Borrows `count` header fields from the caller's array and runs `f` on them. The pairs
/// live in this frame (a closure rather than a returned value: moving a 512-byte array out
/// and into the caller cost more than the FFI call itself).
///
/// # Safety
/// `headers` readable for `count` entries whose pointers are readable for their lengths.
#[inline(always)]
unsafe fn with_fields<R>(
    headers: *const shoal_header,
    count: usize,
    f: impl FnOnce(&[Field<'_>]) -> R,
) -> Result<R, shoal_status> {
    if count == 0 {
        return Ok(f(&[]));
    }
    if headers.is_null() {
        return Err(null_arg("headers"));
    }
    if !crate::boundary::len_ok::<shoal_header>(count) {
        return Err(crate::boundary::bad_len("count", count));
    }
    // SAFETY: non-null with `count` entries per the contract.
    let entries = unsafe { std::slice::from_raw_parts(headers, count) };
    let check = |p: *const u8, n: usize, what: &str| -> Result<&[u8], shoal_status> {
        if n == 0 {
            Ok(&[])
        } else if p.is_null() {
            Err(null_arg(what))
        } else if !crate::boundary::len_ok::<u8>(n) {
            Err(crate::boundary::bad_len(what, n))
        } else {
            // SAFETY: non-null with `n` readable bytes per the contract.
            Ok(unsafe { std::slice::from_raw_parts(p, n) })
        }
    };
    let field = |h: &shoal_header| -> Result<Field<'_>, shoal_status> {
        Ok((
            check(h.name.cast::<u8>(), h.name_len, "header name")?,
            check(h.value.cast::<u8>(), h.value_len, "header value")?,
        ))
    };
    if count <= INLINE_FIELDS {
        let mut out: [Field<'_>; INLINE_FIELDS] = [(&[], &[]); INLINE_FIELDS];
        for (slot, h) in out.iter_mut().zip(entries) {
            *slot = field(h)?;
        }
        Ok(f(&out[..count]))
    } else {
        let v = entries.iter().map(field).collect::<Result<Vec<_>, _>>()?;
        Ok(f(&v))
    }
}

/// Writes a borrowed string into (`*ptr`, `*len`).
///
/// # Safety
/// `ptr` and `len` writable.
unsafe fn out_str(s: &[u8], ptr: *mut *const c_char, len: *mut usize) -> shoal_status {
    if ptr.is_null() || len.is_null() {
        return null_arg("output pointer");
    }
    // SAFETY: both non-null and writable per the contract.
    unsafe {
        *ptr = s.as_ptr().cast::<c_char>();
        *len = s.len();
    }
    SHOAL_OK
}

/// The method (`*ptr` points into the request; not NUL-terminated).
///
/// # Safety
/// `req` is the running on_request's; `ptr`, `len` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_method(
    req: *const shoal_request,
    ptr: *mut *const c_char,
    len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        // SAFETY: forwarded contract.
        unsafe { out_str(r.method().as_bytes(), ptr, len) }
    })
}

/// The request target as sent.
///
/// # Safety
/// As shoal_request_method().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_target(
    req: *const shoal_request,
    ptr: *mut *const c_char,
    len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        // SAFETY: forwarded contract.
        unsafe { out_str(r.target().as_bytes(), ptr, len) }
    })
}

/// The path (the target up to `?`).
///
/// # Safety
/// As shoal_request_method().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_path(
    req: *const shoal_request,
    ptr: *mut *const c_char,
    len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        // SAFETY: forwarded contract.
        unsafe { out_str(r.path().as_bytes(), ptr, len) }
    })
}

/// The query (after `?`); SHOAL_ERR_NOT_FOUND when the target has none.
///
/// # Safety
/// As shoal_request_method().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_query(
    req: *const shoal_request,
    ptr: *mut *const c_char,
    len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        match r.query() {
            // SAFETY: forwarded contract.
            Some(q) => unsafe { out_str(q.as_bytes(), ptr, len) },
            None => fail(SHOAL_ERR_NOT_FOUND, c"the request target has no query"),
        }
    })
}

/// The HTTP version: 10 for HTTP/1.0, 11 for HTTP/1.1 (0 if `req` is NULL).
///
/// # Safety
/// `req` is the running on_request's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_version(req: *const shoal_request) -> i32 {
    ffi_guard!(0, {
        let r = live_ref_or!(req.cast::<Request<'_>>(), Live::Request, 0);
        match r.version() {
            Version::Http10 => 10,
            Version::Http11 => 11,
        }
    })
}

/// The value of the first header field named `name` (`name_len` bytes, ASCII
/// case-insensitive); SHOAL_ERR_NOT_FOUND when absent.
///
/// # Safety
/// `req` is the running on_request's; `name` readable for `name_len`; `value`, `value_len`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_header(
    req: *const shoal_request,
    name: *const c_char,
    name_len: usize,
    value: *mut *const c_char,
    value_len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        let name = slice_or!(name.cast::<u8>(), name_len);
        let Ok(name) = std::str::from_utf8(name) else {
            return no_such_header();
        };
        match r.header(name) {
            // SAFETY: forwarded contract.
            Some(v) => unsafe { out_str(v, value, value_len) },
            None => no_such_header(),
        }
    })
}

/// Number of header fields (0 if `req` is NULL).
///
/// # Safety
/// `req` is the running on_request's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_header_count(req: *const shoal_request) -> usize {
    ffi_guard!(0, {
        live_ref_or!(req.cast::<Request<'_>>(), Live::Request, 0).header_count()
    })
}

/// The header field at `index`, in the order received; SHOAL_ERR_NOT_FOUND past the end.
///
/// # Safety
/// `req` is the running on_request's; the outputs writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_header_at(
    req: *const shoal_request,
    index: usize,
    name: *mut *const c_char,
    name_len: *mut usize,
    value: *mut *const c_char,
    value_len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        if value.is_null() || value_len.is_null() {
            // Checked before the name is written: outputs are written only on success.
            return null_arg("output pointer");
        }
        match r.header_at(index) {
            Some((n, v)) => {
                // SAFETY: forwarded contract.
                let s = unsafe { out_str(n.as_bytes(), name, name_len) };
                if s != SHOAL_OK {
                    return s;
                }
                // SAFETY: forwarded contract (both checked non-null above).
                unsafe { out_str(v, value, value_len) }
            }
            None => fail(
                SHOAL_ERR_NOT_FOUND,
                c"header index past the request's last header field",
            ),
        }
    })
}

/// The complete, de-chunked body (`*len` 0 when there is none).
///
/// # Safety
/// `req` is the running on_request's; `data`, `len` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_request_body(
    req: *const shoal_request,
    data: *mut *const u8,
    len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = req_or!(req);
        // SAFETY: forwarded contract.
        unsafe { out_str(r.body(), data.cast::<*const c_char>(), len) }
    })
}

/// The id of the connection the response goes to (0 if `res` is NULL).
///
/// # Safety
/// `res` is the running on_request's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_conn_id(res: *mut shoal_response) -> shoal_conn_id {
    ffi_guard!(0, {
        let r = live_mut_or!(res.cast::<Response<'_, '_>>(), Live::Response, 0);
        r.conn().id().as_u64()
    })
}

/// Sends a complete response: status (200..999), `count` header fields, and the body. A
/// `Date` is added unless given.
///
/// # Safety
/// `res` is the running on_request's; `headers` readable for `count` entries; `body`
/// readable for `body_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_send(
    res: *mut shoal_response,
    status: u16,
    headers: *const shoal_header,
    count: usize,
    body: *const c_void,
    body_len: usize,
) -> shoal_status {
    ffi_guard!({
        let r = res_or!(res);
        let body = slice_or!(body.cast::<u8>(), body_len);
        // SAFETY: forwarded contract.
        unsafe { with_fields(headers, count, |h| result(r.send(status, h, body))) }
            .unwrap_or_else(|s| s)
    })
}

/// Checks and serializes `count` header fields (the rules of shoal_response_send()) into a
/// shoal_headers stored in `*out`; the fields are copied, so they need not outlive the call.
/// SHOAL_ERR_INVALID_RESPONSE for a field shoal_response_send() would refuse (nothing is
/// stored then).
///
/// # Safety
/// `headers` readable for `count` entries whose pointers are readable for their lengths;
/// `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_headers_new(
    headers: *const shoal_header,
    count: usize,
    out: *mut *mut shoal_headers,
) -> shoal_status {
    ffi_guard!({
        let out = mut_or!(out);
        // SAFETY: forwarded contract.
        let made = unsafe { with_fields(headers, count, |h| PreparedHeaders::new(h)) };
        match made {
            Ok(Ok(inner)) => {
                *out = Box::into_raw(Box::new(shoal_headers { inner }));
                SHOAL_OK
            }
            Ok(Err(e)) => crate::error::status_of(&e),
            Err(s) => s,
        }
    })
}

/// Frees prepared header fields. NULL is ignored.
///
/// # Safety
/// `h` NULL or from shoal_headers_new(), not yet freed, and no call using it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_headers_free(h: *mut shoal_headers) {
    ffi_guard!((), {
        if !h.is_null() {
            // SAFETY: from shoal_headers_new(), freed only here.
            drop(unsafe { Box::from_raw(h) });
        }
    })
}

/// Sends a complete response as shoal_response_send() does, with header fields prepared by
/// shoal_headers_new(): the fast path for answers that repeat their headers.
///
/// # Safety
/// `res` is the running on_request's; `headers` from shoal_headers_new(), not freed; `body`
/// readable for `body_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_send_prepared(
    res: *mut shoal_response,
    status: u16,
    headers: *const shoal_headers,
    body: *const c_void,
    body_len: usize,
) -> shoal_status {
    ffi_guard!({
        let r = res_or!(res);
        let h = ref_or!(headers);
        let body = slice_or!(body.cast::<u8>(), body_len);
        result(r.send_prepared(status, &h.inner, body))
    })
}

/// Starts a streamed response (chunked for HTTP/1.1, close-delimited for HTTP/1.0); send the
/// body with shoal_response_write_chunk() and end it with shoal_response_finish() (an
/// unfinished stream is ended when on_request returns). The pieces leave once on_request
/// returns and count against max_write_buffer together (SHOAL_ERR_WRITE_OVERFLOW past it):
/// for a large or endless body, shoal_response_defer() and stream from another thread.
///
/// # Safety
/// As shoal_response_send().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_start_chunked(
    res: *mut shoal_response,
    status: u16,
    headers: *const shoal_header,
    count: usize,
) -> shoal_status {
    ffi_guard!({
        let r = res_or!(res);
        // SAFETY: forwarded contract.
        unsafe { with_fields(headers, count, |h| result(r.start_chunked(status, h))) }
            .unwrap_or_else(|s| s)
    })
}

/// Sends one piece of a streamed body.
///
/// # Safety
/// `res` is the running on_request's; `data` readable for `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_write_chunk(
    res: *mut shoal_response,
    data: *const c_void,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let r = res_or!(res);
        let data = slice_or!(data.cast::<u8>(), len);
        result(r.write_chunk(data))
    })
}

/// Ends a streamed body.
///
/// # Safety
/// `res` is the running on_request's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_finish(res: *mut shoal_response) -> shoal_status {
    ffi_guard!({ result(res_or!(res).finish()) })
}

/// Takes the response away to answer it later from any thread: `*out` receives a
/// shoal_deferred owned by the caller. Requests pipelined behind it wait.
///
/// # Safety
/// `res` is the running on_request's; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_response_defer(
    res: *mut shoal_response,
    out: *mut *mut shoal_deferred,
) -> shoal_status {
    ffi_guard!({
        let r = res_or!(res);
        let out = mut_or!(out);
        match r.defer() {
            Ok(d) => {
                *out = Box::into_raw(Box::new(shoal_deferred { inner: d }));
                SHOAL_OK
            }
            Err(e) => crate::error::status_of(&e),
        }
    })
}

/// The id of the connection a deferred response goes to (0 if NULL).
///
/// # Safety
/// `d` from shoal_response_defer(), not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_deferred_conn_id(d: *const shoal_deferred) -> shoal_conn_id {
    ffi_guard!(0, { ref_or!(d, 0).inner.id().as_u64() })
}

/// Answers a deferred response (as shoal_response_send()), from any thread.
/// SHOAL_ERR_CLOSED if the connection went away meanwhile.
///
/// # Safety
/// `d` from shoal_response_defer(), not freed, used by one thread at a time; `headers` and
/// `body` as for shoal_response_send().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_deferred_send(
    d: *mut shoal_deferred,
    status: u16,
    headers: *const shoal_header,
    count: usize,
    body: *const c_void,
    body_len: usize,
) -> shoal_status {
    ffi_guard!({
        let d = mut_or!(d);
        let body = slice_or!(body.cast::<u8>(), body_len);
        // SAFETY: forwarded contract.
        unsafe { with_fields(headers, count, |h| result(d.inner.send(status, h, body))) }
            .unwrap_or_else(|s| s)
    })
}

/// Answers a deferred response with prepared header fields (as
/// shoal_response_send_prepared()), from any thread.
///
/// # Safety
/// `d` as for shoal_deferred_send(); `headers` from shoal_headers_new(), not freed; `body`
/// readable for `body_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_deferred_send_prepared(
    d: *mut shoal_deferred,
    status: u16,
    headers: *const shoal_headers,
    body: *const c_void,
    body_len: usize,
) -> shoal_status {
    ffi_guard!({
        let d = mut_or!(d);
        let h = ref_or!(headers);
        let body = slice_or!(body.cast::<u8>(), body_len);
        result(d.inner.send_prepared(status, &h.inner, body))
    })
}

/// Starts a streamed answer to a deferred response; `*out` receives a shoal_chunked owned by
/// the caller.
///
/// # Safety
/// `d` as for shoal_deferred_send(); `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_deferred_start_chunked(
    d: *mut shoal_deferred,
    status: u16,
    headers: *const shoal_header,
    count: usize,
    out: *mut *mut shoal_chunked,
) -> shoal_status {
    ffi_guard!({
        let d = mut_or!(d);
        let out = mut_or!(out);
        // SAFETY: forwarded contract.
        let started = unsafe { with_fields(headers, count, |h| d.inner.start_chunked(status, h)) };
        let started = match started {
            Ok(r) => r,
            Err(s) => return s,
        };
        match started {
            Ok(body) => {
                *out = Box::into_raw(Box::new(shoal_chunked { inner: Some(body) }));
                SHOAL_OK
            }
            Err(e) => crate::error::status_of(&e),
        }
    })
}

/// Frees a deferred response; one never answered is answered with 500 and its connection
/// closed. NULL is ignored.
///
/// # Safety
/// `d` NULL or from shoal_response_defer(), not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_deferred_free(d: *mut shoal_deferred) {
    ffi_guard!((), {
        if !d.is_null() {
            // SAFETY: from shoal_response_defer(), freed only here.
            drop(unsafe { Box::from_raw(d) });
        }
    })
}

/// Sends one piece of a streamed body, from any thread. It is queued at once: for a large
/// body, wait for room with shoal_chunked_wait() before each piece.
///
/// # Safety
/// `c` from shoal_deferred_start_chunked(), not freed, one thread at a time; `data` readable
/// for `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_chunked_write(
    c: *mut shoal_chunked,
    data: *const c_void,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let c = mut_or!(c);
        let data = slice_or!(data.cast::<u8>(), len);
        match c.inner.as_mut() {
            Some(b) => result(b.write(data)),
            None => {
                crate::error::status_of(&shoal_core::Error::InvalidResponse("the body is finished"))
            }
        }
    })
}

/// Waits until at most SHOAL_OPT_WRITE_LOW_WATERMARK bytes of the response are queued, so
/// the next pieces stay within SHOAL_OPT_MAX_WRITE_BUFFER however slowly the client reads:
/// call it before each shoal_chunked_write() of a large or endless body (a write is queued
/// at once, and past the limit the connection is reset). `timeout_ms` < 0 waits without a
/// limit. SHOAL_OK when writable, -ETIMEDOUT when the time passed first, SHOAL_ERR_CLOSED
/// once the connection is gone, SHOAL_ERR_WRONG_THREAD from one of the server's own threads
/// (its reactor could not flush while it waited).
///
/// # Safety
/// As shoal_chunked_write().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_chunked_wait(
    c: *mut shoal_chunked,
    timeout_ms: i64,
) -> shoal_status {
    ffi_guard!({
        let c = ref_or!(c);
        let Some(b) = c.inner.as_ref() else {
            return crate::error::status_of(&shoal_core::Error::InvalidResponse(
                "the body is finished",
            ));
        };
        crate::error::wait_status(timeout_ms, |t| b.wait_writable(t))
    })
}

/// Bytes of a streamed response written and not yet handed to the kernel; 0 for NULL or a
/// finished body.
///
/// # Safety
/// As shoal_chunked_write().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_chunked_queued(c: *const shoal_chunked) -> usize {
    ffi_guard!(0, {
        ref_or!(c, 0).inner.as_ref().map_or(0, ChunkedBody::queued)
    })
}

/// Ends a streamed body; the connection goes on to its next request (or closes). Free the
/// object afterwards with shoal_chunked_free().
///
/// # Safety
/// As shoal_chunked_write().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_chunked_finish(c: *mut shoal_chunked) -> shoal_status {
    ffi_guard!({
        let c = mut_or!(c);
        match c.inner.take() {
            Some(b) => result(b.finish()),
            None => {
                crate::error::status_of(&shoal_core::Error::InvalidResponse("the body is finished"))
            }
        }
    })
}

/// Frees a streamed body; an unfinished one aborts its connection. NULL is ignored.
///
/// # Safety
/// `c` NULL or from shoal_deferred_start_chunked(), not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_chunked_free(c: *mut shoal_chunked) {
    ffi_guard!((), {
        if !c.is_null() {
            // SAFETY: from shoal_deferred_start_chunked(), freed only here.
            drop(unsafe { Box::from_raw(c) });
        }
    })
}

fn no_such_header() -> shoal_status {
    fail(
        SHOAL_ERR_NOT_FOUND,
        c"the request has no header field of that name",
    )
}
