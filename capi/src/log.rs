//! Routes shoal's log records (the `log` crate) to a C callback.

use std::ffi::{c_char, c_int, c_void};
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

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

struct Sink {
    f: unsafe extern "C" fn(*mut c_void, c_int, *const c_char, usize, *const c_char, usize),
    user_data: *mut c_void,
}

// SAFETY: the header requires the callback and its user data to be callable from any thread.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

struct CLogger {
    sink: RwLock<Option<Sink>>,
    max: AtomicUsize,
}

static LOGGER: CLogger = CLogger {
    sink: RwLock::new(None),
    max: AtomicUsize::new(0),
};

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
        let Ok(guard) = self.sink.read() else {
            return;
        };
        if let Some(sink) = guard.as_ref() {
            let msg = record.args().to_string();
            let target = record.target();
            // SAFETY: the registered callback, valid until replaced (per the header); the
            // strings outlive the call.
            unsafe {
                (sink.f)(
                    sink.user_data,
                    level_number(record.level()),
                    target.as_ptr().cast::<c_char>(),
                    target.len(),
                    msg.as_ptr().cast::<c_char>(),
                    msg.len(),
                )
            };
        }
    }

    fn flush(&self) {}
}

/// Sends shoal's log records up to `max_level` (SHOAL_LOG_*) to `callback`; a NULL callback or
/// SHOAL_LOG_OFF stops logging. Replaces any previous callback; the previous callback may
/// still run on other threads while this call returns. Installs shoal's logger in the
/// process's `log` facade on first use (if another logger is installed already, records go
/// there instead).
///
/// # Safety
/// `callback` and `user_data` must stay valid and callable from any thread until replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_set_log_callback(
    callback: shoal_log_fn,
    user_data: *mut c_void,
    max_level: c_int,
) -> shoal_status {
    ffi_guard!({
        let _ = log::set_logger(&LOGGER);
        let max = usize::try_from(max_level.clamp(0, SHOAL_LOG_TRACE)).unwrap_or(0);
        let sink = callback.map(|f| Sink { f, user_data });
        let max = if sink.is_some() { max } else { 0 };
        if let Ok(mut g) = LOGGER.sink.write() {
            *g = sink;
        }
        LOGGER.max.store(max, Ordering::Relaxed);
        log::set_max_level(match max {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
        SHOAL_OK
    })
}
