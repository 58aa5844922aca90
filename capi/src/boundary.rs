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

/// Returns `SHOAL_ERR_NULL` for a NULL pointer, without making a reference of it: for a
/// versioned struct (one that starts with its `size`), which may be shorter than this
/// library's version of it, so only its first `size` bytes may be touched.
macro_rules! nonnull_or {
    ($ptr:expr) => {{
        if $ptr.is_null() {
            return $crate::error::null_arg(stringify!($ptr));
        }
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
        } else if !$crate::boundary::len_ok::<u8>(n) {
            return $crate::boundary::bad_len(stringify!($len), n);
        } else {
            // SAFETY: non-null with length n; the caller guarantees n readable bytes at p
            // that stay unchanged during the call.
            unsafe { ::std::slice::from_raw_parts(p, n) }
        }
    }};
}

/// The callback objects C may use on this thread now: the `shoal_conn`, `shoal_request` and
/// `shoal_response` of the running callback. C never gets their addresses (they live on the
/// reactor's or worker's stack, where the next callback's objects sit at the same place): it
/// gets a token unique to this callback on this thread, which every function taking one
/// looks up here. A token kept after its callback returned, or passed to another thread,
/// matches nothing and is refused instead of reaching another connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Live {
    Conn = 0,
    Request = 1,
    Response = 2,
}

/// Per thread: the live objects as (token, address) pairs, and the next token (0 until the
/// thread's first callback). Constant-initialized, so each access is one TLS lookup.
struct Tokens {
    live: [std::cell::Cell<(usize, usize)>; 3],
    next: std::cell::Cell<usize>,
}

thread_local! {
    static TOKENS: Tokens = const {
        Tokens {
            live: [
                std::cell::Cell::new((0, 0)),
                std::cell::Cell::new((0, 0)),
                std::cell::Cell::new((0, 0)),
            ],
            next: std::cell::Cell::new(0),
        }
    };
}

/// Tokens are odd (never an object's address), and each thread's run in its own range: the
/// top 16 bits number the thread (on 64-bit targets), the rest count its callbacks.
fn first_token() -> usize {
    static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let n = THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let shift = usize::BITS.saturating_sub(16).max(8);
    (n << shift) | 1
}

/// Marks callback objects live until dropped (restoring what was live before).
pub(crate) struct LiveScope {
    prev: [(usize, usize); 3],
    now: [(usize, usize); 3],
}

impl LiveScope {
    /// Makes the objects at these addresses (0: none) live; C gets [`LiveScope::token`]s.
    pub(crate) fn enter(conn: usize, req: usize, res: usize) -> Self {
        TOKENS.with(|t| {
            let mut next = t.next.get();
            if next == 0 {
                next = first_token();
            }
            let mut scope = LiveScope {
                prev: [(0, 0); 3],
                now: [(0, 0); 3],
            };
            for (i, addr) in [conn, req, res].into_iter().enumerate() {
                let v = if addr == 0 {
                    (0, 0)
                } else {
                    let token = next;
                    next = next.wrapping_add(2);
                    (token, addr)
                };
                scope.prev[i] = t.live[i].replace(v);
                scope.now[i] = v;
            }
            t.next.set(next);
            scope
        })
    }

    /// What C gets for the object of `kind`.
    pub(crate) fn token<T>(&self, kind: Live) -> *mut T {
        self.now[kind as usize].0 as *mut T
    }
}

impl Drop for LiveScope {
    fn drop(&mut self) {
        TOKENS.with(|t| {
            for (cell, prev) in t.live.iter().zip(self.prev) {
                cell.set(prev);
            }
        });
    }
}

/// The object a token names, if it is the running callback's object of this kind.
pub(crate) fn resolve<T>(kind: Live, token: *const T) -> Option<*mut T> {
    let (t, addr) = TOKENS.with(|t| t.live[kind as usize].get());
    (t != 0 && t == token as usize).then_some(addr as *mut T)
}

/// Records why a pointer was refused; SHOAL_ERR_WRONG_THREAD.
pub(crate) fn stale_arg(name: &str) -> crate::error::shoal_status {
    crate::error::set_last_error(&format!(
        "{name} is not the running callback's (kept after its callback returned, or used from \
         another thread)"
    ));
    crate::error::SHOAL_ERR_WRONG_THREAD
}

/// `&T` (`[]`) or `&mut T` (`[mut]`) for a callback object's token: NULL gives
/// `SHOAL_ERR_NULL`, a token that is not the running callback's gives `SHOAL_ERR_WRONG_THREAD`
/// (or `$err` for both, with the reason recorded).
macro_rules! live_or {
    ([$($m:tt)?] $ptr:expr, $kind:expr) => {
        live_or!(@ [$($m)?] $ptr, $kind, return $crate::error::null_arg(stringify!($ptr)),
            return $crate::boundary::stale_arg(stringify!($ptr)))
    };
    ([$($m:tt)?] $ptr:expr, $kind:expr, $err:expr) => {
        live_or!(@ [$($m)?] $ptr, $kind, return $err, {
            $crate::boundary::stale_arg(stringify!($ptr));
            return $err;
        })
    };
    (@ [$($m:tt)?] $ptr:expr, $kind:expr, $on_null:expr, $on_stale:expr) => {{
        let p = $ptr;
        if p.is_null() {
            $on_null;
        }
        match $crate::boundary::resolve($kind, p) {
            // SAFETY: a live token names the running callback's object, which outlives the
            // callback (LiveScope ends before it does) and lives on this thread; C passes the
            // token back only during the callback, one call at a time, so no other borrow of
            // it is active (a `mut` one is asked for only of objects lent mutably).
            Some(obj) => unsafe { &$($m)? *obj },
            None => $on_stale,
        }
    }};
}

/// [`live_or!`] for `&T`.
macro_rules! live_ref_or {
    ($($args:tt)*) => {
        live_or!([] $($args)*)
    };
}

/// [`live_or!`] for `&mut T`.
macro_rules! live_mut_or {
    ($($args:tt)*) => {
        live_or!([mut] $($args)*)
    };
}

pub(crate) use {
    ffi_guard, live_mut_or, live_or, live_ref_or, mut_or, nonnull_or, ref_or, slice_or,
};

/// Whether `n` elements of `T` can be one slice (at most `isize::MAX` bytes): a larger length
/// is a caller's bug (a negative `ssize_t` passed as `size_t`), refused before any use.
pub(crate) fn len_ok<T>(n: usize) -> bool {
    n <= isize::MAX as usize / std::mem::size_of::<T>().max(1)
}

/// Records a refused length; SHOAL_ERR_INVALID_ARG.
pub(crate) fn bad_len(name: &str, n: usize) -> crate::error::shoal_status {
    crate::error::invalid_arg(&format!(
        "{name} is {n}, larger than any object (a negative length passed as size_t?)"
    ))
}

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
