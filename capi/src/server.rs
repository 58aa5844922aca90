//! `shoal_server`: create, run, stop and free servers; act on connections from any thread.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;
use std::time::Duration;

use shoal_core::http::{HttpServer, HttpStatsHandle};
use shoal_core::{CloseReason, ConnId, Server, ServerHandle};

use crate::boundary::{ffi_guard, mut_or, nonnull_or, ref_or, slice_or, write_text};
use crate::callbacks::{
    CHandler, CHttpHandler, UserData, read_table, shoal_conn_id, shoal_free_fn, shoal_handler,
    shoal_http_handler,
};
use crate::config::shoal_config;
use crate::error::{
    SHOAL_ERR_ALREADY_STARTED, SHOAL_ERR_BUSY, SHOAL_ERR_NOT_STARTED, SHOAL_ERR_WRONG_KIND,
    SHOAL_ERR_WRONG_THREAD, SHOAL_OK, fail, invalid_arg, result, shoal_status, status_of,
};

/// Number of close reasons (the SHOAL_CLOSE_* codes are 0..SHOAL_CLOSE_COUNT-1).
pub const SHOAL_CLOSE_COUNT: usize = 15;
/// The peer closed its side.
pub const SHOAL_CLOSE_PEER_CLOSED: c_int = 0;
/// Closed gracefully by the application.
pub const SHOAL_CLOSE_CLOSED: c_int = 1;
/// Aborted by the application.
pub const SHOAL_CLOSE_ABORTED: c_int = 2;
/// No traffic for the idle timeout.
pub const SHOAL_CLOSE_IDLE_TIMEOUT: c_int = 3;
/// A partial message waited longer than the read timeout.
pub const SHOAL_CLOSE_READ_TIMEOUT: c_int = 4;
/// Output made no progress for the write timeout.
pub const SHOAL_CLOSE_WRITE_TIMEOUT: c_int = 5;
/// A worker callback outlived the handler timeout, or a deferred HTTP answer the response
/// timeout.
pub const SHOAL_CLOSE_HANDLER_TIMEOUT: c_int = 6;
/// An outbound connect did not complete in time.
pub const SHOAL_CLOSE_CONNECT_TIMEOUT: c_int = 7;
/// A protocol layer rejected the input (HTTP errors).
pub const SHOAL_CLOSE_PROTOCOL_ERROR: c_int = 8;
/// Unconsumed input exceeded the limit.
pub const SHOAL_CLOSE_READ_OVERFLOW: c_int = 9;
/// Queued output exceeded the limit.
pub const SHOAL_CLOSE_WRITE_OVERFLOW: c_int = 10;
/// A callback failed (returned an error).
pub const SHOAL_CLOSE_HANDLER_FAILED: c_int = 11;
/// The server stopped.
pub const SHOAL_CLOSE_SHUTDOWN: c_int = 12;
/// An outbound connect failed (`os_error` says why).
pub const SHOAL_CLOSE_CONNECT_FAILED: c_int = 13;
/// A socket error (`os_error` says which).
pub const SHOAL_CLOSE_IO_ERROR: c_int = 14;

const _: () = assert!(SHOAL_CLOSE_COUNT == CloseReason::COUNT);

/// A snapshot of a server's counters. Set `size` to `sizeof(shoal_stats)` before calling
/// shoal_server_stats(); fields beyond it are not written, so the struct can grow.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shoal_stats {
    /// `sizeof(shoal_stats)` as compiled by the caller.
    pub size: usize,
    /// Inbound connections accepted.
    pub accepted: u64,
    /// Outbound connections established.
    pub connected: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed, by SHOAL_CLOSE_* code.
    pub closed: [u64; SHOAL_CLOSE_COUNT],
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Times accepting paused at max_connections.
    pub accept_paused_limit: u64,
    /// Times accepting paused for lack of descriptors or memory.
    pub accept_paused_emfile: u64,
    /// Other accept errors, and accepted connections dropped before they opened.
    pub accept_errors: u64,
    /// Buffers reused from the pools.
    pub pool_hits: u64,
    /// Buffers the pools allocated.
    pub pool_misses: u64,
    /// Commands from other threads.
    pub commands: u64,
    /// Callbacks that failed.
    pub handler_failures: u64,
    /// Times reading paused at the output high watermark.
    pub read_pauses: u64,
    /// Jobs given to workers.
    pub jobs_queued: u64,
    /// Callbacks running on workers now.
    pub jobs_running: u64,
    /// Jobs finished by workers.
    pub jobs_completed: u64,
    /// Deepest the worker queue has been.
    pub queue_high_water: u64,
    /// Times reading paused for worker backpressure.
    pub backpressure_pauses: u64,
}

/// HTTP counters. Set `size` to `sizeof(shoal_http_stats)` before calling
/// shoal_server_http_stats().
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shoal_http_stats {
    /// `sizeof(shoal_http_stats)` as compiled by the caller.
    pub size: usize,
    /// Requests handed to the handler.
    pub requests: u64,
    /// Responses by class: index 0 counts 1xx, … index 4 counts 5xx.
    pub responses: [u64; 5],
    /// Requests after the first on a connection.
    pub keepalive_reuses: u64,
    /// Requests rejected as malformed or over a limit.
    pub parse_errors: u64,
    /// Connections closed with an incomplete request.
    pub incomplete: u64,
    /// Closed for the header timeout.
    pub header_timeouts: u64,
    /// Closed for the body timeout.
    pub body_timeouts: u64,
    /// Closed for the keep-alive timeout.
    pub keepalive_timeouts: u64,
    /// 100 Continue responses sent.
    pub continues: u64,
    /// Responses deferred.
    pub deferred: u64,
    /// Handlers that failed (answered 500).
    pub handler_failures: u64,
    /// Deferred answers given up at the response timeout (answered 503, or cut mid-stream).
    pub response_timeouts: u64,
}

/// Copies `value` into `out`, at most `out->size` bytes, keeping `out->size`.
///
/// # Safety
/// `out` points to a struct starting with a `size_t size` field and at least `size` bytes.
unsafe fn fill_sized<T: Copy>(out: *mut T, value: &T) -> shoal_status {
    // SAFETY: the first field is the caller's size, readable per the contract.
    let size = unsafe { *out.cast::<usize>() };
    if size < std::mem::size_of::<usize>() {
        return invalid_arg("size field not set (set it to sizeof the struct)");
    }
    let n = size.min(std::mem::size_of::<T>());
    let skip = std::mem::size_of::<usize>();
    // SAFETY: both have at least `n` bytes; the first `skip` bytes (the size) are kept.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(value).cast::<u8>().add(skip),
            out.cast::<u8>().add(skip),
            n - skip,
        );
    }
    SHOAL_OK
}

#[derive(Debug)]
enum Kind {
    Stream(Server<CHandler>),
    Http(HttpServer<CHttpHandler>),
}

#[derive(Debug)]
struct State {
    /// Taken (and dropped) by shoal_server_free() while the rest of the server is whole.
    server: Option<Kind>,
    started: bool,
    finished: bool,
}

impl State {
    /// The engine; `None` only while shoal_server_free() drops it (a callback that runs
    /// during that drop and calls back in is told the server is busy).
    fn kind(&mut self) -> Option<&mut Kind> {
        self.server.as_mut()
    }
}

/// A server: its reactors (and workers), its listening sockets and its handler. Created by
/// shoal_server_new() or shoal_http_server_new(), freed by shoal_server_free(). All functions
/// taking it are thread-safe.
#[derive(Debug)]
pub struct shoal_server {
    handle: ServerHandle,
    http: Option<HttpStatsHandle>,
    state: Mutex<State>,
    /// Keeps the user data until shoal_server_free(), as documented, even though the
    /// threads that called back with it are gone after shoal_server_wait(). The handler holds
    /// the other reference: while it lives (on a worker still inside a callback after the
    /// shutdown grace), callbacks may still run.
    user: std::sync::Arc<UserData>,
}

impl shoal_server {
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        // A blocking run() holds the lock; callers that would wait on it report busy.
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Whether a callback may still run: the handler is alive somewhere besides this object
    /// (only on a worker thread the engine stopped waiting for, once the server was joined).
    fn handler_alive(&self) -> bool {
        if std::sync::Arc::strong_count(&self.user) > 1 {
            return true;
        }
        // The handler's last reference was dropped with a release decrement: whatever its
        // callbacks did happens before what the caller does next (free the user data).
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        false
    }
}

fn busy_engine() -> shoal_status {
    crate::error::set_last_error("the server is being freed");
    SHOAL_ERR_BUSY
}

fn boxed(
    kind: Kind,
    http: Option<HttpStatsHandle>,
    user: std::sync::Arc<UserData>,
    out: &mut *mut shoal_server,
) -> shoal_status {
    let handle = match &kind {
        Kind::Stream(s) => s.handle(),
        Kind::Http(s) => s.handle(),
    };
    *out = Box::into_raw(Box::new(shoal_server {
        handle,
        http,
        state: Mutex::new(State {
            server: Some(kind),
            started: false,
            finished: false,
        }),
        user,
    }));
    SHOAL_OK
}

/// Creates a stream server: validates `config`, binds the listening sockets (so the port is
/// known), and registers `handler` (copied) with `user_data`, which `free_user_data` (may be
/// NULL) frees exactly once after the last callback, when the server is freed. No thread
/// runs until shoal_server_start() or shoal_server_run(). On failure nothing is kept and
/// `free_user_data` is not called.
///
/// # Safety
/// `config` from shoal_config_new(); `handler` readable for its `size`; `out` writable; the
/// callbacks and `user_data` valid until `free_user_data` runs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_new(
    config: *const shoal_config,
    handler: *const shoal_handler,
    user_data: *mut c_void,
    free_user_data: shoal_free_fn,
    out: *mut *mut shoal_server,
) -> shoal_status {
    ffi_guard!({
        let config = ref_or!(config);
        nonnull_or!(handler);
        let out = mut_or!(out);
        // SAFETY: non-null; readable for its size per the contract.
        let Some(table) = (unsafe { read_table(handler) }) else {
            return invalid_arg("handler->size is too small");
        };
        if table.on_data.is_none() {
            return invalid_arg("handler->on_data is required");
        }
        let engine = config.build_stream();
        let user = UserData::new(user_data, free_user_data);
        let handler = CHandler {
            table,
            user: user.clone(),
        };
        match Server::bind(engine, handler) {
            Ok(s) => {
                user.arm();
                boxed(Kind::Stream(s), None, user, out)
            }
            // Not armed: the caller keeps its user data.
            Err(e) => status_of(&e),
        }
    })
}

/// Creates an HTTP server (as shoal_server_new(), with an on_request table).
///
/// # Safety
/// As shoal_server_new().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_http_server_new(
    config: *const shoal_config,
    handler: *const shoal_http_handler,
    user_data: *mut c_void,
    free_user_data: shoal_free_fn,
    out: *mut *mut shoal_server,
) -> shoal_status {
    ffi_guard!({
        let config = ref_or!(config);
        nonnull_or!(handler);
        let out = mut_or!(out);
        // SAFETY: non-null; readable for its size per the contract.
        let Some(table) = (unsafe { read_table(handler) }) else {
            return invalid_arg("handler->size is too small");
        };
        if table.on_request.is_none() {
            return invalid_arg("handler->on_request is required");
        }
        let user = UserData::new(user_data, free_user_data);
        let handler = CHttpHandler {
            table,
            user: user.clone(),
        };
        match HttpServer::bind(config.build(), handler) {
            Ok(s) => {
                user.arm();
                let stats = s.http_stats_handle();
                boxed(Kind::Http(s), Some(stats), user, out)
            }
            Err(e) => status_of(&e),
        }
    })
}

/// Starts the reactor (and worker) threads and returns. SHOAL_ERR_ALREADY_STARTED if it was
/// started before. If a thread cannot be created (a negative errno such as -EAGAIN), the
/// threads already made are stopped and joined and every id from shoal_server_connect() gets
/// its on_close before this returns: nothing runs any more, and the server can only be freed.
///
/// # Safety
/// `server` from shoal_server_new()/shoal_http_server_new(), not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_start(server: *mut shoal_server) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        let Some(mut st) = s.lock() else {
            return fail(
                SHOAL_ERR_ALREADY_STARTED,
                c"shoal_server_run() or shoal_server_wait() is running on this server",
            );
        };
        if st.started {
            return fail(SHOAL_ERR_ALREADY_STARTED, c"the server was already started");
        }
        let r = match st.kind() {
            Some(Kind::Stream(s)) => s.start(),
            Some(Kind::Http(s)) => s.start(),
            None => return busy_engine(),
        };
        if r.is_ok() {
            st.started = true;
        }
        result(r)
    })
}

fn wait_locked(st: &mut State) -> shoal_status {
    let r = match st.kind() {
        Some(Kind::Stream(s)) => s.wait(),
        Some(Kind::Http(s)) => s.wait(),
        None => return busy_engine(),
    };
    st.finished = true;
    result(r)
}

fn run_or_wait_busy() -> shoal_status {
    fail(
        SHOAL_ERR_BUSY,
        c"shoal_server_run() or shoal_server_wait() is running on this server",
    )
}

fn wrong_thread() -> shoal_status {
    crate::error::set_last_error(
        "called from one of this server's own callbacks: it would wait for itself; \
         call shoal_server_stop() there and wait or free from another thread",
    );
    SHOAL_ERR_WRONG_THREAD
}

/// Starts (unless started) and blocks until the server stops (shoal_server_stop() from
/// another thread or a signal handler) and every connection is closed.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_run(server: *mut shoal_server) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        if s.handle.is_own_thread() {
            return wrong_thread();
        }
        let Some(mut st) = s.lock() else {
            return run_or_wait_busy();
        };
        if !st.started {
            let r = match st.kind() {
                Some(Kind::Stream(s)) => s.start(),
                Some(Kind::Http(s)) => s.start(),
                None => return busy_engine(),
            };
            if let Err(e) = r {
                return status_of(&e);
            }
            st.started = true;
        }
        wait_locked(&mut st)
    })
}

/// Blocks until a started server has stopped and every connection is closed.
///
/// With workers, a callback still running after twice the shutdown grace is not waited for
/// (it is logged; `jobs_running` in shoal_server_stats() counts it): this then returns while
/// it runs. Its connection's on_close runs on that worker once it returns, and
/// shoal_server_free() reports SHOAL_ERR_BUSY until both have.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_wait(server: *mut shoal_server) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        if s.handle.is_own_thread() {
            return wrong_thread();
        }
        let Some(mut st) = s.lock() else {
            return run_or_wait_busy();
        };
        if !st.started {
            return fail(SHOAL_ERR_NOT_STARTED, c"the server was never started");
        }
        wait_locked(&mut st)
    })
}

/// Stops the server: no more accepts; writes and closes already requested are carried out;
/// queued output, callbacks still running on workers, HTTP requests already read, and
/// connections whose input the handler paused while it waits to answer (a deferred HTTP
/// response) get the shutdown grace to finish; then the rest is closed (reset where output
/// or an answer is incomplete). Returns at once; shoal_server_run()/shoal_server_wait()
/// return when done. Idempotent. Async-signal-safe (an atomic store and eventfd writes), so it may be
/// called from a signal handler or any thread.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_stop(server: *const shoal_server) -> shoal_status {
    ffi_guard!({
        ref_or!(server).handle.stop();
        SHOAL_OK
    })
}

/// Frees a server, calling `free_user_data` after the last callback and before the server's
/// memory goes: from `free_user_data` the server may still be read (shoal_server_stats(),
/// shoal_server_port()), and calls that would start or free it again fail. NULL is
/// ignored. Returns SHOAL_ERR_BUSY, freeing nothing, while callbacks may still run:
///
/// - the server was started and not stopped (call shoal_server_stop() first);
/// - shoal_server_run() or shoal_server_wait() is blocked on it in another thread;
/// - a worker callback outlived the shutdown grace (see shoal_server_wait()) and has not
///   returned yet: call shoal_server_free() again later (shoal_last_error() says so).
///
/// A server that is stopping but was not waited for is waited for first (this blocks like
/// shoal_server_wait(); its callbacks may use the server meanwhile). Until this returns
/// SHOAL_OK, the server stays valid for the callbacks still running.
///
/// # Safety
/// `server` NULL or from shoal_server_new()/shoal_http_server_new(), not yet freed. During the
/// call no other thread uses it, except this server's own callbacks still running; once this
/// returns SHOAL_OK, no thread uses it again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_free(server: *mut shoal_server) -> shoal_status {
    ffi_guard!({
        if server.is_null() {
            return SHOAL_OK;
        }
        {
            let s = ref_or!(server);
            if s.handle.is_own_thread() {
                return wrong_thread();
            }
            let Some(mut st) = s.lock() else {
                return run_or_wait_busy();
            };
            if st.server.is_none() {
                return busy_engine();
            }
            if st.started && !st.finished {
                if !s.handle.is_stopping() {
                    crate::error::set_last_error(
                        "server is running: call shoal_server_stop() first",
                    );
                    return SHOAL_ERR_BUSY;
                }
                // Stopping: join it here, while the whole server is still in place for the
                // callbacks that run until then.
                let _ = wait_locked(&mut st);
            }
            if st.started && s.handler_alive() {
                crate::error::set_last_error(
                    "a worker callback that outlived the shutdown grace is still running; \
                     call shoal_server_free() again once it has returned",
                );
                return SHOAL_ERR_BUSY;
            }
            // Dropped with the rest intact: a server never started calls on_close for the
            // ids shoal_server_connect() gave out here, and those callbacks may use it.
            let kind = st.server.take();
            drop(kind);
            drop(st);
            // No callback runs any more, and the server is whole but for its engine (so a
            // call that needs the engine reports busy): `free_user_data` may read it.
            s.user.free_now();
        }
        // SAFETY: from shoal_server_new(), freed only here; no callback can run any more (the
        // engine is gone, with every thread that had the handler), so no thread uses it.
        drop(unsafe { Box::from_raw(server) });
        SHOAL_OK
    })
}

/// The port the server listens on (useful after binding port 0); 0 if `server` is NULL.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_port(server: *const shoal_server) -> u16 {
    ffi_guard!(0, { ref_or!(server, 0).handle.local_addr().port() })
}

/// Writes the listen address as text and a NUL into `buf` (see shoal_conn_peer_addr()).
///
/// # Safety
/// As shoal_server_start(); `buf` writable for `cap`; `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_local_addr(
    server: *const shoal_server,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        // SAFETY: forwarded contract.
        unsafe { write_text(&s.handle.local_addr().to_string(), buf, cap, out_len) }
    })
}

/// Fills `*out` (set `out->size` first) with the server's counters.
///
/// # Safety
/// As shoal_server_start(); `out` writable for `out->size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_stats(
    server: *const shoal_server,
    out: *mut shoal_stats,
) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        nonnull_or!(out);
        let st = s.handle.stats();
        let v = shoal_stats {
            size: std::mem::size_of::<shoal_stats>(),
            accepted: st.accepted,
            connected: st.connected,
            active: st.active,
            closed: st.closed,
            bytes_in: st.bytes_in,
            bytes_out: st.bytes_out,
            accept_paused_limit: st.accept_paused_limit,
            accept_paused_emfile: st.accept_paused_emfile,
            accept_errors: st.accept_errors,
            pool_hits: st.pool_hits,
            pool_misses: st.pool_misses,
            commands: st.commands,
            handler_failures: st.handler_failures,
            read_pauses: st.read_pauses,
            jobs_queued: st.jobs_queued,
            jobs_running: st.jobs_running,
            jobs_completed: st.jobs_completed,
            queue_high_water: st.queue_high_water,
            backpressure_pauses: st.backpressure_pauses,
        };
        // SAFETY: forwarded contract.
        unsafe { fill_sized(out, &v) }
    })
}

/// Fills `*out` (set `out->size` first) with the HTTP counters; SHOAL_ERR_WRONG_KIND for a
/// stream server.
///
/// # Safety
/// As shoal_server_stats().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_http_stats(
    server: *const shoal_server,
    out: *mut shoal_http_stats,
) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        nonnull_or!(out);
        let Some(h) = &s.http else {
            return fail(
                SHOAL_ERR_WRONG_KIND,
                c"not an HTTP server (made with shoal_server_new(), not shoal_http_server_new())",
            );
        };
        let st = h.get();
        let v = shoal_http_stats {
            size: std::mem::size_of::<shoal_http_stats>(),
            requests: st.requests,
            responses: st.responses,
            keepalive_reuses: st.keepalive_reuses,
            parse_errors: st.parse_errors_total(),
            incomplete: st.incomplete,
            header_timeouts: st.header_timeouts,
            body_timeouts: st.body_timeouts,
            keepalive_timeouts: st.keepalive_timeouts,
            continues: st.continues,
            deferred: st.deferred,
            handler_failures: st.handler_failures,
            response_timeouts: st.response_timeouts,
        };
        // SAFETY: forwarded contract.
        unsafe { fill_sized(out, &v) }
    })
}

/// Queues a copy of `len` bytes on connection `id`, from any thread. SHOAL_ERR_CLOSED for a
/// closed or unknown id (never another connection). SHOAL_ERR_WRITE_OVERFLOW at once when
/// `len` exceeds max_write_buffer (the connection is closed); a write that finds the queue
/// too full when the reactor carries it out closes the connection the same way, later.
/// SHOAL_ERR_WRONG_KIND on an HTTP server (its connections carry only its responses).
///
/// # Safety
/// As shoal_server_start(); `data` readable for `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_write(
    server: *const shoal_server,
    id: shoal_conn_id,
    data: *const c_void,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        let data = slice_or!(data.cast::<u8>(), len);
        result(s.handle.write(ConnId::from_u64(id), data))
    })
}

/// A writer for one connection with flow control, for a producer on another thread sending
/// more than SHOAL_OPT_MAX_WRITE_BUFFER to a client that may read slowly: call
/// shoal_writer_wait() before each shoal_writer_write(). Made by shoal_server_paced_writer();
/// owned by the caller, freed with shoal_writer_free() (which leaves the connection open).
/// Any number of threads may use one writer at once; it stays valid after its server is
/// freed (its calls then fail with SHOAL_ERR_CLOSED).
#[derive(Debug)]
pub struct shoal_writer {
    inner: shoal_core::PacedWriter,
}

/// Makes a paced writer for connection `id` into `*out`, from any thread. SHOAL_ERR_CLOSED
/// for a closed or unknown id; SHOAL_ERR_WRONG_KIND on an HTTP server.
///
/// # Safety
/// As shoal_server_start(); `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_paced_writer(
    server: *const shoal_server,
    id: shoal_conn_id,
    out: *mut *mut shoal_writer,
) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        let out = mut_or!(out);
        match s.handle.paced_writer(ConnId::from_u64(id)) {
            Ok(w) => {
                *out = Box::into_raw(Box::new(shoal_writer { inner: w }));
                SHOAL_OK
            }
            Err(e) => crate::error::status_of(&e),
        }
    })
}

/// Queues a copy of `len` bytes on the writer's connection at once, whatever is queued
/// already (as shoal_server_write()); writes from one thread keep their order.
///
/// # Safety
/// `w` from shoal_server_paced_writer(), not yet freed; `data` readable for `len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_writer_write(
    w: *const shoal_writer,
    data: *const c_void,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let w = ref_or!(w);
        let data = slice_or!(data.cast::<u8>(), len);
        result(w.inner.write(data))
    })
}

/// Waits until at most SHOAL_OPT_WRITE_LOW_WATERMARK bytes are queued on the writer's
/// connection (its output, and this writer's writes still on their way to the reactor).
/// `timeout_ms` < 0 waits without a limit. SHOAL_OK when writable, -ETIMEDOUT when the time
/// passed first, SHOAL_ERR_CLOSED once the connection is gone, SHOAL_ERR_WRONG_THREAD from
/// one of the server's own threads (its reactor could not flush while it waited). A new
/// writer's first wait also waits for the reactor's first report (a moment: a zero timeout
/// may give -ETIMEDOUT then).
///
/// # Safety
/// As shoal_writer_write().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_writer_wait(
    w: *const shoal_writer,
    timeout_ms: i64,
) -> shoal_status {
    ffi_guard!({
        let w = ref_or!(w);
        crate::error::wait_status(timeout_ms, |t| w.inner.wait_writable(t))
    })
}

/// Bytes queued on the writer's connection and not yet handed to the kernel; 0 for NULL.
///
/// # Safety
/// As shoal_writer_write().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_writer_queued(w: *const shoal_writer) -> usize {
    ffi_guard!(0, { ref_or!(w, 0).inner.queued() })
}

/// Frees a paced writer (its connection stays open). NULL is ignored.
///
/// # Safety
/// `w` NULL or from shoal_server_paced_writer(), not yet freed, with no call on it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_writer_free(w: *mut shoal_writer) {
    ffi_guard!((), {
        if !w.is_null() {
            // SAFETY: from shoal_server_paced_writer(), freed only here.
            drop(unsafe { Box::from_raw(w) });
        }
    })
}

/// Closes connection `id` once its output is flushed, from any thread.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_close(
    server: *const shoal_server,
    id: shoal_conn_id,
) -> shoal_status {
    ffi_guard!({ result(ref_or!(server).handle.close(ConnId::from_u64(id))) })
}

/// Closes connection `id` at once, from any thread.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_abort(
    server: *const shoal_server,
    id: shoal_conn_id,
) -> shoal_status {
    ffi_guard!({ result(ref_or!(server).handle.abort(ConnId::from_u64(id))) })
}

/// Arms a timer on connection `id` (see shoal_conn_set_timer()), from any thread.
/// SHOAL_ERR_WRONG_KIND on an HTTP server (its layer owns the connections' timers).
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_set_timer(
    server: *const shoal_server,
    id: shoal_conn_id,
    ms: u64,
    tag: u64,
) -> shoal_status {
    ffi_guard!({
        result(ref_or!(server).handle.set_timer(
            ConnId::from_u64(id),
            Duration::from_millis(ms),
            tag,
        ))
    })
}

/// Cancels connection `id`'s timers with `tag`, from any thread. SHOAL_ERR_WRONG_KIND on an
/// HTTP server.
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_cancel_timer(
    server: *const shoal_server,
    id: shoal_conn_id,
    tag: u64,
) -> shoal_status {
    ffi_guard!({
        result(
            ref_or!(server)
                .handle
                .cancel_timer(ConnId::from_u64(id), tag),
        )
    })
}

/// Resumes input paused with shoal_conn_pause_input(), from any thread. SHOAL_ERR_WRONG_KIND
/// on an HTTP server: its layer pauses and resumes input itself (a resume from outside
/// would answer a pipelined request before a deferred one).
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_resume_input(
    server: *const shoal_server,
    id: shoal_conn_id,
) -> shoal_status {
    ffi_guard!({ result(ref_or!(server).handle.resume_input(ConnId::from_u64(id))) })
}

/// Opens an outbound connection to `addr` (`1.2.3.4:80` or `[::1]:80`, `len` bytes), served by
/// the server's handler: on_open once connected; a refusal or timeout arrive as on_close.
/// `*out` receives the id at once. Works from any thread, callbacks included.
/// SHOAL_ERR_WRONG_KIND on an HTTP server (it serves requests; it sends none).
///
/// # Safety
/// As shoal_server_start(); `addr` readable for `len`; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_connect(
    server: *const shoal_server,
    addr: *const c_char,
    len: usize,
    out: *mut shoal_conn_id,
) -> shoal_status {
    ffi_guard!({
        let s = ref_or!(server);
        let text = slice_or!(addr.cast::<u8>(), len);
        let out = mut_or!(out);
        let Some(a) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<std::net::SocketAddr>().ok())
        else {
            return invalid_arg("addr is not an IP address and port");
        };
        match s.handle.connect(a) {
            Ok(id) => {
                *out = id.as_u64();
                SHOAL_OK
            }
            Err(e) => status_of(&e),
        }
    })
}

/// Whether `id` names a live connection right now (1) or not (0).
///
/// # Safety
/// As shoal_server_start().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_server_is_live(
    server: *const shoal_server,
    id: shoal_conn_id,
) -> c_int {
    ffi_guard!(0, {
        c_int::from(ref_or!(server, 0).handle.is_live(ConnId::from_u64(id)))
    })
}

/// The symbolic name of a SHOAL_CLOSE_* code ("peer_closed", "idle_timeout", …); "unknown"
/// for others. Never NULL; static.
#[unsafe(no_mangle)]
pub extern "C" fn shoal_close_reason_name(reason: c_int) -> *const c_char {
    ffi_guard!(c"unknown".as_ptr(), {
        const NAMES: [&std::ffi::CStr; SHOAL_CLOSE_COUNT] = [
            c"peer_closed",
            c"closed",
            c"aborted",
            c"idle_timeout",
            c"read_timeout",
            c"write_timeout",
            c"handler_timeout",
            c"connect_timeout",
            c"protocol_error",
            c"read_overflow",
            c"write_overflow",
            c"handler_failed",
            c"shutdown",
            c"connect_failed",
            c"io_error",
        ];
        usize::try_from(reason)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map_or(c"unknown".as_ptr(), |n| n.as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_names_match_the_engine() {
        for r in CloseReason::ALL {
            // SAFETY: static NUL-terminated strings.
            let name =
                unsafe { std::ffi::CStr::from_ptr(shoal_close_reason_name(r.index() as c_int)) };
            assert_eq!(name.to_str().unwrap(), r.name());
        }
    }
}
