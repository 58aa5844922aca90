//! The C handler tables, and the Rust handlers that call them.

use std::ffi::{c_int, c_void};

use shoal_core::http::{HttpHandler, Request, Response};
use shoal_core::{CloseReason, Conn, ConnId, Handler};

use crate::boundary::{Live, LiveScope};
use crate::conn::{ConnRef, shoal_conn};
use crate::http::{shoal_request, shoal_response};

/// A connection id: a plain value, valid forever (a closed or reused id makes calls fail with
/// SHOAL_ERR_CLOSED). 0 is never a valid id.
#[allow(non_camel_case_types)]
pub type shoal_conn_id = u64;

/// Frees the `user_data` given with a handler table; called exactly once, after the last
/// callback, when the server is freed.
#[allow(non_camel_case_types)]
pub type shoal_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// Stream callbacks. Set `size` to `sizeof(shoal_handler)`; NULL entries are skipped
/// (`on_data` is required).
///
/// Threads: callbacks run on the connection's reactor thread (inline dispatch) or on a worker
/// thread (SHOAL_OPT_WORKERS > 0). Callbacks of one connection never run concurrently and
/// arrive in order; callbacks of different connections may run at the same time on different
/// threads, so `user_data` must be safe to share. A callback may block only with workers.
///
/// Lifetimes: `conn` and `data` are valid until the callback returns. `user_data` is passed
/// back unchanged and freed by `free_user_data` after the last callback.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shoal_handler {
    /// `sizeof(shoal_handler)` as compiled by the caller (lets the table grow compatibly).
    pub size: usize,
    /// The connection is established (accepted, or an outbound connect completed). Return 0,
    /// or non-zero to fail it (closed with SHOAL_CLOSE_HANDLER_FAILED; on_close still runs).
    pub on_open:
        Option<unsafe extern "C" fn(user_data: *mut c_void, conn: *mut shoal_conn) -> c_int>,
    /// Input arrived: `data[0..len]` is every unconsumed byte. Return how many bytes were
    /// consumed (the rest is presented again with the next input), or a negative value to fail
    /// the connection. Required.
    pub on_data: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            conn: *mut shoal_conn,
            data: *const u8,
            len: usize,
        ) -> i64,
    >,
    /// The peer shut down its sending side. Return non-zero to keep the connection open for
    /// writing (then close it yourself); 0 closes it once output is flushed. NULL: close.
    pub on_eof:
        Option<unsafe extern "C" fn(user_data: *mut c_void, conn: *mut shoal_conn) -> c_int>,
    /// Queued output drained below the low watermark after passing the high one.
    pub on_drain: Option<unsafe extern "C" fn(user_data: *mut c_void, conn: *mut shoal_conn)>,
    /// A timer set with shoal_conn_set_timer() or shoal_server_set_timer() fired.
    pub on_timer:
        Option<unsafe extern "C" fn(user_data: *mut c_void, conn: *mut shoal_conn, tag: u64)>,
    /// The connection closed; its id is already stale. Called exactly once per connection
    /// (every accepted one and every id from shoal_server_connect()), last. `context` is the
    /// pointer set with shoal_conn_set_context() (NULL if none), to free here. `reason` is a
    /// SHOAL_CLOSE_* code; `os_error` the errno for SHOAL_CLOSE_IO_ERROR and
    /// SHOAL_CLOSE_CONNECT_FAILED, else 0.
    pub on_close: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            id: shoal_conn_id,
            context: *mut c_void,
            reason: c_int,
            os_error: c_int,
        ),
    >,
    /// Input paused with shoal_conn_pause_input() was resumed: `data[0..len]` is the
    /// unconsumed input (possibly empty). Returns as on_data. NULL: non-empty input goes to
    /// on_data.
    pub on_resume: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            conn: *mut shoal_conn,
            data: *const u8,
            len: usize,
        ) -> i64,
    >,
}

/// HTTP callbacks. Set `size` to `sizeof(shoal_http_handler)`.
///
/// Threads and lifetimes as for shoal_handler: `on_request` runs on a reactor or a worker;
/// `req` and `res` (and every pointer read from them) are valid until it returns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shoal_http_handler {
    /// `sizeof(shoal_http_handler)` as compiled by the caller.
    pub size: usize,
    /// Answers one request through `res` (shoal_response_send(), shoal_response_start_chunked(),
    /// or shoal_response_defer()). Return 0, or non-zero for failure, answered or not: the
    /// connection then closes as a handler failure (SHOAL_CLOSE_HANDLER_FAILED, counted in
    /// `handler_failures` of both stats). An unanswered request gets a 500 first, a complete
    /// answer is delivered first, a response still under way may be cut off. Required.
    pub on_request: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            req: *const shoal_request,
            res: *mut shoal_response,
        ) -> c_int,
    >,
}

/// Copies a table of `size` bytes (as the caller compiled it) into a zeroed full table, so
/// older callers with shorter tables see NULL for the entries they do not know. Every entry
/// is pointer-sized (the `size` and function pointers); a `size` that ends inside an entry
/// leaves that entry NULL.
///
/// # Safety
/// `table` points to at least `size` readable bytes (checked: `size` is read first).
pub(crate) unsafe fn read_table<T: Copy>(table: *const T) -> Option<T> {
    // SAFETY: every table starts with a `size_t size` field, readable per the contract.
    let size = unsafe { *table.cast::<usize>() };
    if size < std::mem::size_of::<usize>() * 2 {
        return None;
    }
    let mut out = std::mem::MaybeUninit::<T>::zeroed();
    // Whole entries only: a size cut inside a function pointer must not leave half of one.
    let word = std::mem::size_of::<usize>();
    let n = size.min(std::mem::size_of::<T>()) / word * word;
    // SAFETY: `table` has `size` readable bytes, `out` has size_of::<T>(); we copy the smaller.
    // An all-zero table is valid: a size and NULL function pointers.
    unsafe {
        std::ptr::copy_nonoverlapping(table.cast::<u8>(), out.as_mut_ptr().cast::<u8>(), n);
        Some(out.assume_init())
    }
}

/// The user data of a handler table, freed exactly once when the handler is dropped (after
/// every reactor and worker, hence every callback, is gone) — but only once the server was
/// created: a failed shoal_server_new() leaves the user data to its caller.
#[derive(Debug)]
pub(crate) struct UserData {
    pub(crate) ptr: *mut c_void,
    free: shoal_free_fn,
    armed: std::sync::atomic::AtomicBool,
}

// SAFETY: the header requires `user_data` to be usable from any thread (callbacks of
// different connections run concurrently on several threads); shoal only passes it back.
unsafe impl Send for UserData {}
// SAFETY: as above; shoal never dereferences it.
unsafe impl Sync for UserData {}

impl UserData {
    pub(crate) fn new(ptr: *mut c_void, free: shoal_free_fn) -> std::sync::Arc<Self> {
        std::sync::Arc::new(UserData {
            ptr,
            free,
            armed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on, dropping frees the user data.
    pub(crate) fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl UserData {
    /// Frees the user data now, once (shoal_server_free() does it while the server is still
    /// whole, so `free_user_data` may read it).
    pub(crate) fn free_now(&self) {
        if !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(f) = self.free {
            // SAFETY: the caller registered `free` for exactly this pointer; disarming above
            // makes this the only call.
            unsafe { f(self.ptr) };
        }
    }
}

impl Drop for UserData {
    fn drop(&mut self) {
        self.free_now();
    }
}

/// The per-connection state of a C stream handler: the context pointer C code sets.
#[derive(Debug)]
pub(crate) struct CState {
    pub(crate) context: *mut c_void,
}

impl Default for CState {
    fn default() -> Self {
        CState {
            context: std::ptr::null_mut(),
        }
    }
}

// SAFETY: the context pointer is only stored and handed back to the C callbacks of its own
// connection, which run one at a time; the header documents that they may run on any
// reactor or worker thread.
unsafe impl Send for CState {}

/// A stream handler calling a C table.
#[derive(Debug)]
pub(crate) struct CHandler {
    pub(crate) table: shoal_handler,
    pub(crate) user: std::sync::Arc<UserData>,
}

/// Converts a C consumed count: negative or more than given is a failure (`None`).
fn consumed(rc: i64, len: usize) -> Option<usize> {
    usize::try_from(rc).ok().filter(|&n| n <= len)
}

impl CHandler {
    fn call_data(
        &self,
        f: unsafe extern "C" fn(*mut c_void, *mut shoal_conn, *const u8, usize) -> i64,
        conn: &mut Conn<'_>,
        state: &mut CState,
        data: &[u8],
    ) -> usize {
        let mut r = ConnRef { conn, state };
        let live = LiveScope::enter(r.as_ptr() as usize, 0, 0);
        // SAFETY: `f` comes from the caller's table, valid until free_user_data per the
        // header; `r` and `data` outlive the call (C reaches `r` through the token, while
        // `live` lasts).
        let rc = unsafe {
            f(
                self.user.ptr,
                live.token(Live::Conn),
                data.as_ptr(),
                data.len(),
            )
        };
        drop(live);
        match consumed(rc, data.len()) {
            Some(n) => n,
            None => {
                log::warn!(
                    "C callback returned {rc} for {} bytes; failing the connection",
                    data.len()
                );
                r.conn.fail();
                0
            }
        }
    }
}

impl Handler for CHandler {
    type State = CState;

    fn on_open(&self, conn: &mut Conn<'_>, state: &mut CState) {
        if let Some(f) = self.table.on_open {
            let mut r = ConnRef { conn, state };
            let live = LiveScope::enter(r.as_ptr() as usize, 0, 0);
            // SAFETY: as in call_data.
            let rc = unsafe { f(self.user.ptr, live.token(Live::Conn)) };
            drop(live);
            if rc != 0 {
                r.conn.fail();
            }
        }
    }

    fn on_data(&self, conn: &mut Conn<'_>, state: &mut CState, data: &[u8]) -> usize {
        match self.table.on_data {
            Some(f) => self.call_data(f, conn, state, data),
            None => data.len(),
        }
    }

    fn on_resume(&self, conn: &mut Conn<'_>, state: &mut CState, data: &[u8]) -> usize {
        match self.table.on_resume {
            Some(f) => self.call_data(f, conn, state, data),
            None if data.is_empty() => 0,
            None => self.on_data(conn, state, data),
        }
    }

    fn on_eof(&self, conn: &mut Conn<'_>, state: &mut CState) -> bool {
        match self.table.on_eof {
            Some(f) => {
                let mut r = ConnRef { conn, state };
                let live = LiveScope::enter(r.as_ptr() as usize, 0, 0);
                // SAFETY: as in call_data.
                unsafe { f(self.user.ptr, live.token(Live::Conn)) != 0 }
            }
            None => false,
        }
    }

    fn on_drain(&self, conn: &mut Conn<'_>, state: &mut CState) {
        if let Some(f) = self.table.on_drain {
            let mut r = ConnRef { conn, state };
            let live = LiveScope::enter(r.as_ptr() as usize, 0, 0);
            // SAFETY: as in call_data.
            unsafe { f(self.user.ptr, live.token(Live::Conn)) };
        }
    }

    fn on_timer(&self, conn: &mut Conn<'_>, state: &mut CState, tag: u64) {
        if let Some(f) = self.table.on_timer {
            let mut r = ConnRef { conn, state };
            let live = LiveScope::enter(r.as_ptr() as usize, 0, 0);
            // SAFETY: as in call_data.
            unsafe { f(self.user.ptr, live.token(Live::Conn), tag) };
        }
    }

    fn on_close(&self, id: ConnId, state: CState, reason: CloseReason) {
        if let Some(f) = self.table.on_close {
            // SAFETY: as in call_data; `state.context` is the caller's own pointer.
            unsafe {
                f(
                    self.user.ptr,
                    id.as_u64(),
                    state.context,
                    reason.index() as c_int,
                    reason.errno().unwrap_or(0),
                )
            };
        }
    }
}

/// An HTTP handler calling a C table.
#[derive(Debug)]
pub(crate) struct CHttpHandler {
    pub(crate) table: shoal_http_handler,
    pub(crate) user: std::sync::Arc<UserData>,
}

impl HttpHandler for CHttpHandler {
    fn handle(&self, req: &Request<'_>, res: &mut Response<'_, '_>) {
        let Some(f) = self.table.on_request else {
            return;
        };
        let req_ptr = std::ptr::from_ref(req).cast::<shoal_request>();
        let res_ptr = std::ptr::from_mut(res).cast::<shoal_response>();
        let live = LiveScope::enter(0, req_ptr as usize, res_ptr as usize);
        // SAFETY: `f` comes from the caller's table (valid until free_user_data); `req` and
        // `res` outlive the call and are only reached through the shoal_request_* and
        // shoal_response_* functions, which resolve the tokens back to them while `live`
        // lasts.
        let rc = unsafe {
            f(
                self.user.ptr,
                live.token(Live::Request),
                live.token(Live::Response),
            )
        };
        drop(live);
        if rc != 0 {
            log::warn!("C on_request returned {rc}; failing the connection");
            // A handler failure whatever was answered (the engine answers 500 if nothing
            // was, delivers a complete answer first, and closes with HandlerFailed).
            res.fail();
        }
    }
}
