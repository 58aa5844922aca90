//! HTTP/1.1 server on the stream layer.
//!
//! Requests are tokenized by `httparse` and checked against RFC 9112's framing rules (see
//! [`ParseError`] for everything rejected); a handler sees a [`Request`] borrowed from the
//! connection's input and answers through a [`Response`] serialized straight into the output
//! queue, or defers it to any thread. Keep-alive, pipelining (responses in order, one write per
//! batch), HTTP/1.0, HEAD, `Expect: 100-continue`, Content-Length and chunked request bodies,
//! chunked responses, limits (413, 414, 431), slow-client timeouts (header, body, keep-alive),
//! and lingering closes after errors (the client reads the 4xx instead of a reset).

mod chunked;
mod date;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod parse;
mod request;
mod response;
mod server;
mod stats;

pub use parse::{MAX_HEADERS, ParseError};
pub use request::{Request, Version};
pub use response::{BodyWaiter, ChunkedBody, Deferred, PreparedHeaders, Response};
pub use server::{
    HTTP_WRITE_TIMEOUT, HttpConfig, HttpHandler, HttpServer, HttpStatsHandle, MAX_BODY, MAX_HEAD,
};
pub use stats::HttpStats;
