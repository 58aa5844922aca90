//! # libshoal: the C interface of shoal
//!
//! A thin, complete translation of `shoal-core` for C: no engine logic lives here. The header
//! `include/shoal.h` is generated from this crate by cbindgen and committed.
//!
//! ## Conventions (rustls-ffi, libuv)
//!
//! - Names: `shoal_<object>_<verb>`; opaque types `shoal_<object>`; constants `SHOAL_<GROUP>_*`.
//! - Every fallible function returns a [`shoal_status`]: 0 (`SHOAL_OK`) or a negative code:
//!   `-errno` for OS errors, `SHOAL_ERR_*` (-1000..-1099) for shoal's own. `shoal_strerror`,
//!   `shoal_err_name` describe codes; `shoal_last_error` gives the thread's last message.
//! - Inputs before outputs; each buffer pointer is followed by its length; outputs are written
//!   only on success (except the needed length of a text that did not fit, as `snprintf`);
//!   a required NULL pointer returns `SHOAL_ERR_NULL`.
//! - Every exported body runs inside the `ffi_guard!` panic boundary: nothing unwinds into C.
//! - Objects come in `_new`/`_free` pairs. Handler tables carry their own `size` and a
//!   `free_user_data` finalizer called exactly once, after the last callback.
//! - Pointers passed to callbacks are borrowed for the callback only; connection ids are
//!   generation-checked values, so stale ids fail with `SHOAL_ERR_CLOSED` instead of reaching
//!   another connection.
//! - Options are numbered (`shoal_config_set(cfg, SHOAL_OPT_*, value)`) and output structs
//!   start with a `size` field, so later versions keep the ABI.

#![allow(non_camel_case_types)]

mod boundary;
mod callbacks;
mod config;
mod conn;
mod error;
mod http;
mod log;
mod server;

pub use callbacks::*;
pub use config::*;
pub use conn::*;
pub use error::*;
pub use http::*;
pub use log::*;
pub use server::*;

use std::ffi::c_char;

/// shoal's version, e.g. "0.1.0" (equal to SHOAL_VERSION_STRING of the header it was built
/// with). Never NULL; static.
#[unsafe(no_mangle)]
pub extern "C" fn shoal_version() -> *const c_char {
    VERSION.as_ptr()
}

const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
) {
    Ok(v) => v,
    Err(_) => panic!("version has no NUL"),
};
