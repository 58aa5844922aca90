//! `shoal_conn`: what a stream callback can do with its connection.

use std::ffi::{c_char, c_void};
use std::io::IoSlice;
use std::time::Duration;

use shoal_core::Conn;

use crate::boundary::{Live, ffi_guard, live_mut_or, live_or, live_ref_or, slice_or, write_text};
use crate::callbacks::{CState, shoal_conn_id};
use crate::error::{SHOAL_OK, result, shoal_status};

/// The connection a stream callback was called for. Only valid during that callback, on its
/// thread (a pointer kept past it, or passed to another thread, is refused with
/// SHOAL_ERR_WRONG_THREAD and reaches no connection); use its id (shoal_conn_get_id()) with
/// the shoal_server_* functions from elsewhere.
#[derive(Debug)]
pub struct shoal_conn {
    _private: [u8; 0],
}

/// One buffer of a vectored write.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shoal_iovec {
    /// Start of the bytes (may be NULL when `len` is 0).
    pub base: *const c_void,
    /// Number of bytes.
    pub len: usize,
}

/// What a `shoal_conn` pointer points to during a callback.
pub(crate) struct ConnRef<'a, 'b> {
    pub(crate) conn: &'a mut Conn<'b>,
    pub(crate) state: &'a mut CState,
}

impl ConnRef<'_, '_> {
    pub(crate) fn as_ptr(&mut self) -> *mut shoal_conn {
        std::ptr::from_mut(self).cast::<shoal_conn>()
    }
}

/// Casts a `shoal_conn` back. Returns early with SHOAL_ERR_NULL (or `$err`) for NULL.
macro_rules! conn_or {
    ($p:expr) => {
        live_mut_or!($p.cast::<ConnRef<'_, '_>>(), Live::Conn)
    };
    ($p:expr, $err:expr) => {
        live_mut_or!($p.cast::<ConnRef<'_, '_>>(), Live::Conn, $err)
    };
}

/// The connection's id, usable from any thread. 0 if `conn` is NULL.
///
/// # Safety
/// `conn` is the pointer given to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_get_id(conn: *const shoal_conn) -> shoal_conn_id {
    ffi_guard!(0, {
        let r = live_ref_or!(conn.cast::<ConnRef<'_, '_>>(), Live::Conn, 0);
        r.conn.id().as_u64()
    })
}

/// Queues `len` bytes for writing; they leave with the callback's other writes in one
/// system call. Errors: SHOAL_ERR_WRITE_OVERFLOW (the connection closes), SHOAL_ERR_CLOSED
/// (closing).
///
/// # Safety
/// `conn` is the running callback's; `data` readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_write(
    conn: *mut shoal_conn,
    data: *const c_void,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let r = conn_or!(conn);
        let data = slice_or!(data.cast::<u8>(), len);
        result(r.conn.write(data))
    })
}

/// Queues `count` buffers, in order, as one write.
///
/// # Safety
/// `conn` is the running callback's; `iov` readable for `count` entries, each readable for
/// its `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_writev(
    conn: *mut shoal_conn,
    iov: *const shoal_iovec,
    count: usize,
) -> shoal_status {
    ffi_guard!({
        let r = conn_or!(conn);
        if count == 0 {
            return SHOAL_OK;
        }
        if iov.is_null() {
            return crate::error::null_arg("iov");
        }
        if !crate::boundary::len_ok::<shoal_iovec>(count) {
            return crate::boundary::bad_len("count", count);
        }
        // SAFETY: non-null with `count` entries per the contract.
        let entries = unsafe { std::slice::from_raw_parts(iov, count) };
        let mut slices = Vec::with_capacity(count);
        for e in entries {
            slices.push(IoSlice::new(slice_or!(e.base.cast::<u8>(), e.len)));
        }
        result(r.conn.write_vectored(&slices))
    })
}

/// Queues bytes on another connection of the same server (same-reactor targets directly).
///
/// # Safety
/// `conn` is the running callback's; `data` readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_write_to(
    conn: *mut shoal_conn,
    target: shoal_conn_id,
    data: *const c_void,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let r = conn_or!(conn);
        let data = slice_or!(data.cast::<u8>(), len);
        result(r.conn.write_to(shoal_core::ConnId::from_u64(target), data))
    })
}

/// Closes once queued output is flushed.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_close(conn: *mut shoal_conn) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).conn.close();
        SHOAL_OK
    })
}

/// Closes in two steps so the peer reads everything even while still sending: flush, shut
/// down writing, discard input until the peer closes (or SHOAL_OPT_LINGER_TIMEOUT_MS).
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_shutdown(conn: *mut shoal_conn) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).conn.shutdown();
        SHOAL_OK
    })
}

/// Closes at once, discarding queued output.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_abort(conn: *mut shoal_conn) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).conn.abort();
        SHOAL_OK
    })
}

/// Arms a timer: on_timer runs with `tag` after `ms` milliseconds (never early). Several
/// timers may share a tag; none fires after on_close.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_set_timer(
    conn: *mut shoal_conn,
    ms: u64,
    tag: u64,
) -> shoal_status {
    ffi_guard!({
        conn_or!(conn)
            .conn
            .set_timer(Duration::from_millis(ms), tag);
        SHOAL_OK
    })
}

/// Cancels every pending timer of this connection with `tag`.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_cancel_timer(conn: *mut shoal_conn, tag: u64) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).conn.cancel_timer(tag);
        SHOAL_OK
    })
}

/// Stops reading and delivering input until shoal_conn_resume_input() or
/// shoal_server_resume_input(); unconsumed input is kept.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_pause_input(conn: *mut shoal_conn) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).conn.pause_input();
        SHOAL_OK
    })
}

/// Resumes input: the unconsumed input is presented again (on_resume) after the queued output
/// is flushed.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_resume_input(conn: *mut shoal_conn) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).conn.resume_input();
        SHOAL_OK
    })
}

/// Stores a per-connection pointer (your own state), handed back to on_close to free.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_set_context(
    conn: *mut shoal_conn,
    context: *mut c_void,
) -> shoal_status {
    ffi_guard!({
        conn_or!(conn).state.context = context;
        SHOAL_OK
    })
}

/// The pointer stored with shoal_conn_set_context() (NULL if none or `conn` is NULL).
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_context(conn: *const shoal_conn) -> *mut c_void {
    ffi_guard!(std::ptr::null_mut(), {
        let r = live_ref_or!(
            conn.cast::<ConnRef<'_, '_>>(),
            Live::Conn,
            std::ptr::null_mut()
        );
        r.state.context
    })
}

/// Bytes queued and not yet taken by the socket; 0 if `conn` is NULL.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_queued(conn: *const shoal_conn) -> usize {
    ffi_guard!(0, {
        let r = live_ref_or!(conn.cast::<ConnRef<'_, '_>>(), Live::Conn, 0);
        r.conn.queued()
    })
}

/// With workers and SHOAL_OPT_HANDLER_TIMEOUT_MS: milliseconds left before the connection is
/// closed for running too long. -1 when no deadline applies.
///
/// # Safety
/// `conn` is the running callback's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_remaining_ms(conn: *const shoal_conn) -> i64 {
    ffi_guard!(-1, {
        let r = live_ref_or!(conn.cast::<ConnRef<'_, '_>>(), Live::Conn, -1);
        r.conn
            .remaining()
            .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// Writes the peer's address as text (`1.2.3.4:5` or `[::1]:5`) and a NUL into `buf`;
/// `*out_len` (optional) gets the text's length. SHOAL_ERR_INVALID_ARG if `cap` is too small.
///
/// # Safety
/// `conn` is the running callback's; `buf` writable for `cap` bytes; `out_len` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_peer_addr(
    conn: *const shoal_conn,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = live_ref_or!(conn.cast::<ConnRef<'_, '_>>(), Live::Conn);
        match r.conn.peer_addr() {
            // SAFETY: forwarded contract.
            Ok(a) => unsafe { write_text(&a.to_string(), buf, cap, out_len) },
            Err(e) => crate::error::status_of(&e),
        }
    })
}

/// As shoal_conn_peer_addr(), for the local address.
///
/// # Safety
/// As shoal_conn_peer_addr().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_conn_local_addr(
    conn: *const shoal_conn,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let r = live_ref_or!(conn.cast::<ConnRef<'_, '_>>(), Live::Conn);
        match r.conn.local_addr() {
            // SAFETY: forwarded contract.
            Ok(a) => unsafe { write_text(&a.to_string(), buf, cap, out_len) },
            Err(e) => crate::error::status_of(&e),
        }
    })
}
