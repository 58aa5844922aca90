//! `shoal_config`: every engine, pool and HTTP option, set by number.
//!
//! Options are numbered constants (`SHOAL_OPT_*`) with a `uint64_t` value each (sizes in
//! bytes, times in milliseconds, booleans 0/1), so new options never change a struct layout.

use std::ffi::c_char;
use std::time::Duration;

use shoal_core::Config;
use shoal_core::http::HttpConfig;

use crate::boundary::{ffi_guard, mut_or, ref_or, slice_or};
use crate::error::{SHOAL_OK, invalid_arg, shoal_status};

/// An option number for shoal_config_set() and shoal_config_get().
#[allow(non_camel_case_types)]
pub type shoal_option = u32;

/// Reactor threads (default: the number of CPUs).
pub const SHOAL_OPT_THREADS: shoal_option = 1;
/// 1: one SO_REUSEPORT listener per reactor (default); 0: one listener, sockets handed out
/// round-robin.
pub const SHOAL_OPT_REUSE_PORT: shoal_option = 2;
/// Listen backlog, 1 to INT_MAX (default 1024; above INT_MAX shoal_config_set() refuses it
/// at once with SHOAL_ERR_INVALID_ARG, as it cannot be stored).
pub const SHOAL_OPT_BACKLOG: shoal_option = 3;
/// TCP_NODELAY on every connection, 0 or 1 (default 1).
pub const SHOAL_OPT_NODELAY: shoal_option = 4;
/// SO_KEEPALIVE idle time in ms, 1000 to 32767000 (whole seconds); 0 disables (default 0).
pub const SHOAL_OPT_KEEPALIVE_MS: shoal_option = 5;
/// SO_RCVBUF in bytes; 0 keeps the kernel's (default 0).
pub const SHOAL_OPT_RECV_BUFFER: shoal_option = 6;
/// SO_SNDBUF in bytes; 0 keeps the kernel's (default 0).
pub const SHOAL_OPT_SEND_BUFFER: shoal_option = 7;
/// Bytes taken by one read, 512 to 64 MiB (default 65536).
pub const SHOAL_OPT_READ_BUFFER_SIZE: shoal_option = 8;
/// Most unconsumed input per connection (default 1 MiB; raised for HTTP servers to hold a
/// head and a body).
pub const SHOAL_OPT_MAX_READ_BUFFER: shoal_option = 9;
/// Queued output above which reading pauses (default 1 MiB).
pub const SHOAL_OPT_WRITE_HIGH_WATERMARK: shoal_option = 10;
/// Queued output below which reading resumes and on_drain runs (default 256 KiB).
pub const SHOAL_OPT_WRITE_LOW_WATERMARK: shoal_option = 11;
/// Queued output above which the connection closes (default 16 MiB).
pub const SHOAL_OPT_MAX_WRITE_BUFFER: shoal_option = 12;
/// Close connections without traffic for this many ms; 0 disables (default 0). It stands
/// still while the handler holds input (shoal_conn_pause_input()) unless output is stalled.
pub const SHOAL_OPT_IDLE_TIMEOUT_MS: shoal_option = 13;
/// Close when unconsumed input waits this many ms; 0 disables (default 0). It stands still
/// while the handler holds input.
pub const SHOAL_OPT_READ_TIMEOUT_MS: shoal_option = 14;
/// Close when queued output makes no progress for this many ms; 0 disables. Default: 60000
/// for an HTTP server (a client that stops reading is closed), none for a stream server
/// unless SHOAL_OPT_WRITE_MIN_RATE is set (shoal_config_get() reports the HTTP default).
pub const SHOAL_OPT_WRITE_TIMEOUT_MS: shoal_option = 15;
/// Give up outbound connects after this many ms (default 10000).
pub const SHOAL_OPT_CONNECT_TIMEOUT_MS: shoal_option = 16;
/// Connections across reactors before accepting pauses (default 1048576).
pub const SHOAL_OPT_MAX_CONNECTIONS: shoal_option = 17;
/// After stop, ms queued output may take to flush (default 5000).
pub const SHOAL_OPT_SHUTDOWN_GRACE_MS: shoal_option = 18;
/// Lingering close: ms to wait for the peer after shutting down writing (default 2000).
pub const SHOAL_OPT_LINGER_TIMEOUT_MS: shoal_option = 19;
/// Pause after accept fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM), in ms
/// (default 100).
pub const SHOAL_OPT_ACCEPT_BACKOFF_MS: shoal_option = 20;
/// Readiness events per epoll_wait, at most 1048576 (default 1024).
pub const SHOAL_OPT_EVENTS_CAPACITY: shoal_option = 21;
/// Reads per readiness event before other connections get a turn (default 16).
pub const SHOAL_OPT_READ_BUDGET: shoal_option = 22;
/// Capacity of each pooled buffer, 256 to 64 MiB (default 16384).
pub const SHOAL_OPT_POOL_BUFFER_SIZE: shoal_option = 23;
/// Free buffers each reactor keeps (default 256).
pub const SHOAL_OPT_POOL_MAX_FREE: shoal_option = 24;
/// Worker threads for callbacks; 0 runs them on the reactors (inline, default 0).
pub const SHOAL_OPT_WORKERS: shoal_option = 25;
/// Worker queue capacity, at most 1048576 (default 1024; used when SHOAL_OPT_WORKERS > 0).
pub const SHOAL_OPT_QUEUE_CAPACITY: shoal_option = 26;
/// Input waiting for a busy worker above which reading pauses (default 1 MiB).
pub const SHOAL_OPT_MAX_PENDING_INPUT: shoal_option = 27;
/// Close connections whose worker callback runs longer, in ms; 0 disables (default 0).
/// Needs SHOAL_OPT_WORKERS > 0: an inline server refuses it (SHOAL_ERR_INVALID_CONFIG).
pub const SHOAL_OPT_HANDLER_TIMEOUT_MS: shoal_option = 28;
/// With SHOAL_OPT_WRITE_TIMEOUT_MS: queued output must also drain at this many bytes/s on
/// average after a first write timeout of grace (slow-read defence); 0 disables (default 0).
pub const SHOAL_OPT_WRITE_MIN_RATE: shoal_option = 29;
/// HTTP: largest request head, bytes: 64 to 64 MiB (default 16384).
pub const SHOAL_OPT_HTTP_MAX_HEADER_BYTES: shoal_option = 100;
/// HTTP: most header fields, at most 256 (default 64).
pub const SHOAL_OPT_HTTP_MAX_HEADERS: shoal_option = 101;
/// HTTP: longest request target (default 8192).
pub const SHOAL_OPT_HTTP_MAX_TARGET_LEN: shoal_option = 102;
/// HTTP: largest request body, held whole in memory: at most 4 GiB (default 16 MiB).
pub const SHOAL_OPT_HTTP_MAX_BODY_SIZE: shoal_option = 103;
/// HTTP: longest chunk-size line (default 4096).
pub const SHOAL_OPT_HTTP_MAX_CHUNK_LINE: shoal_option = 104;
/// HTTP: requests handled per batch of input (default 64).
pub const SHOAL_OPT_HTTP_MAX_PIPELINED: shoal_option = 105;
/// HTTP: close after this many requests; 0 means no limit (default 0).
pub const SHOAL_OPT_HTTP_MAX_REQUESTS_PER_CONNECTION: shoal_option = 106;
/// HTTP: a request head must arrive within this many ms of its first byte (default 10000).
pub const SHOAL_OPT_HTTP_HEADER_TIMEOUT_MS: shoal_option = 107;
/// HTTP: longest wait between body reads, ms (default 30000).
pub const SHOAL_OPT_HTTP_BODY_TIMEOUT_MS: shoal_option = 108;
/// HTTP: longest idle time between requests, ms (default 60000).
pub const SHOAL_OPT_HTTP_KEEPALIVE_TIMEOUT_MS: shoal_option = 109;
/// HTTP: a body must also arrive at this many bytes/s on average after a first body timeout
/// of grace (slow-POST defence); 0 disables (default 500).
pub const SHOAL_OPT_HTTP_BODY_MIN_RATE: shoal_option = 110;
/// HTTP: longest time from a complete request to the end of an answer given later
/// (shoal_response_defer()), ms; 0 disables (default 0). Past it the client gets a 503 and
/// the connection closes, or a stream under way is cut; a later answer fails with
/// SHOAL_ERR_CLOSED.
pub const SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS: shoal_option = 111;

/// Server configuration: created with defaults by shoal_config_new(), changed with the
/// setters, read by shoal_server_new()/shoal_http_server_new() (which copy it), freed with
/// shoal_config_free(). Not thread-safe: use one thread at a time.
#[derive(Debug, Clone)]
pub struct shoal_config {
    pub(crate) http: HttpConfig,
    pub(crate) workers: usize,
    pub(crate) queue_capacity: usize,
    /// SHOAL_OPT_WRITE_TIMEOUT_MS was set: otherwise a stream server has none (an HTTP
    /// server keeps its default).
    pub(crate) write_timeout_set: bool,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn opt_ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| ms(v))
}

fn get_ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl shoal_config {
    fn set(&mut self, opt: shoal_option, v: u64) -> Result<(), String> {
        let n = usize::try_from(v).map_err(|_| "value does not fit in size_t".to_owned())?;
        match opt {
            SHOAL_OPT_THREADS => self.http.engine.threads = n,
            SHOAL_OPT_REUSE_PORT => self.http.engine.reuse_port = v != 0,
            SHOAL_OPT_BACKLOG => {
                self.http.engine.backlog =
                    i32::try_from(v).map_err(|_| "backlog too large".to_owned())?
            }
            SHOAL_OPT_NODELAY => self.http.engine.nodelay = v != 0,
            SHOAL_OPT_KEEPALIVE_MS => self.http.engine.keepalive = opt_ms(v),
            SHOAL_OPT_RECV_BUFFER => self.http.engine.recv_buffer_size = (n > 0).then_some(n),
            SHOAL_OPT_SEND_BUFFER => self.http.engine.send_buffer_size = (n > 0).then_some(n),
            SHOAL_OPT_READ_BUFFER_SIZE => self.http.engine.read_buffer_size = n,
            SHOAL_OPT_MAX_READ_BUFFER => self.http.engine.max_read_buffer = n,
            SHOAL_OPT_WRITE_HIGH_WATERMARK => self.http.engine.write_high_watermark = n,
            SHOAL_OPT_WRITE_LOW_WATERMARK => self.http.engine.write_low_watermark = n,
            SHOAL_OPT_MAX_WRITE_BUFFER => self.http.engine.max_write_buffer = n,
            SHOAL_OPT_IDLE_TIMEOUT_MS => self.http.engine.idle_timeout = opt_ms(v),
            SHOAL_OPT_READ_TIMEOUT_MS => self.http.engine.read_timeout = opt_ms(v),
            SHOAL_OPT_WRITE_TIMEOUT_MS => {
                self.http.engine.write_timeout = opt_ms(v);
                self.write_timeout_set = true;
            }
            SHOAL_OPT_CONNECT_TIMEOUT_MS => self.http.engine.connect_timeout = ms(v),
            SHOAL_OPT_MAX_CONNECTIONS => self.http.engine.max_connections = n,
            SHOAL_OPT_SHUTDOWN_GRACE_MS => self.http.engine.shutdown_grace = ms(v),
            SHOAL_OPT_LINGER_TIMEOUT_MS => self.http.engine.linger_timeout = ms(v),
            SHOAL_OPT_ACCEPT_BACKOFF_MS => self.http.engine.accept_backoff = ms(v),
            SHOAL_OPT_EVENTS_CAPACITY => self.http.engine.events_capacity = n,
            SHOAL_OPT_READ_BUDGET => self.http.engine.read_budget = n,
            SHOAL_OPT_POOL_BUFFER_SIZE => self.http.engine.pool_buffer_size = n,
            SHOAL_OPT_POOL_MAX_FREE => self.http.engine.pool_max_free = n,
            SHOAL_OPT_WORKERS => self.workers = n,
            SHOAL_OPT_QUEUE_CAPACITY => self.queue_capacity = n,
            SHOAL_OPT_MAX_PENDING_INPUT => self.http.engine.max_pending_input = n,
            SHOAL_OPT_HANDLER_TIMEOUT_MS => self.http.engine.handler_timeout = opt_ms(v),
            SHOAL_OPT_WRITE_MIN_RATE => self.http.engine.write_min_rate = (v > 0).then_some(v),
            SHOAL_OPT_HTTP_MAX_HEADER_BYTES => self.http.max_header_bytes = n,
            SHOAL_OPT_HTTP_MAX_HEADERS => self.http.max_headers = n,
            SHOAL_OPT_HTTP_MAX_TARGET_LEN => self.http.max_target_len = n,
            SHOAL_OPT_HTTP_MAX_BODY_SIZE => self.http.max_body_size = n,
            SHOAL_OPT_HTTP_MAX_CHUNK_LINE => self.http.max_chunk_line = n,
            SHOAL_OPT_HTTP_MAX_PIPELINED => self.http.max_pipelined = n,
            SHOAL_OPT_HTTP_MAX_REQUESTS_PER_CONNECTION => {
                self.http.max_requests_per_connection = (v > 0).then_some(v)
            }
            SHOAL_OPT_HTTP_HEADER_TIMEOUT_MS => self.http.header_read_timeout = ms(v),
            SHOAL_OPT_HTTP_BODY_TIMEOUT_MS => self.http.body_read_timeout = ms(v),
            SHOAL_OPT_HTTP_KEEPALIVE_TIMEOUT_MS => self.http.keepalive_timeout = ms(v),
            SHOAL_OPT_HTTP_BODY_MIN_RATE => self.http.body_min_rate = (v > 0).then_some(v),
            SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS => self.http.response_timeout = opt_ms(v),
            _ => return Err(format!("unknown option {opt}")),
        }
        Ok(())
    }

    fn get(&self, opt: shoal_option) -> Option<u64> {
        let e = &self.http.engine;
        let h = &self.http;
        let u = |n: usize| n as u64;
        Some(match opt {
            SHOAL_OPT_THREADS => u(e.threads),
            SHOAL_OPT_REUSE_PORT => u64::from(e.reuse_port),
            SHOAL_OPT_BACKLOG => e.backlog as u64,
            SHOAL_OPT_NODELAY => u64::from(e.nodelay),
            SHOAL_OPT_KEEPALIVE_MS => get_ms(e.keepalive),
            SHOAL_OPT_RECV_BUFFER => u(e.recv_buffer_size.unwrap_or(0)),
            SHOAL_OPT_SEND_BUFFER => u(e.send_buffer_size.unwrap_or(0)),
            SHOAL_OPT_READ_BUFFER_SIZE => u(e.read_buffer_size),
            SHOAL_OPT_MAX_READ_BUFFER => u(e.max_read_buffer),
            SHOAL_OPT_WRITE_HIGH_WATERMARK => u(e.write_high_watermark),
            SHOAL_OPT_WRITE_LOW_WATERMARK => u(e.write_low_watermark),
            SHOAL_OPT_MAX_WRITE_BUFFER => u(e.max_write_buffer),
            SHOAL_OPT_IDLE_TIMEOUT_MS => get_ms(e.idle_timeout),
            SHOAL_OPT_READ_TIMEOUT_MS => get_ms(e.read_timeout),
            SHOAL_OPT_WRITE_TIMEOUT_MS => get_ms(e.write_timeout),
            SHOAL_OPT_CONNECT_TIMEOUT_MS => get_ms(Some(e.connect_timeout)),
            SHOAL_OPT_MAX_CONNECTIONS => u(e.max_connections),
            SHOAL_OPT_SHUTDOWN_GRACE_MS => get_ms(Some(e.shutdown_grace)),
            SHOAL_OPT_LINGER_TIMEOUT_MS => get_ms(Some(e.linger_timeout)),
            SHOAL_OPT_ACCEPT_BACKOFF_MS => get_ms(Some(e.accept_backoff)),
            SHOAL_OPT_EVENTS_CAPACITY => u(e.events_capacity),
            SHOAL_OPT_READ_BUDGET => u(e.read_budget),
            SHOAL_OPT_POOL_BUFFER_SIZE => u(e.pool_buffer_size),
            SHOAL_OPT_POOL_MAX_FREE => u(e.pool_max_free),
            SHOAL_OPT_WORKERS => u(self.workers),
            SHOAL_OPT_QUEUE_CAPACITY => u(self.queue_capacity),
            SHOAL_OPT_MAX_PENDING_INPUT => u(e.max_pending_input),
            SHOAL_OPT_HANDLER_TIMEOUT_MS => get_ms(e.handler_timeout),
            SHOAL_OPT_WRITE_MIN_RATE => e.write_min_rate.unwrap_or(0),
            SHOAL_OPT_HTTP_MAX_HEADER_BYTES => u(h.max_header_bytes),
            SHOAL_OPT_HTTP_MAX_HEADERS => u(h.max_headers),
            SHOAL_OPT_HTTP_MAX_TARGET_LEN => u(h.max_target_len),
            SHOAL_OPT_HTTP_MAX_BODY_SIZE => u(h.max_body_size),
            SHOAL_OPT_HTTP_MAX_CHUNK_LINE => u(h.max_chunk_line),
            SHOAL_OPT_HTTP_MAX_PIPELINED => u(h.max_pipelined),
            SHOAL_OPT_HTTP_MAX_REQUESTS_PER_CONNECTION => {
                h.max_requests_per_connection.unwrap_or(0)
            }
            SHOAL_OPT_HTTP_HEADER_TIMEOUT_MS => get_ms(Some(h.header_read_timeout)),
            SHOAL_OPT_HTTP_BODY_TIMEOUT_MS => get_ms(Some(h.body_read_timeout)),
            SHOAL_OPT_HTTP_KEEPALIVE_TIMEOUT_MS => get_ms(Some(h.keepalive_timeout)),
            SHOAL_OPT_HTTP_BODY_MIN_RATE => h.body_min_rate.unwrap_or(0),
            SHOAL_OPT_HTTP_RESPONSE_TIMEOUT_MS => get_ms(h.response_timeout),
            _ => return None,
        })
    }

    /// The engine configuration of a stream server.
    pub(crate) fn build_stream(&self) -> Config {
        let mut engine = self.build().engine;
        // The HTTP default stays when a minimum write rate asks for its grace period, so a
        // config shoal_config_validate() passes builds a stream server too.
        if !self.write_timeout_set && engine.write_min_rate.is_none() {
            engine.write_timeout = None;
        }
        engine
    }

    /// The engine and HTTP configuration this describes, with dispatch applied.
    pub(crate) fn build(&self) -> HttpConfig {
        let mut h = self.http.clone();
        if self.workers > 0 {
            h.engine = h.engine.workers(self.workers, self.queue_capacity);
        }
        h
    }
}

/// A new configuration with the defaults, listening on 127.0.0.1 on a free port. Returns NULL
/// only if memory is exhausted. Free it with shoal_config_free().
#[unsafe(no_mangle)]
pub extern "C" fn shoal_config_new() -> *mut shoal_config {
    ffi_guard!(std::ptr::null_mut(), {
        Box::into_raw(Box::new(shoal_config {
            http: HttpConfig::new(Config::default()),
            workers: 0,
            queue_capacity: 1024,
            write_timeout_set: false,
        }))
    })
}

/// Frees a configuration (NULL is ignored).
///
/// # Safety
/// `config` is NULL or a pointer returned by shoal_config_new() and not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_config_free(config: *mut shoal_config) {
    ffi_guard!((), {
        if !config.is_null() {
            // SAFETY: the caller passes a pointer from shoal_config_new(), freed only here.
            drop(unsafe { Box::from_raw(config) });
        }
    })
}

/// Sets the listen address from text such as `127.0.0.1:8080` or `[::1]:0` (`len` bytes,
/// no NUL needed). Port 0 picks a free port. Fails with SHOAL_ERR_INVALID_ARG for text that
/// is not an IP address and port.
///
/// # Safety
/// `config` from shoal_config_new(); `addr` readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_config_set_addr(
    config: *mut shoal_config,
    addr: *const c_char,
    len: usize,
) -> shoal_status {
    ffi_guard!({
        let config = mut_or!(config);
        let text = slice_or!(addr.cast::<u8>(), len);
        let parsed = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<std::net::SocketAddr>().ok());
        match parsed {
            Some(a) => {
                config.http.engine.addr = a;
                SHOAL_OK
            }
            None => invalid_arg(&format!(
                "{:?} is not an IP address and port",
                String::from_utf8_lossy(text)
            )),
        }
    })
}

/// Sets option `option` (one of SHOAL_OPT_*) to `value`. Fails with SHOAL_ERR_INVALID_ARG
/// for an unknown option; ranges are checked when the server is created.
///
/// # Safety
/// `config` from shoal_config_new().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_config_set(
    config: *mut shoal_config,
    option: shoal_option,
    value: u64,
) -> shoal_status {
    ffi_guard!({
        let config = mut_or!(config);
        match config.set(option, value) {
            Ok(()) => SHOAL_OK,
            Err(msg) => invalid_arg(&msg),
        }
    })
}

/// Reads option `option` into `*out`.
///
/// # Safety
/// `config` from shoal_config_new(); `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_config_get(
    config: *const shoal_config,
    option: shoal_option,
    out: *mut u64,
) -> shoal_status {
    ffi_guard!({
        let config = ref_or!(config);
        let out = mut_or!(out);
        match config.get(option) {
            Some(v) => {
                *out = v;
                SHOAL_OK
            }
            None => invalid_arg(&format!("unknown option {option}")),
        }
    })
}

/// Checks every value as shoal_http_server_new() would (the engine's options and the HTTP
/// ones); SHOAL_ERR_INVALID_CONFIG names the first bad one in shoal_last_error(). A config
/// that passes is accepted by shoal_server_new() too, which ignores the HTTP options.
///
/// # Safety
/// `config` from shoal_config_new().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shoal_config_validate(config: *const shoal_config) -> shoal_status {
    ffi_guard!({
        let config = ref_or!(config);
        crate::error::result(config.build().validate())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_round_trips() {
        let mut c = shoal_config {
            http: HttpConfig::new(Config::default()),
            workers: 0,
            queue_capacity: 1024,
            write_timeout_set: false,
        };
        for opt in (1..=29).chain(100..=111) {
            let before = c
                .get(opt)
                .unwrap_or_else(|| panic!("option {opt} readable"));
            let v = if opt == SHOAL_OPT_REUSE_PORT || opt == SHOAL_OPT_NODELAY {
                1 - before.min(1)
            } else {
                before + 7
            };
            c.set(opt, v).unwrap();
            assert_eq!(c.get(opt), Some(v), "option {opt}");
        }
        assert!(c.set(999, 1).is_err());
        assert!(c.get(30).is_none());
        assert!(c.get(112).is_none());
    }
}
