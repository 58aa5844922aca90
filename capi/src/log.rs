//! Routes shoal's log records (the `log` crate) to a C callback.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::boundary::ffi_guard;
use crate::error::{SHOAL_OK, shoal_status};

/// Log levels: a record reaches the callback when its level is at most the chosen maximum.
pub const SHOAL_LOG_OFF: c_int = 0;
/// Errors: failures shoal could not absorb (a handler panic, a failing epoll_wait).
pub const SHOAL_LOG_ERROR: c_int = 1;
/// Warnings: something contained (accept paused for EMFILE, a handler timeout).
pub const SHOAL_LOG_WARN: c_int = 2;
/// Information.
pub const SHOAL_LOG_INFO: c_int = 3;
/// Debugging detail (rejected requests, socket option failures).
pub const SHOAL_LOG_DEBUG: c_int = 4;
/// Tracing detail.
pub const SHOAL_LOG_TRACE: c_int = 5;

/// Receives log records: `level` is a SHOAL_LOG_* value; `target` (the module) and `message`
/// are UTF-8, not NUL-terminated, valid only during the call. Called on whichever thread
/// logged (reactors, workers, the caller's), possibly concurrently.
#[allow(non_camel_case_types)]
pub type shoal_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: c_int,
        target: *const c_char,
        target_len: usize,
        message: *const c_char,
        message_len: usize,
    ),
>;

/// A registered callback, with its user data and level. Shared (`Arc`) so a record is
/// delivered outside the lock, and so a replacement can tell when the last thread left it.
struct Sink {
    f: unsafe extern "C" fn(*mut c_void, c_int, *const c_char, usize, *const c_char, usize),
    user_data: *mut c_void,
    max: usize,
}

// SAFETY: the header requires the callback and its user data to be callable from any thread.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

struct CLogger {
    sink: RwLock<Option<Arc<Sink>>>,
    max: AtomicUsize,
}

static LOGGER: CLogger = CLogger {
    sink: RwLock::new(None),
    max: AtomicUsize::new(0),
};

thread_local! {
    /// How deep this thread is inside log callbacks (a callback may log again).
    static IN_CALLBACK: Cell<usize> = const { Cell::new(0) };
}

/// Counts this thread as inside a log callback until dropped (also on unwinding).
struct InCallback;

impl InCallback {
    fn enter() -> Self {
        IN_CALLBACK.with(|d| d.set(d.get() + 1));
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

fn level_number(l: log::Level) -> c_int {
    match l {
        log::Level::Error => SHOAL_LOG_ERROR,
        log::Level::Warn => SHOAL_LOG_WARN,
        log::Level::Info => SHOAL_LOG_INFO,
        log::Level::Debug => SHOAL_LOG_DEBUG,
        log::Level::Trace => SHOAL_LOG_TRACE,
    }
}

impl log::Log for CLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        level_number(m.level()) as usize <= self.max.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Take a reference to the sink and release the lock before calling out: the callback
        // may replace itself (shoal_set_log_callback takes the lock for writing).
        let sink = match self.sink.read() {
            Ok(guard) => guard.clone(),
            Err(_) => return,
        };
        let Some(sink) = sink else {
            return;
        };
        let level = level_number(record.level());
        // The sink's own level: a record is judged by the callback it goes to.
        if level as usize > sink.max {
            return;
        }
        let msg = record.args().to_string();
        let target = record.target();
        let _inside = InCallback::enter();
        // SAFETY: the registered callback and its user data, valid until replaced and until
        // every thread has left it (shoal_set_log_callback waits for that, per the header);
        // `sink` keeps the replacement waiting meanwhile. The strings outlive the call.
        unsafe {
            (sink.f)(
                sink.user_data,
                level,
                target.as_ptr().cast::<c_char>(),
                target.len(),
                msg.as_ptr().cast::<c_char>(),
                msg.len(),
            )
        };
        // `_inside`, then `sink` are dropped here: the replacement may go on.
    }

    fn flush(&self) {}
}

/// Sends shoal's log records up to `max_level` (SHOAL_LOG_*) to `callback`; a NULL callback or
/// SHOAL_LOG_OFF stops logging. Replaces any previous callback. Records are delivered without
/// any lock held, so a callback may call this function itself (to turn logging off after a
/// first error, say).
///
/// When the previous callback is still running on other threads, this call waits until each
/// has returned from it: once it returns, the previous callback is not running and is never
/// called again, so its `user_data` may be freed. Called from inside a log callback, it does
/// not wait (it would wait for itself, or for another thread doing the same): the replaced
/// callback may still be running on other threads when it returns, though it is never
/// entered again. Do not hold a lock your log callback takes while calling this.
///
/// Installs shoal's logger in the process's `log` facade on first use (if another logger is
/// installed already, records go there instead).
///
/// # Safety
/// `callback` and `user_data` must stay valid and callable from any thread until replaced (and,
/// when replaced from inside a log callback, until the other threads have left it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_set_log_callback(
    callback: shoal_log_fn,
    user_data: *mut c_void,
    max_level: c_int,
) -> shoal_status {
    ffi_guard!({
        let _ = log::set_logger(&LOGGER);
        let max = usize::try_from(max_level.clamp(0, SHOAL_LOG_TRACE)).unwrap_or(0);
        let sink = callback
            .filter(|_| max > 0)
            .map(|f| Arc::new(Sink { f, user_data, max }));
        let max = if sink.is_some() { max } else { 0 };
        let old = match LOGGER.sink.write() {
            Ok(mut g) => std::mem::replace(&mut *g, sink),
            Err(_) => None,
        };
        LOGGER.max.store(max, Ordering::Relaxed);
        log::set_max_level(match max {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
        if let Some(old) = old
            && IN_CALLBACK.with(Cell::get) == 0
        {
            // Every other reference belongs to a thread inside the old callback (taken under
            // the lock before the replacement); no new one can be taken now.
            while Arc::strong_count(&old) > 1 {
                std::thread::sleep(Duration::from_micros(200));
            }
            // Pairs with the release decrement of the last thread's drop: its callback's
            // effects happen before the caller frees the user data.
            std::sync::atomic::fence(Ordering::Acquire);
        }
        SHOAL_OK
    })
}
