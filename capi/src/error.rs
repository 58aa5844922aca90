//! Status codes: 0 is success, OS errors are `-errno`, shoal's own codes live in
//! -1000..-1099 and never change meaning once released.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};

use shoal_core::Error;

use crate::boundary::ffi_guard;

/// The result of every fallible function: `SHOAL_OK` (0) or a negative error code.
#[allow(non_camel_case_types)]
pub type shoal_status = c_int;

/// Success.
pub const SHOAL_OK: shoal_status = 0;
/// The connection id names no live connection (closed, reused slot, or never issued).
pub const SHOAL_ERR_CLOSED: shoal_status = -1001;
/// The server was stopped (or is stopping) and takes no new work.
pub const SHOAL_ERR_STOPPED: shoal_status = -1002;
/// The write would take the connection's output above `max_write_buffer`; it is closing.
pub const SHOAL_ERR_WRITE_OVERFLOW: shoal_status = -1003;
/// A required pointer argument was NULL.
pub const SHOAL_ERR_NULL: shoal_status = -1004;
/// A configuration value is out of range (see shoal_last_error()).
pub const SHOAL_ERR_INVALID_CONFIG: shoal_status = -1005;
/// The server is running: stop it (and let shoal_server_run()/shoal_server_wait() return)
/// first. From shoal_server_free() also: a callback is still running; try again once it has
/// returned (see shoal_last_error()).
pub const SHOAL_ERR_BUSY: shoal_status = -1006;
/// The server was already started.
pub const SHOAL_ERR_ALREADY_STARTED: shoal_status = -1007;
/// shoal caught an internal panic (see shoal_last_error()): the call had no effect; or, from
/// shoal_server_run() and shoal_server_wait(), a reactor thread panicked and the server has
/// finished (its connections closed).
pub const SHOAL_ERR_PANIC: shoal_status = -1008;
/// An argument is invalid: a bad option number, a malformed address, a buffer too small, a
/// size field too small (see shoal_last_error()).
pub const SHOAL_ERR_INVALID_ARG: shoal_status = -1009;
/// A response could not be sent as asked (a header with CR/LF/NUL, a response already
/// started); nothing was written.
pub const SHOAL_ERR_INVALID_RESPONSE: shoal_status = -1010;
/// The function does not apply to this object (an HTTP call on a stream server, or a
/// stream call, such as a raw write or a resume, on an HTTP server).
pub const SHOAL_ERR_WRONG_KIND: shoal_status = -1011;
/// The requested item does not exist (a header that is absent).
pub const SHOAL_ERR_NOT_FOUND: shoal_status = -1012;
/// An operating-system error without an errno.
pub const SHOAL_ERR_IO: shoal_status = -1013;
/// The server was not started.
pub const SHOAL_ERR_NOT_STARTED: shoal_status = -1014;
/// The call would wait for the thread making it: shoal_server_run()/shoal_server_wait()/
/// shoal_server_free() from inside one of the server's own callbacks. Stop the server there
/// (shoal_server_stop()) and wait or free from another thread. Also: a `shoal_conn`,
/// `shoal_request` or `shoal_response` used outside the callback it was given to (kept after
/// it returned, or passed to another thread).
pub const SHOAL_ERR_WRONG_THREAD: shoal_status = -1015;

/// A thread's last error message: most are fixed text, kept without allocating (a lookup
/// that finds nothing may run on every request).
enum Message {
    Fixed(&'static CStr),
    Owned(CString),
}

thread_local! {
    static LAST: RefCell<Message> = const { RefCell::new(Message::Fixed(c"")) };
}

/// Stores `m` as the calling thread's last message. Never panics: on a thread already
/// tearing down its thread-locals (a call from a pthread key destructor, which glibc runs
/// after Rust's) there is nowhere to keep it, and the status alone is returned; a panic here
/// would reach the panic guard's own handler, outside its `catch_unwind`, and abort.
fn store(m: Message) {
    let _ = LAST.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = m;
        }
    });
}

/// Records the calling thread's last error message.
pub(crate) fn set_last_error(msg: &str) {
    store(Message::Owned(
        CString::new(msg.replace('\0', " ")).unwrap_or_default(),
    ));
}

/// `code`, with a fixed message for shoal_last_error().
pub(crate) fn fail(code: shoal_status, msg: &'static CStr) -> shoal_status {
    store(Message::Fixed(msg));
    code
}

/// `SHOAL_ERR_NULL`, with a message naming the argument.
pub(crate) fn null_arg(name: &str) -> shoal_status {
    set_last_error(&format!("{name} is NULL"));
    SHOAL_ERR_NULL
}

/// `SHOAL_ERR_INVALID_ARG`, with a message.
pub(crate) fn invalid_arg(msg: &str) -> shoal_status {
    set_last_error(msg);
    SHOAL_ERR_INVALID_ARG
}

/// Maps an engine error to a status (and records its message).
pub(crate) fn status_of(e: &Error) -> shoal_status {
    // The errors a write path meets often keep a fixed message, without allocating.
    match e {
        Error::Closed => {
            return fail(SHOAL_ERR_CLOSED, c"connection is closed or the id is stale");
        }
        Error::Stopped => return fail(SHOAL_ERR_STOPPED, c"server is stopped"),
        Error::WriteOverflow => {
            return fail(
                SHOAL_ERR_WRITE_OVERFLOW,
                c"output queue would exceed max_write_buffer",
            );
        }
        _ => {}
    }
    set_last_error(&e.to_string());
    match e {
        Error::Closed => SHOAL_ERR_CLOSED,
        Error::Stopped => SHOAL_ERR_STOPPED,
        Error::WriteOverflow => SHOAL_ERR_WRITE_OVERFLOW,
        Error::AlreadyStarted => SHOAL_ERR_ALREADY_STARTED,
        Error::InvalidConfig(_) => SHOAL_ERR_INVALID_CONFIG,
        Error::InvalidResponse(_) => SHOAL_ERR_INVALID_RESPONSE,
        Error::ReactorPanicked(_) => SHOAL_ERR_PANIC,
        Error::WrongThread => SHOAL_ERR_WRONG_THREAD,
        Error::WrongKind(_) => SHOAL_ERR_WRONG_KIND,
        Error::Io(io) => match io.raw_os_error() {
            Some(errno) if errno > 0 => -errno,
            _ => SHOAL_ERR_IO,
        },
        _ => SHOAL_ERR_IO,
    }
}

/// A wait for room in a connection's output (`shoal_chunked_wait`, `shoal_writer_wait`):
/// `timeout_ms` < 0 without a limit; SHOAL_OK when writable, -ETIMEDOUT when the time passed.
pub(crate) fn wait_status(
    timeout_ms: i64,
    wait: impl FnOnce(Option<std::time::Duration>) -> shoal_core::Result<bool>,
) -> shoal_status {
    let timeout = u64::try_from(timeout_ms)
        .ok()
        .map(std::time::Duration::from_millis);
    match wait(timeout) {
        Ok(true) => SHOAL_OK,
        Ok(false) => fail(-libc::ETIMEDOUT, c"the output did not drain in time"),
        Err(e) => status_of(&e),
    }
}

/// `SHOAL_OK` or the mapped error.
pub(crate) fn result(r: shoal_core::Result<()>) -> shoal_status {
    match r {
        Ok(()) => SHOAL_OK,
        Err(e) => status_of(&e),
    }
}

const NAMES: &[(shoal_status, &CStr, &CStr)] = &[
    (SHOAL_OK, c"SHOAL_OK", c"success"),
    (
        SHOAL_ERR_CLOSED,
        c"SHOAL_ERR_CLOSED",
        c"connection is closed or the id is stale",
    ),
    (
        SHOAL_ERR_STOPPED,
        c"SHOAL_ERR_STOPPED",
        c"server is stopped",
    ),
    (
        SHOAL_ERR_WRITE_OVERFLOW,
        c"SHOAL_ERR_WRITE_OVERFLOW",
        c"output queue would exceed max_write_buffer",
    ),
    (
        SHOAL_ERR_NULL,
        c"SHOAL_ERR_NULL",
        c"a required pointer argument is NULL",
    ),
    (
        SHOAL_ERR_INVALID_CONFIG,
        c"SHOAL_ERR_INVALID_CONFIG",
        c"a configuration value is out of range",
    ),
    (
        SHOAL_ERR_BUSY,
        c"SHOAL_ERR_BUSY",
        c"server is running, or a callback is still running",
    ),
    (
        SHOAL_ERR_ALREADY_STARTED,
        c"SHOAL_ERR_ALREADY_STARTED",
        c"server was already started",
    ),
    (
        SHOAL_ERR_PANIC,
        c"SHOAL_ERR_PANIC",
        c"internal panic caught at the C boundary",
    ),
    (
        SHOAL_ERR_INVALID_ARG,
        c"SHOAL_ERR_INVALID_ARG",
        c"invalid argument",
    ),
    (
        SHOAL_ERR_INVALID_RESPONSE,
        c"SHOAL_ERR_INVALID_RESPONSE",
        c"invalid response",
    ),
    (
        SHOAL_ERR_WRONG_KIND,
        c"SHOAL_ERR_WRONG_KIND",
        c"not applicable to this kind of server",
    ),
    (SHOAL_ERR_NOT_FOUND, c"SHOAL_ERR_NOT_FOUND", c"not found"),
    (SHOAL_ERR_IO, c"SHOAL_ERR_IO", c"operating-system error"),
    (
        SHOAL_ERR_NOT_STARTED,
        c"SHOAL_ERR_NOT_STARTED",
        c"server was not started",
    ),
    (
        SHOAL_ERR_WRONG_THREAD,
        c"SHOAL_ERR_WRONG_THREAD",
        c"wrong thread: a wait from the server's own thread, or a callback's object used \
          outside its callback",
    ),
];

/// A static, human-readable description of a status code (for `-errno`, the C library's
/// description). Never NULL; the string lives for the whole program.
#[unsafe(no_mangle)]
pub extern "C" fn shoal_strerror(status: shoal_status) -> *const c_char {
    ffi_guard!(c"unknown error".as_ptr(), {
        if let Some((_, _, text)) = NAMES.iter().find(|(c, _, _)| *c == status) {
            return text.as_ptr();
        }
        if (-4095..0).contains(&status) {
            return errno_text(-status).as_ptr();
        }
        c"unknown error".as_ptr()
    })
}

/// The C library's description of `errno`, kept for the whole program: `strerror` may
/// format an unknown number into a buffer that its next call overwrites, so each text is
/// copied once into a table (at most 4095 entries, a few dozen bytes each).
fn errno_text(errno: i32) -> &'static CStr {
    static TEXTS: std::sync::Mutex<Vec<(i32, &'static CStr)>> = std::sync::Mutex::new(Vec::new());
    let mut texts = TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = texts.iter().find(|(e, _)| *e == errno) {
        return t;
    }
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    let text = full
        .strip_suffix(&format!(" (os error {errno})"))
        .unwrap_or(&full)
        .replace('\0', "");
    let text: &'static CStr = Box::leak(
        std::ffi::CString::new(text)
            .unwrap_or_default()
            .into_boxed_c_str(),
    );
    texts.push((errno, text));
    text
}

/// The symbolic name of a status code ("SHOAL_ERR_CLOSED", or "ERRNO" for `-errno`). Never
/// NULL; the string lives for the whole program.
#[unsafe(no_mangle)]
pub extern "C" fn shoal_err_name(status: shoal_status) -> *const c_char {
    ffi_guard!(c"UNKNOWN".as_ptr(), {
        if let Some((_, name, _)) = NAMES.iter().find(|(c, _, _)| *c == status) {
            return name.as_ptr();
        }
        if (-4095..0).contains(&status) {
            c"ERRNO".as_ptr()
        } else {
            c"UNKNOWN".as_ptr()
        }
    })
}

/// The calling thread's last error message (empty if none). Every call that returns an
/// error status sets it, so it describes the most recent failure. Valid until the next shoal
/// call on this thread; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn shoal_last_error() -> *const c_char {
    ffi_guard!(c"".as_ptr(), {
        LAST.try_with(|l| match l.try_borrow().as_deref() {
            Ok(Message::Fixed(m)) => m.as_ptr(),
            Ok(Message::Owned(m)) => m.as_ptr(),
            Err(_) => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_messages_match_the_engine_errors() {
        for e in [Error::Closed, Error::Stopped, Error::WriteOverflow] {
            let code = status_of(&e);
            // SAFETY: shoal_last_error() returns a NUL-terminated string valid until the
            // next shoal call on this thread.
            let msg = unsafe { CStr::from_ptr(shoal_last_error()) };
            assert_eq!(msg.to_str().unwrap(), e.to_string(), "{code}");
        }
    }
}
