//! HTTP counters: per reactor, cache-line separated, incremented by whichever thread runs the
//! connection's callbacks (a reactor, or workers in pool mode).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::parse::ParseError;

/// Why a connection's HTTP timer closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutKind {
    Header,
    Body,
    KeepAlive,
    /// A deferred answer outlived `response_timeout`.
    Response,
}

#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) responses: [AtomicU64; 5],
    pub(crate) keepalive_reuses: AtomicU64,
    pub(crate) parse_errors: [AtomicU64; ParseError::COUNT],
    pub(crate) incomplete: AtomicU64,
    pub(crate) timeouts: [AtomicU64; 4],
    pub(crate) continues: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) handler_failures: AtomicU64,
}

#[inline]
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn response(&self, status: u16) {
        if let Some(c) = self
            .responses
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            inc(c);
        }
    }

    pub(crate) fn timeout(&self, kind: TimeoutKind) {
        inc(&self.timeouts[kind as usize]);
    }
}

/// Counts of one pass over a connection's input, added to the shared counters once per pass
/// instead of one atomic operation per request.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) reuses: u64,
    pub(crate) responses: [u64; 5],
}

impl Tally {
    pub(crate) fn response(&mut self, status: u16) {
        if let Some(c) = self
            .responses
            .get_mut(usize::from(status / 100).wrapping_sub(1))
        {
            *c += 1;
        }
    }

    pub(crate) fn flush(&mut self, c: &Counters) {
        if self.requests > 0 {
            c.requests.fetch_add(self.requests, Relaxed);
        }
        if self.reuses > 0 {
            c.keepalive_reuses.fetch_add(self.reuses, Relaxed);
        }
        for (n, a) in self.responses.iter().zip(&c.responses) {
            if *n > 0 {
                a.fetch_add(*n, Relaxed);
            }
        }
        *self = Tally::default();
    }
}

/// A snapshot of the HTTP counters, summed over reactors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpStats {
    /// Requests parsed and handed to the handler.
    pub requests: u64,
    /// Responses by status class: index 0 is 1xx, 4 is 5xx (interim 100 Continue included).
    pub responses: [u64; 5],
    /// Requests after the first on a connection (keep-alive reuses).
    pub keepalive_reuses: u64,
    /// Rejected requests, indexed by [`ParseError::index`].
    pub parse_errors: [u64; ParseError::COUNT],
    /// Connections closed with an incomplete request (a body cut short by end-of-stream).
    pub incomplete: u64,
    /// Closed for `header_read_timeout`.
    pub header_timeouts: u64,
    /// Closed for `body_read_timeout`.
    pub body_timeouts: u64,
    /// Closed for `keepalive_timeout`.
    pub keepalive_timeouts: u64,
    /// Deferred answers given up at `response_timeout` (answered 503, or cut mid-stream).
    pub response_timeouts: u64,
    /// `100 Continue` interim responses sent.
    pub continues: u64,
    /// Responses deferred by handlers.
    pub deferred: u64,
    /// Handlers that panicked or returned without answering (answered with 500).
    pub handler_failures: u64,
}

impl HttpStats {
    /// Rejected requests of one kind.
    pub fn parse_errors(&self, kind: ParseError) -> u64 {
        self.parse_errors[kind.index()]
    }

    /// All rejected requests.
    pub fn parse_errors_total(&self) -> u64 {
        self.parse_errors.iter().sum()
    }

    pub(crate) fn add(&mut self, c: &Counters) {
        self.requests += c.requests.load(Relaxed);
        for (a, b) in self.responses.iter_mut().zip(&c.responses) {
            *a += b.load(Relaxed);
        }
        self.keepalive_reuses += c.keepalive_reuses.load(Relaxed);
        for (a, b) in self.parse_errors.iter_mut().zip(&c.parse_errors) {
            *a += b.load(Relaxed);
        }
        self.incomplete += c.incomplete.load(Relaxed);
        self.header_timeouts += c.timeouts[TimeoutKind::Header as usize].load(Relaxed);
        self.body_timeouts += c.timeouts[TimeoutKind::Body as usize].load(Relaxed);
        self.keepalive_timeouts += c.timeouts[TimeoutKind::KeepAlive as usize].load(Relaxed);
        self.response_timeouts += c.timeouts[TimeoutKind::Response as usize].load(Relaxed);
        self.continues += c.continues.load(Relaxed);
        self.deferred += c.deferred.load(Relaxed);
        self.handler_failures += c.handler_failures.load(Relaxed);
    }
}
