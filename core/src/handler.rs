//! The callbacks an application implements.

use crate::conn::{Conn, ConnId};
use crate::error::CloseReason;

/// Connection callbacks, shared by all reactors (hence `Send + Sync`).
///
/// Each connection owns a `State`, created with `Default` before `on_open` and handed back by
/// value to `on_close`. Callbacks of one connection never run concurrently and always see its
/// events in order. With inline dispatch they run on the connection's reactor thread and must
/// not block.
///
/// Guarantees:
/// - `on_close` runs exactly once for every connection: every accepted connection and every id
///   returned by `connect` (even when the connection attempt fails), and it is the last call.
/// - `on_open` runs exactly once for every connection that became established, before any
///   other callback of that connection.
/// - A panic in a callback is caught: that connection is aborted with
///   [`CloseReason::HandlerFailed`], the failure is logged and counted, and nothing else is
///   affected.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state.
    type State: Default + Send + 'static;

    /// The connection is established (accepted, or an outbound connect completed).
    fn on_open(&self, conn: &mut Conn<'_>, state: &mut Self::State) {
        let _ = (conn, state);
    }

    /// Input arrived. `data` holds every unconsumed byte in order (what earlier calls left
    /// plus what was just read). Return how many bytes from the front were consumed; the rest
    /// is presented again, followed by new input, on the next call. Returning more than
    /// `data.len()` is a handler failure.
    fn on_data(&self, conn: &mut Conn<'_>, state: &mut Self::State, data: &[u8]) -> usize;

    /// Input paused with [`Conn::pause_input`] was resumed: `data` is the unconsumed input
    /// (possibly empty). Returns the bytes consumed, as `on_data`. The default presents
    /// non-empty input to `on_data`.
    fn on_resume(&self, conn: &mut Conn<'_>, state: &mut Self::State, data: &[u8]) -> usize {
        if data.is_empty() {
            0
        } else {
            self.on_data(conn, state, data)
        }
    }

    /// The peer shut down its sending side. Return `true` to keep the connection open for
    /// writing (finish answering, then call [`Conn::close`]); the default, `false`, closes it
    /// gracefully with [`CloseReason::PeerClosed`] once queued output is flushed.
    fn on_eof(&self, conn: &mut Conn<'_>, state: &mut Self::State) -> bool {
        let _ = (conn, state);
        false
    }

    /// Queued output went above `write_high_watermark` (reading paused) and has now drained
    /// below `write_low_watermark` (reading resumed).
    fn on_drain(&self, conn: &mut Conn<'_>, state: &mut Self::State) {
        let _ = (conn, state);
    }

    /// A timer set with [`Conn::set_timer`] or `ServerHandle::set_timer` fired; `tag` is the
    /// value given when it was set.
    fn on_timer(&self, conn: &mut Conn<'_>, state: &mut Self::State, tag: u64) {
        let _ = (conn, state, tag);
    }

    /// The connection is closed; its id is already stale. Last callback, called exactly once.
    fn on_close(&self, id: ConnId, state: Self::State, reason: CloseReason) {
        let _ = (id, state, reason);
    }

    /// Wraps the whole life of each thread that runs callbacks (every reactor thread, and in
    /// pool mode every worker), for handlers whose callbacks need a per-thread context that is
    /// costly to create: a Python binding registers the thread with the interpreter here once,
    /// instead of once per callback. It must call `run` exactly once. Default: calls it.
    fn thread_scope(&self, run: &mut dyn FnMut()) {
        run();
    }

    /// Pool mode: how many queued jobs (of any connections) a worker runs within one
    /// [`Handler::worker_scope`]. Default 1.
    fn worker_batch(&self) -> usize {
        1
    }

    /// Pool mode: wraps a worker's run of up to [`Handler::worker_batch`] jobs, for handlers
    /// whose callbacks need a per-thread context that is costly to enter (a Python binding
    /// attaches to the interpreter here once per batch instead of once per callback). It must
    /// call `run` exactly once. Default: calls it.
    fn worker_scope(&self, run: &mut dyn FnMut()) {
        run();
    }
}
