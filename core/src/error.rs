//! Errors returned by the engine's public API, and the reasons a connection closes.

use std::io;

/// The error type of every fallible call in `shoal-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection id names no live connection: it was closed, its slot was reused by a
    /// newer connection, or it was never issued by this server.
    #[error("connection is closed or the id is stale")]
    Closed,
    /// The server has been stopped (or is stopping) and takes no new work.
    #[error("server is stopped")]
    Stopped,
    /// Queuing the data would take the connection's output above `max_write_buffer`; the
    /// connection is being closed with [`CloseReason::WriteOverflow`].
    #[error("output queue would exceed max_write_buffer")]
    WriteOverflow,
    /// The server was already started.
    #[error("server is already running")]
    AlreadyStarted,
    /// A response could not be sent as asked (an invalid header, a response already started);
    /// nothing was written.
    #[error("invalid response: {0}")]
    InvalidResponse(&'static str),
    /// A configuration value is out of range; the message names it.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A reactor thread ended by panicking: an engine bug, never a handler panic (those are
    /// caught and close only their connection).
    #[error("reactor thread {0} panicked")]
    ReactorPanicked(usize),
    /// The call would wait for the thread making it: `wait`/`run` (or dropping a running
    /// server) from one of this server's own reactor or worker threads, i.e. from a callback.
    /// Stop the server from the callback and wait from another thread.
    #[error("called from one of this server's own threads (a callback); it would wait for itself")]
    WrongThread,
    /// The call is for a stream server's connections, and this is an HTTP server, whose
    /// layer owns each connection's input, output and timers: raw writes, a resume or a
    /// timer from outside would break its framing or the order of its responses.
    #[error("not available on an HTTP server: {0}")]
    WrongKind(&'static str),
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Why a connection closed, as passed to `Handler::on_close` and counted in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (end of stream) and the connection was then closed.
    PeerClosed,
    /// Closed gracefully by the application (`close`): queued output was flushed first.
    Closed,
    /// Aborted by the application (`abort`): queued output was discarded.
    Aborted,
    /// No traffic in either direction for `idle_timeout`.
    IdleTimeout,
    /// Unconsumed input (a partial message) waited longer than `read_timeout`.
    ReadTimeout,
    /// Queued output made no progress for `write_timeout` (a peer that does not read).
    WriteTimeout,
    /// A handler callback ran longer than `handler_timeout`, or a deferred HTTP answer was not
    /// complete within `response_timeout`.
    HandlerTimeout,
    /// An outbound connection was not established within `connect_timeout`.
    ConnectTimeout,
    /// A protocol layer rejected the peer's input.
    ProtocolError,
    /// Unconsumed input exceeded `max_read_buffer`.
    ReadOverflow,
    /// Queued output exceeded `max_write_buffer`.
    WriteOverflow,
    /// A handler callback panicked or reported failure.
    HandlerFailed,
    /// The server stopped; the connection was closed at the end of the grace period.
    Shutdown,
    /// An outbound connection attempt failed with this OS error number.
    ConnectFailed(i32),
    /// A socket operation failed with this OS error number (for example `ECONNRESET`).
    Io(i32),
}

impl CloseReason {
    /// Number of distinct reason kinds (the `Io` and `ConnectFailed` variants count once).
    pub const COUNT: usize = 15;

    /// Every reason kind, in [`CloseReason::index`] order (errno variants carry 0).
    pub const ALL: [CloseReason; Self::COUNT] = [
        CloseReason::PeerClosed,
        CloseReason::Closed,
        CloseReason::Aborted,
        CloseReason::IdleTimeout,
        CloseReason::ReadTimeout,
        CloseReason::WriteTimeout,
        CloseReason::HandlerTimeout,
        CloseReason::ConnectTimeout,
        CloseReason::ProtocolError,
        CloseReason::ReadOverflow,
        CloseReason::WriteOverflow,
        CloseReason::HandlerFailed,
        CloseReason::Shutdown,
        CloseReason::ConnectFailed(0),
        CloseReason::Io(0),
    ];

    /// A dense index in `0..COUNT`, stable across releases (used for stats arrays and the C
    /// reason codes).
    pub fn index(self) -> usize {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Closed => 1,
            CloseReason::Aborted => 2,
            CloseReason::IdleTimeout => 3,
            CloseReason::ReadTimeout => 4,
            CloseReason::WriteTimeout => 5,
            CloseReason::HandlerTimeout => 6,
            CloseReason::ConnectTimeout => 7,
            CloseReason::ProtocolError => 8,
            CloseReason::ReadOverflow => 9,
            CloseReason::WriteOverflow => 10,
            CloseReason::HandlerFailed => 11,
            CloseReason::Shutdown => 12,
            CloseReason::ConnectFailed(_) => 13,
            CloseReason::Io(_) => 14,
        }
    }

    /// A short snake_case name, stable across releases.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Closed => "closed",
            CloseReason::Aborted => "aborted",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ReadTimeout => "read_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::HandlerTimeout => "handler_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::ReadOverflow => "read_overflow",
            CloseReason::WriteOverflow => "write_overflow",
            CloseReason::HandlerFailed => "handler_failed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ConnectFailed(_) => "connect_failed",
            CloseReason::Io(_) => "io_error",
        }
    }

    /// The OS error number carried by `Io` and `ConnectFailed`, if any.
    pub fn errno(self) -> Option<i32> {
        match self {
            CloseReason::ConnectFailed(e) | CloseReason::Io(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this reason is one of the timeouts.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            CloseReason::IdleTimeout
                | CloseReason::ReadTimeout
                | CloseReason::WriteTimeout
                | CloseReason::HandlerTimeout
                | CloseReason::ConnectTimeout
        )
    }

    pub(crate) fn from_io(e: &std::io::Error) -> CloseReason {
        CloseReason::Io(e.raw_os_error().unwrap_or(0))
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.errno() {
            Some(e) => write!(
                f,
                "{} ({})",
                self.name(),
                std::io::Error::from_raw_os_error(e)
            ),
            None => f.write_str(self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_match_all() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: std::collections::HashSet<_> =
            CloseReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), CloseReason::COUNT);
    }
}
