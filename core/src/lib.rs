//! # shoal-core
//!
//! The engine of shoal: a few reactor threads serve very many TCP connections, and
//! application code handles them through the callbacks of a [`Handler`].
//!
//! ## Model
//!
//! - **Reactors.** [`Config::threads`] threads, each with its own `epoll` instance, its own
//!   `SO_REUSEPORT` listener on the shared address, its connections, timer wheel, buffer pool
//!   and inbox. Connections never migrate, and nothing on the per-message path locks.
//! - **Callbacks** run on the connection's reactor thread, one at a time per connection, in
//!   event order. They receive a [`Conn`] to write, close and set timers, and the per-connection
//!   `State` of the handler. Input is a borrowed slice; the handler says how much it consumed
//!   and the rest is presented again with the next bytes.
//! - **Dispatch.** With [`Dispatch::Pool`] callbacks run on worker threads instead, so they may
//!   block; a connection has at most one job at a time (order is kept, events that arrive
//!   meanwhile batch into its next job), a full queue or too much input waiting for a worker
//!   pauses reading that connection, and `handler_timeout` closes a connection whose callback
//!   runs too long ([`Conn::remaining`] tells the callback its time left).
//! - **Output** written during callbacks is queued and flushed once per readiness event. Above
//!   `write_high_watermark` reading pauses; below `write_low_watermark` it resumes and
//!   [`Handler::on_drain`] runs; above `max_write_buffer` the connection closes.
//! - **Ids.** A [`ConnId`] packs reactor, slot and generation; every operation checks it, so a
//!   stale id fails with [`Error::Closed`] and never reaches a newer connection.
//! - **Any thread** can write, close, set timers, connect, read [`Stats`] and stop through a
//!   [`ServerHandle`]; such calls travel through the owning reactor's inbox.
//! - **Time.** One hierarchical timing wheel per reactor, millisecond ticks, O(1) insert and
//!   cancel: idle, read (a partial message waiting), write (output not progressing) and
//!   connect timeouts, and user timers.
//! - **Faults.** A panicking callback closes only its connection ([`CloseReason::HandlerFailed`]);
//!   running out of descriptors pauses accepting for `accept_backoff` instead of spinning;
//!   `max_connections` pauses accepting (new connections wait in the backlog).
//!
//! Linux only (edge-triggered `epoll`, `MSG_NOSIGNAL`, `SO_REUSEPORT`).

#![deny(missing_docs)]

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("shoal-core supports 64-bit Linux only");

mod buf;
mod config;
mod conn;
mod error;
mod handler;
pub mod http;
mod pool;
mod reactor;
mod server;
mod stats;
mod timer;

pub use config::{
    Config, Dispatch, MAX_BUFFER, MAX_EVENTS, MAX_KEEPALIVE, MAX_QUEUE, MAX_SLOTS_PER_REACTOR,
    MAX_THREADS,
};
pub use conn::{AddrPair, Conn, ConnId};
pub use error::{CloseReason, Error, Result};
pub use handler::Handler;
pub use server::{PacedWriter, Server, ServerHandle};
pub use stats::Stats;
