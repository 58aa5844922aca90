//! The panic boundary and pointer checks every exported function goes through.
//!
//! Each exported body is wrapped by [`ffi_guard!`] (the body, not the item, so cbindgen still
//! sees the function): a panic becomes `SHOAL_ERR_PANIC` (or the function's stated default)
//! and never unwinds into C. Pointer arguments are checked with [`ref_or!`]/[`mut_or!`] and
//! slices built with [`slice_or!`], which turn NULL into `SHOAL_ERR_NULL`.

/// Runs `$body` inside `catch_unwind`; a panic records a message and yields `$on_panic`.
macro_rules! ffi_guard {
    ($on_panic:expr, $body:block) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(payload) => {
                $crate::error::set_last_error(&format!(
                    "internal panic: {}",
                    $crate::boundary::panic_text(&*payload)
                ));
                $on_panic
            }
        }
    }};
    ($body:block) => {
        ffi_guard!($crate::error::SHOAL_ERR_PANIC, $body)
    };
}

/// `&T` from a pointer, or return `$err` (default `SHOAL_ERR_NULL`) for NULL.
macro_rules! ref_or {
    ($ptr:expr) => {
        ref_or!($ptr, $crate::error::null_arg(stringify!($ptr)))
    };
    ($ptr:expr, $err:expr) => {{
        let p = $ptr;
        if p.is_null() {
            return $err;
        }
        // SAFETY: non-null; the caller guarantees (per the function's `# Safety` section)
        // that a non-null pointer points to a live object of this type.
        unsafe { &*p }
    }};
}

/// `&mut T` from a pointer, or return `$err` (default `SHOAL_ERR_NULL`) for NULL.
macro_rules! mut_or {
    ($ptr:expr) => {
        mut_or!($ptr, $crate::error::null_arg(stringify!($ptr)))
    };
    ($ptr:expr, $err:expr) => {{
        let p = $ptr;
        if p.is_null() {
            return $err;
        }
        // SAFETY: non-null; the caller guarantees (per the function's `# Safety` section)
        // that a non-null pointer points to a live object of this type, not aliased during
        // the call.
        unsafe { &mut *p }
    }};
}

/// A byte slice from (pointer, length): NULL is allowed only with length 0.
macro_rules! slice_or {
    ($ptr:expr, $len:expr) => {{
        let (p, n): (*const u8, usize) = ($ptr, $len);
        if n == 0 {
            &[][..]
        } else if p.is_null() {
            return $crate::error::null_arg(stringify!($ptr));
        } else {
            // SAFETY: non-null with length n; the caller guarantees n readable bytes at p
            // that stay unchanged during the call.
            unsafe { ::std::slice::from_raw_parts(p, n) }
        }
    }};
}

pub(crate) use {ffi_guard, mut_or, ref_or, slice_or};

pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Writes `text` and a NUL into `buf` (capacity `cap`); `*out_len` gets the text's length.
/// Fails with `SHOAL_ERR_INVALID_ARG` (still setting `*out_len`) when it does not fit.
///
/// # Safety
/// `buf` must be writable for `cap` bytes (or NULL with `cap` 0); `out_len` NULL or writable.
pub(crate) unsafe fn write_text(
    text: &str,
    buf: *mut std::ffi::c_char,
    cap: usize,
    out_len: *mut usize,
) -> crate::error::shoal_status {
    if !out_len.is_null() {
        // SAFETY: non-null and writable per the caller's contract.
        unsafe { *out_len = text.len() };
    }
    if buf.is_null() || cap < text.len() + 1 {
        crate::error::set_last_error(&format!(
            "buffer of {cap} bytes is too small for {} bytes and a NUL",
            text.len()
        ));
        return crate::error::SHOAL_ERR_INVALID_ARG;
    }
    // SAFETY: `buf` has room for text.len() + 1 bytes (checked above) and does not overlap
    // `text`, which is Rust-owned.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    crate::error::SHOAL_OK
}
