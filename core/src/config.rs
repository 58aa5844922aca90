//! Server configuration: one plain struct with engine defaults and chainable setters.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, Result};

/// Largest number of reactor threads (the reactor index is 8 bits of a [`crate::ConnId`]).
pub const MAX_THREADS: usize = 256;
/// Largest `read_buffer_size` and `pool_buffer_size` (64 MiB).
pub const MAX_BUFFER: usize = 64 << 20;
/// Largest `events_capacity`.
pub const MAX_EVENTS: usize = 1 << 20;
/// Largest pool `queue_capacity` (its slots are allocated up front).
pub const MAX_QUEUE: usize = 1 << 20;
/// Longest `keepalive` idle time the kernel takes.
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(32767);

/// Largest number of connection slots per reactor (24 bits of a [`crate::ConnId`]).
pub const MAX_SLOTS_PER_REACTOR: usize = 1 << 24;

/// Where handler callbacks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// On the connection's reactor thread: the fastest path, for handlers that never block.
    Inline,
    /// On a pool of `workers` threads fed by a queue of `queue_capacity` jobs, so handlers may
    /// block (a database call, a Python callback) without stalling a reactor, and at most
    /// `workers` run at once. Per connection, callbacks still run one at a time and in order.
    Pool {
        /// Worker threads.
        workers: usize,
        /// Jobs waiting for a worker, across all reactors, before reactors hold further jobs
        /// back and stop reading from the connections they belong to. At most
        /// [`MAX_QUEUE`].
        queue_capacity: usize,
    },
}

/// Everything a server can be tuned with. Build it with [`Config::new`] and the setters, or set
/// fields directly; [`crate::Server::bind`] validates it.
///
/// Sizes are in bytes, timeouts are `None` when disabled.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on (IPv4 or IPv6). Port 0 picks a free port, shared by all reactors.
    pub addr: SocketAddr,
    /// Reactor threads. Default: the number of CPUs (at most [`MAX_THREADS`]).
    pub threads: usize,
    /// Each reactor binds its own `SO_REUSEPORT` listener (the kernel spreads connections).
    /// When false, reactor 0 accepts for all and hands sockets round-robin to the others.
    pub reuse_port: bool,
    /// Listen backlog. Default 1024.
    pub backlog: i32,
    /// `TCP_NODELAY` on every connection. Default true.
    pub nodelay: bool,
    /// `SO_KEEPALIVE` with this idle time (1 s to 32767 s), if set. Default off.
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF`, if set. Default: the kernel's.
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF`, if set. Default: the kernel's.
    pub send_buffer_size: Option<usize>,
    /// Size of each reactor's scratch read buffer; one `read` takes at most this much.
    /// Default 64 KiB; at most [`MAX_BUFFER`].
    pub read_buffer_size: usize,
    /// Most unconsumed input one connection may hold before it is closed with
    /// `ReadOverflow`. Default 1 MiB.
    pub max_read_buffer: usize,
    /// Queued output above which the reactor stops reading from the connection. Default 1 MiB.
    pub write_high_watermark: usize,
    /// Queued output below which reading resumes and `on_drain` is called. Default 256 KiB.
    pub write_low_watermark: usize,
    /// Queued output above which the connection is closed with `WriteOverflow`. Default 16 MiB.
    pub max_write_buffer: usize,
    /// Close a connection after this long without traffic in either direction. With workers,
    /// it does not run while the connection's job runs or waits for the queue, and counts
    /// from the job's end. While the handler holds input (`Conn::pause_input`) it stands
    /// still unless queued output is stalled, and resuming moves it later by the hold.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose unconsumed input (a partial message) waited this long. With
    /// workers, it does not run while the connection's job runs or waits for the queue
    /// (`handler_timeout` bounds a job); it stands still while the handler holds input.
    pub read_timeout: Option<Duration>,
    /// Close a connection whose queued output made no progress for this long. Default none;
    /// an HTTP server's is [`HTTP_WRITE_TIMEOUT`](crate::http::HTTP_WRITE_TIMEOUT), which
    /// `HttpConfig::new` applies to an engine without one (set it to `None` afterwards to
    /// turn it off).
    pub write_timeout: Option<Duration>,
    /// With `write_timeout`: output that stays queued must also drain at this many bytes per
    /// second on average, after a first `write_timeout` of grace; a client that reads a few
    /// bytes at a time to dodge `write_timeout` (a slow-read attack) is closed with
    /// `WriteTimeout`. Default off.
    pub write_min_rate: Option<u64>,
    /// Give up on an outbound connection not established within this time. Default 10 s.
    pub connect_timeout: Duration,
    /// Connections across all reactors; at the limit accepting pauses (new connections wait in
    /// the backlog) and resumes below it. Default 1,048,576.
    pub max_connections: usize,
    /// After `stop()`, how long queued output may take to flush (and a running or waiting
    /// handler to answer: see `ServerHandle::stop`) before the remaining connections are
    /// closed. Default 5 s. A callback still running on a worker another grace period later
    /// is no longer waited for (`Server::wait` returns); its connection's `on_close` runs on
    /// that worker once it returns.
    pub shutdown_grace: Duration,
    /// How long a lingering close (`Conn::shutdown`) waits for the peer to close after the
    /// write side was shut down. Default 2 s.
    pub linger_timeout: Duration,
    /// How long accepting pauses after `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`. Default 100 ms.
    pub accept_backoff: Duration,
    /// Readiness events taken per `epoll_wait`. Default 1024; at most [`MAX_EVENTS`].
    pub events_capacity: usize,
    /// Reads per readiness event before other connections get a turn. Default 16.
    pub read_budget: usize,
    /// Capacity of each pooled buffer (output chunks, unconsumed-input tails). Default 16 KiB;
    /// at most [`MAX_BUFFER`].
    pub pool_buffer_size: usize,
    /// Free buffers each reactor keeps for reuse. Default 256.
    pub pool_max_free: usize,
    /// Where callbacks run. Default [`Dispatch::Inline`].
    pub dispatch: Dispatch,
    /// With [`Dispatch::Pool`]: input bytes waiting for a connection's busy worker above which
    /// the reactor stops reading that connection until the worker catches up. Default 1 MiB.
    pub max_pending_input: usize,
    /// With [`Dispatch::Pool`]: a callback running longer than this gets its connection closed
    /// with `HandlerTimeout` (the worker is not interrupted; the callback's later writes fail
    /// with `Closed`). `Conn::remaining` tells a callback how much is left. Refused by
    /// [`Config::validate`] with [`Dispatch::Inline`], where nothing could enforce it.
    pub handler_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
            reuse_port: true,
            backlog: 1024,
            nodelay: true,
            keepalive: None,
            recv_buffer_size: None,
            send_buffer_size: None,
            read_buffer_size: 64 * 1024,
            max_read_buffer: 1024 * 1024,
            write_high_watermark: 1024 * 1024,
            write_low_watermark: 256 * 1024,
            max_write_buffer: 16 * 1024 * 1024,
            idle_timeout: None,
            read_timeout: None,
            write_timeout: None,
            write_min_rate: None,
            connect_timeout: Duration::from_secs(10),
            max_connections: 1 << 20,
            shutdown_grace: Duration::from_secs(5),
            linger_timeout: Duration::from_secs(2),
            accept_backoff: Duration::from_millis(100),
            events_capacity: 1024,
            read_budget: 16,
            pool_buffer_size: 16 * 1024,
            pool_max_free: 256,
            dispatch: Dispatch::Inline,
            max_pending_input: 1024 * 1024,
            handler_timeout: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$m])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl Config {
    /// The defaults, listening on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Config {
            addr,
            ..Config::default()
        }
    }

    setters! {
        /// Sets [`Config::addr`].
        addr: SocketAddr,
        /// Sets [`Config::threads`].
        threads: usize,
        /// Sets [`Config::reuse_port`].
        reuse_port: bool,
        /// Sets [`Config::backlog`].
        backlog: i32,
        /// Sets [`Config::nodelay`].
        nodelay: bool,
        /// Sets [`Config::keepalive`].
        keepalive: Option<Duration>,
        /// Sets [`Config::recv_buffer_size`].
        recv_buffer_size: Option<usize>,
        /// Sets [`Config::send_buffer_size`].
        send_buffer_size: Option<usize>,
        /// Sets [`Config::read_buffer_size`].
        read_buffer_size: usize,
        /// Sets [`Config::max_read_buffer`].
        max_read_buffer: usize,
        /// Sets [`Config::write_high_watermark`].
        write_high_watermark: usize,
        /// Sets [`Config::write_low_watermark`].
        write_low_watermark: usize,
        /// Sets [`Config::max_write_buffer`].
        max_write_buffer: usize,
        /// Sets [`Config::idle_timeout`].
        idle_timeout: Option<Duration>,
        /// Sets [`Config::read_timeout`].
        read_timeout: Option<Duration>,
        /// Sets [`Config::write_timeout`].
        write_timeout: Option<Duration>,
        /// Sets [`Config::write_min_rate`].
        write_min_rate: Option<u64>,
        /// Sets [`Config::connect_timeout`].
        connect_timeout: Duration,
        /// Sets [`Config::max_connections`].
        max_connections: usize,
        /// Sets [`Config::shutdown_grace`].
        shutdown_grace: Duration,
        /// Sets [`Config::linger_timeout`].
        linger_timeout: Duration,
        /// Sets [`Config::accept_backoff`].
        accept_backoff: Duration,
        /// Sets [`Config::events_capacity`].
        events_capacity: usize,
        /// Sets [`Config::read_budget`].
        read_budget: usize,
        /// Sets [`Config::pool_buffer_size`].
        pool_buffer_size: usize,
        /// Sets [`Config::pool_max_free`].
        pool_max_free: usize,
        /// Sets [`Config::dispatch`].
        dispatch: Dispatch,
        /// Sets [`Config::max_pending_input`].
        max_pending_input: usize,
        /// Sets [`Config::handler_timeout`].
        handler_timeout: Option<Duration>,
    }

    /// Shorthand for `dispatch(Dispatch::Pool { workers, queue_capacity })`.
    #[must_use]
    pub fn workers(self, workers: usize, queue_capacity: usize) -> Self {
        self.dispatch(Dispatch::Pool {
            workers,
            queue_capacity,
        })
    }

    /// Checks every value; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        fn bad(msg: &str) -> Result<()> {
            Err(Error::InvalidConfig(msg.to_owned()))
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return bad("threads must be in 1..=256");
        }
        if self.backlog <= 0 {
            return bad("backlog must be positive");
        }
        if !(512..=MAX_BUFFER).contains(&self.read_buffer_size) {
            return bad("read_buffer_size must be in 512..=64 MiB");
        }
        if self.max_read_buffer == 0 {
            return bad("max_read_buffer must be positive");
        }
        if self.write_low_watermark > self.write_high_watermark {
            return bad("write_low_watermark must not exceed write_high_watermark");
        }
        if self.write_high_watermark > self.max_write_buffer {
            return bad("write_high_watermark must not exceed max_write_buffer");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be positive");
        }
        if self.events_capacity == 0 || self.events_capacity > MAX_EVENTS {
            return bad("events_capacity must be in 1..=1048576");
        }
        if self.read_budget == 0 {
            return bad("read_budget must be positive");
        }
        if !(256..=MAX_BUFFER).contains(&self.pool_buffer_size) {
            return bad("pool_buffer_size must be in 256..=64 MiB");
        }
        if let Some(k) = self.keepalive
            && !(Duration::from_secs(1)..=MAX_KEEPALIVE).contains(&k)
        {
            // The kernel takes whole seconds up to 32767 (TCP_KEEPIDLE).
            return bad("keepalive must be in 1 s..=32767 s");
        }
        if let Dispatch::Pool {
            workers,
            queue_capacity,
        } = self.dispatch
        {
            if workers == 0 || workers > 4096 {
                return bad("workers must be in 1..=4096");
            }
            if queue_capacity == 0 || queue_capacity > MAX_QUEUE {
                return bad("queue_capacity must be in 1..=1048576");
            }
        }
        if self.max_pending_input == 0 {
            return bad("max_pending_input must be positive");
        }
        if self.dispatch == Dispatch::Inline && self.handler_timeout.is_some() {
            // Nothing can stop a callback running on the reactor: refused rather than ignored.
            return bad(
                "handler_timeout applies to callbacks on workers (Dispatch::Pool), not inline ones",
            );
        }
        for (name, t) in [
            ("idle_timeout", self.idle_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("handler_timeout", self.handler_timeout),
        ] {
            if t == Some(Duration::ZERO) {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be positive (use None to disable)"
                )));
            }
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive");
        }
        if let Some(rate) = self.write_min_rate {
            if rate == 0 {
                return bad("write_min_rate must be positive (use None to disable)");
            }
            if self.write_timeout.is_none() {
                return bad("write_min_rate needs write_timeout (its grace period)");
            }
        }
        if self.accept_backoff.is_zero() {
            return bad("accept_backoff must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(Config::default().threads(0).validate().is_err());
        assert!(Config::default().threads(257).validate().is_err());
        for bad in [
            Config::default().read_buffer_size(usize::MAX),
            Config::default().pool_buffer_size((64 << 20) + 1),
            Config::default().events_capacity(usize::MAX),
            Config::default().workers(1, usize::MAX),
            Config::default().keepalive(Some(Duration::from_millis(500))),
            Config::default().keepalive(Some(Duration::from_secs(32768))),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        for fine in [
            Config::default().read_buffer_size(64 << 20),
            Config::default().events_capacity(1 << 20),
            Config::default().workers(1, 1 << 20),
            Config::default().keepalive(Some(Duration::from_secs(1))),
            Config::default().keepalive(Some(Duration::from_secs(32767))),
        ] {
            fine.validate().unwrap();
        }
        assert!(
            Config::default()
                .write_low_watermark(10)
                .write_high_watermark(5)
                .validate()
                .is_err()
        );
        assert!(
            Config::default()
                .idle_timeout(Some(Duration::ZERO))
                .validate()
                .is_err()
        );
        assert!(Config::default().max_write_buffer(1).validate().is_err());
        let timed = Config::default().handler_timeout(Some(Duration::from_secs(1)));
        let err = timed
            .clone()
            .dispatch(Dispatch::Inline)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("handler_timeout"), "{err}");
        timed.workers(1, 16).validate().unwrap();
        let rate = Config::default().write_min_rate(Some(1000));
        assert!(rate.clone().validate().is_err(), "needs write_timeout");
        assert!(
            rate.write_timeout(Some(Duration::from_secs(1)))
                .validate()
                .is_ok()
        );
        assert!(
            Config::default()
                .write_timeout(Some(Duration::from_secs(1)))
                .write_min_rate(Some(0))
                .validate()
                .is_err()
        );
    }
}
