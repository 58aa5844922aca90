//! The HTTP/1.1 server: a stream [`Handler`] that parses requests out of each connection's
//! input, calls an [`HttpHandler`] per request, and keeps the connection's HTTP state
//! (keep-alive, pipelining, bodies, timeouts) in the handler state.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::chunked::{ChunkedDecoder, Progress};
use super::date::{DATE_LINE_LEN, with_date};
use super::parse::{
    FieldSlots, Framing, Head, Limits, MAX_HEADERS, ParseError, check_incomplete, parse_head,
};
use super::request::Request;
use super::response::{
    Body, COUNTED, DeferState, HEAD_REQUEST, Info, Mark, Outcome, Response, SENT, STARTED,
    TIMED_OUT, is_field_text, take_mark, write_head,
};
use super::stats::{Counters, HttpStats, Tally, TimeoutKind, inc};
use crate::config::Config;
use crate::conn::Conn;
use crate::error::{CloseReason, Error, Result};
use crate::handler::Handler;
use crate::reactor::CloseMode;
use crate::server::{Server, ServerHandle};
use crate::stats::Stats;

/// Answers requests. Called once per request, with the connection's callbacks (on its
/// reactor thread, or a worker in pool mode).
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers `req` through `res`: at once ([`Response::send`]), streamed
    /// ([`Response::start_chunked`]), or later from any thread ([`Response::defer`]). A panic
    /// is answered with 500 and closes this connection only; after `defer`, the
    /// [`Deferred`](super::Deferred)'s answer goes out instead (a 500 if it was dropped), then
    /// the connection closes.
    fn handle(&self, req: &Request<'_>, res: &mut Response<'_, '_>);

    /// As [`Handler::thread_scope`].
    fn thread_scope(&self, run: &mut dyn FnMut()) {
        run();
    }

    /// As [`Handler::worker_batch`].
    fn worker_batch(&self) -> usize {
        1
    }

    /// As [`Handler::worker_scope`].
    fn worker_scope(&self, run: &mut dyn FnMut()) {
        run();
    }
}

impl<F> HttpHandler for F
where
    F: Fn(&Request<'_>, &mut Response<'_, '_>) + Send + Sync + 'static,
{
    fn handle(&self, req: &Request<'_>, res: &mut Response<'_, '_>) {
        self(req, res)
    }
}

/// The largest [`HttpConfig::max_header_bytes`]: 64 MiB.
pub const MAX_HEAD: usize = 64 << 20;
/// The largest [`HttpConfig::max_body_size`]: 4 GiB.
pub const MAX_BODY: u64 = 4 << 30;

/// HTTP limits and timeouts, plus the engine configuration underneath.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The engine's configuration (address, threads, dispatch, buffers, write timeout…).
    pub engine: Config,
    /// Largest request head (request line and fields); more is answered 431. Default 16 KiB;
    /// at most [`MAX_HEAD`].
    pub max_header_bytes: usize,
    /// Most header fields (at most 256); more is answered 431. Default 64.
    pub max_headers: usize,
    /// Longest request target; longer is answered 414. Default 8 KiB.
    pub max_target_len: usize,
    /// Largest request body, declared or de-chunked; larger is answered 413 (before the body
    /// is read when declared). Default 16 MiB; at most [`MAX_BODY`] (a body is held whole in
    /// the connection's read buffer).
    pub max_body_size: usize,
    /// Longest chunk-size line, extensions included. Default 4 KiB.
    pub max_chunk_line: usize,
    /// Requests handled per batch of input before other connections get a turn; also the most
    /// responses a pipelining client can have queued by one read. Default 64.
    pub max_pipelined: usize,
    /// Close a connection after this many requests (the last response says so). Default none.
    /// A connection counts up to 2^32 - 1 requests, so a larger value closes none.
    pub max_requests_per_connection: Option<u64>,
    /// A request head must arrive within this time of its first byte (slowloris); also the
    /// time a new connection has to send its first request. Answered 408. Default 10 s.
    pub header_read_timeout: Duration,
    /// Longest wait between two reads of a request body. Answered 408. Default 30 s.
    pub body_read_timeout: Duration,
    /// A body must also arrive at this many bytes per second on average, after a first
    /// `body_read_timeout` of grace (each `body_min_rate` bytes received buy another second):
    /// a client trickling a byte now and then to dodge `body_read_timeout` (a slow-POST
    /// attack) is answered 408. `None` turns it off. Default 500 bytes/s.
    pub body_min_rate: Option<u64>,
    /// Longest idle time between requests; never counts toward the next head's time.
    /// Default 60 s.
    pub keepalive_timeout: Duration,
    /// Longest time from a complete request to the end of its answer, for answers given
    /// later ([`Response::defer`](super::Response::defer): a proxy whose upstream hangs, a
    /// `Deferred` leaked by the application). Past it the client gets a 503 and the
    /// connection closes, or, when a streamed answer is under way, the connection is cut
    /// (the body never looks complete); a later answer fails with `Closed`. An answer given
    /// inside the handler is bounded by the handler itself (`handler_timeout` in pool mode).
    /// Default none.
    pub response_timeout: Option<Duration>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            engine: Config::default().write_timeout(Some(HTTP_WRITE_TIMEOUT)),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_target_len: 8 * 1024,
            max_body_size: 16 * 1024 * 1024,
            max_chunk_line: 4096,
            max_pipelined: 64,
            max_requests_per_connection: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            body_min_rate: Some(500),
            keepalive_timeout: Duration::from_secs(60),
            response_timeout: None,
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

/// The engine's `write_timeout` of an HTTP server unless it sets its own: a client that
/// stops reading (a slow-read attack, or a pipelining client that never reads its answers)
/// is closed once its queued output made no progress this long, instead of holding its
/// connection and up to `max_write_buffer` forever. 60 s, as nginx's `send_timeout`.
pub const HTTP_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpConfig {
    /// The defaults, on the engine configuration `engine`; an engine without a
    /// `write_timeout` gets [`HTTP_WRITE_TIMEOUT`] (set `engine.write_timeout` to `None`
    /// afterwards to turn it off).
    pub fn new(mut engine: Config) -> Self {
        engine.write_timeout.get_or_insert(HTTP_WRITE_TIMEOUT);
        HttpConfig {
            engine,
            ..HttpConfig::default()
        }
    }

    setters! {
        /// Sets [`HttpConfig::engine`].
        engine: Config,
        /// Sets [`HttpConfig::max_header_bytes`].
        max_header_bytes: usize,
        /// Sets [`HttpConfig::max_headers`].
        max_headers: usize,
        /// Sets [`HttpConfig::max_target_len`].
        max_target_len: usize,
        /// Sets [`HttpConfig::max_body_size`].
        max_body_size: usize,
        /// Sets [`HttpConfig::max_chunk_line`].
        max_chunk_line: usize,
        /// Sets [`HttpConfig::max_pipelined`].
        max_pipelined: usize,
        /// Sets [`HttpConfig::max_requests_per_connection`].
        max_requests_per_connection: Option<u64>,
        /// Sets [`HttpConfig::header_read_timeout`].
        header_read_timeout: Duration,
        /// Sets [`HttpConfig::body_read_timeout`].
        body_read_timeout: Duration,
        /// Sets [`HttpConfig::body_min_rate`].
        body_min_rate: Option<u64>,
        /// Sets [`HttpConfig::keepalive_timeout`].
        keepalive_timeout: Duration,
        /// Sets [`HttpConfig::response_timeout`].
        response_timeout: Option<Duration>,
    }

    /// Checks every value; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        self.engine.validate()?;
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_owned()));
        // Heads and bodies are held whole in the connection's read buffer: these bound it.
        if !(64..=MAX_HEAD).contains(&self.max_header_bytes) {
            return bad("max_header_bytes must be in 64..=64 MiB");
        }
        if self.max_body_size as u64 > MAX_BODY {
            return bad("max_body_size must be at most 4 GiB (a body is held whole in memory)");
        }
        if self.max_headers == 0 || self.max_headers > MAX_HEADERS {
            return bad("max_headers must be in 1..=256");
        }
        if self.max_target_len == 0 {
            return bad("max_target_len must be positive");
        }
        if self.max_chunk_line < 8 {
            return bad("max_chunk_line must be at least 8");
        }
        if self.max_pipelined == 0 {
            return bad("max_pipelined must be positive");
        }
        if self.max_requests_per_connection == Some(0) {
            return bad("max_requests_per_connection must be positive");
        }
        if self.body_min_rate == Some(0) {
            return bad("body_min_rate must be positive (use None to disable)");
        }
        if self.response_timeout.is_some_and(|t| t.is_zero()) {
            return bad("response_timeout must be positive (use None to disable)");
        }
        for (name, t) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if t.is_zero() {
                return Err(Error::InvalidConfig(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

/// Timer tag of the HTTP read deadline on each connection.
const DEADLINE_TAG: u64 = u64::MAX - 0x4854_5450; // "HTTP"

/// Where a connection is between requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing buffered; waiting for a request.
    #[default]
    Idle,
    /// Part of a head is buffered.
    Head,
    /// A head is complete; its body is not.
    Body,
    /// A response is outstanding (deferred).
    Busy,
}

/// Per-connection HTTP state.
#[derive(Debug, Default)]
pub(crate) struct HttpConn {
    /// Requests served on this connection (stops counting at 2^32 - 1).
    requests: u32,
    phase: Phase,
    /// A deferred response is outstanding; input is paused until it completes.
    awaiting: bool,
    /// Parsing stopped because the client does not read its responses; `on_drain` resumes.
    backpressured: bool,
    /// Parsing yielded once to let queued output flush before deciding to wait for drain.
    flush_yield: bool,
    /// The client shut down its side; close once the outstanding response is sent.
    peer_closed: bool,
    /// The handler failed after deferring its response: close once that response is sent.
    failed: bool,
    continue_sent: bool,
    /// The request whose Content-Length body is being read is a HEAD request.
    head_request: bool,
    /// State few connections need (chunked request bodies, a deferred answer's): allocated
    /// by the first use and kept for the connection's life, so a connection that never
    /// needs it carries a single pointer for it.
    aside: Option<Box<Aside>>,
    deadline: Option<(Instant, TimeoutKind)>,
    armed: Option<Instant>,
    /// When the body being read started arriving (for `body_min_rate`).
    body_since: Option<Instant>,
    /// A head still arriving at the start of the input: how many of its bytes the last pass
    /// parsed (as incomplete, with no error). Until a line ends in bytes beyond them the
    /// head cannot be complete, and it is not parsed again (so a head sent a byte at a
    /// time costs its size once per line, not once per read). 0: none (or a head past 64
    /// KiB, which is parsed on every read as before).
    scanned: u16,
}

/// The rarely needed part of a connection's HTTP state.
#[derive(Debug, Default)]
struct Aside {
    /// `Some` while a chunked request body is being decoded.
    decoder: Option<ChunkedDecoder>,
    /// The head of that request, copied when its body began, and the body so far.
    head: Vec<u8>,
    body: Vec<u8>,
    /// What became of the outstanding deferred response, for `response_timeout`.
    pending: Option<DeferState>,
}

impl HttpConn {
    /// A chunked body is being decoded.
    fn decoding(&self) -> bool {
        self.aside.as_ref().is_some_and(|c| c.decoder.is_some())
    }

    /// Ends the chunked body under way, if any (its buffers stay for the next one).
    fn stop_decoding(&mut self) {
        if let Some(c) = self.aside.as_mut() {
            c.decoder = None;
        }
    }
}

/// The stream handler that serves HTTP with an [`HttpHandler`].
#[derive(Debug)]
pub(crate) struct Http<H> {
    handler: H,
    limits: Limits,
    max_pipelined: usize,
    max_requests: Option<u64>,
    high_watermark: usize,
    header_timeout: Duration,
    body_timeout: Duration,
    body_min_rate: Option<u64>,
    keepalive_timeout: Duration,
    response_timeout: Option<Duration>,
    stats: Arc<[Counters]>,
}

/// What the request loop does after a request.
enum Flow {
    Continue,
    Stop,
}

/// When `rest` is one or two empty lines and nothing else (the last perhaps still missing
/// its LF): the bytes of the whole lines.
fn stray_crlf(rest: &[u8]) -> Option<usize> {
    match rest {
        b"\r" => Some(0),
        b"\r\n" | b"\r\n\r" => Some(2),
        b"\r\n\r\n" => Some(4),
        _ => None,
    }
}

/// Whether `input` starts with a HEAD request (after the empty lines a request may follow).
#[cold]
fn is_head(input: &[u8]) -> bool {
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    input[start..].starts_with(b"HEAD ")
}

/// Sends a minimal response from shoal itself (an error, or a 408) and closes after it; to
/// a HEAD request (`head`) without its body (RFC 9110 §9.3.2).
fn send_own(conn: &mut Conn<'_>, counters: &Counters, status: u16, head: bool) {
    let info = Info {
        version: 1,
        head,
        keep_alive: false,
    };
    let body = super::response::reason(status).as_bytes();
    let mut out = Vec::with_capacity(160);
    let no_headers: [(&str, &str); 0] = [];
    if with_date(conn.now(), |d| {
        write_head(
            &mut out,
            &info,
            status,
            &no_headers,
            Body::Length(body.len()),
            d,
        )
    })
    .is_ok()
    {
        if !head {
            out.extend_from_slice(body);
        }
        let _ = conn.write(&out);
        counters.response(status);
    }
}

impl<H: HttpHandler> Http<H> {
    fn counters(&self, conn: &Conn<'_>) -> &Counters {
        &self.stats[conn.id().reactor()]
    }

    fn timeout(&self, kind: TimeoutKind) -> Duration {
        match kind {
            TimeoutKind::Header => self.header_timeout,
            TimeoutKind::Body => self.body_timeout,
            TimeoutKind::KeepAlive => self.keepalive_timeout,
            // Armed only when set.
            TimeoutKind::Response => self.response_timeout.unwrap_or_default(),
        }
    }

    /// Moves the connection's read deadline. One timer per connection: it is re-armed only
    /// when the deadline moves earlier; when it fires early it re-arms itself. Steady
    /// keep-alive traffic costs no timer operation.
    fn set_deadline(
        &self,
        conn: &mut Conn<'_>,
        st: &mut HttpConn,
        kind: Option<TimeoutKind>,
        body_got: u64,
    ) {
        let Some(kind) = kind else {
            st.deadline = None;
            return;
        };
        let now = conn.now();
        let mut after = self.timeout(kind);
        if kind == TimeoutKind::Body
            && let Some(rate) = self.body_min_rate
        {
            // The grace, plus a second for each `rate` bytes received so far.
            let since = *st.body_since.get_or_insert(now);
            let earned = Duration::from_millis(body_got.saturating_mul(1000) / rate);
            if let Some(end) = since
                .checked_add(self.body_timeout)
                .and_then(|t| t.checked_add(earned))
            {
                after = after.min(end.saturating_duration_since(now));
            }
        }
        // A timeout past what an Instant holds (`Duration::MAX`, say) never comes.
        let Some(at) = now.checked_add(after) else {
            st.deadline = None;
            return;
        };
        st.deadline = Some((at, kind));
        if st.armed.is_none_or(|a| at < a) {
            conn.cancel_timer(DEADLINE_TAG);
            conn.set_timer(after, DEADLINE_TAG);
            st.armed = Some(at);
        }
    }

    /// Rejects a malformed request: the error status with `Connection: close`, then a
    /// lingering close so the client reads it instead of a reset.
    /// `head`: the request is a HEAD request (answered without a body).
    #[cold]
    #[inline(never)]
    fn reject(&self, conn: &mut Conn<'_>, st: &mut HttpConn, e: ParseError, head: bool) {
        let counters = self.counters(conn);
        inc(&counters.parse_errors[e.index()]);
        log::debug!("rejecting request on {:?}: {e}", conn.id());
        send_own(conn, counters, e.status(), head);
        conn.close_with(CloseReason::ProtocolError, CloseMode::Linger);
        st.stop_decoding();
        st.phase = Phase::Busy;
        st.deadline = None;
    }

    /// Runs the handler for one complete request. Inlined into the request loop (its one
    /// call site there), where the request and its head are already in registers.
    #[inline(always)]
    fn dispatch(
        &self,
        conn: &mut Conn<'_>,
        st: &mut HttpConn,
        tally: &mut Tally,
        date: &[u8; DATE_LINE_LEN],
        req: &Request<'_>,
        head: &Head,
    ) -> Flow {
        st.requests = st.requests.saturating_add(1);
        st.continue_sent = false;
        tally.requests += 1;
        if st.requests > 1 {
            tally.reuses += 1;
        }
        let last = self
            .max_requests
            .is_some_and(|m| u64::from(st.requests) >= m);
        let info = Info {
            version: head.version,
            head: head.is_head,
            keep_alive: head.keep_alive && !st.peer_closed && !last,
        };
        let (result, outcome, reported) = {
            let mut res = Response::new(conn, info, tally, &self.stats, date);
            let handler = &self.handler;
            let result = catch_unwind(AssertUnwindSafe(|| handler.handle(req, &mut res)));
            // A stream the handler started but did not end is ended for it, unless the
            // handler failed: a failed stream is cut, so its truncated body never looks
            // complete.
            if result.is_ok() && !res.failed && matches!(res.outcome, Outcome::Streaming { .. }) {
                let _ = res.finish();
            }
            (result, res.outcome, res.failed)
        };
        if result.is_ok() && !reported && outcome == (Outcome::Sent { close: false }) {
            // The common case: answered in full, the connection stays open.
            return Flow::Continue;
        }
        self.after_handler(conn, st, req, result, outcome, reported)
    }

    /// Everything but a complete answer on a connection that stays open: a failure, a close,
    /// a deferred or streamed answer. Out of line, so the request loop keeps its registers.
    #[cold]
    #[inline(never)]
    fn after_handler(
        &self,
        conn: &mut Conn<'_>,
        st: &mut HttpConn,
        req: &Request<'_>,
        result: std::thread::Result<()>,
        outcome: Outcome,
        reported: bool,
    ) -> Flow {
        let counters = &self.stats[conn.id().reactor()];
        // A `Deferred` dropped unanswered inside its handler left nothing sent: the 500 is
        // answered here, in order.
        let mark = if outcome == Outcome::Deferred {
            take_mark(conn.id())
        } else {
            None
        };
        let dropped = mark.as_ref().is_some_and(|m| m.dropped);
        let outcome = if dropped { Outcome::Fresh } else { outcome };
        let failed = match (&result, outcome) {
            (Ok(()), _) if reported => true,
            (Err(payload), _) => {
                log::error!(
                    "HTTP handler panicked on connection {:?}: {}",
                    conn.id(),
                    crate::pool::panic_message(&**payload)
                );
                true
            }
            // The `Deferred` said so as it was dropped.
            (Ok(()), Outcome::Fresh) if dropped => true,
            (Ok(()), Outcome::Fresh) => {
                log::error!(
                    "HTTP handler returned without answering {} {} on connection {:?}",
                    req.method(),
                    req.target(),
                    conn.id()
                );
                true
            }
            _ => false,
        };
        if failed {
            inc(&counters.handler_failures);
            if outcome == Outcome::Fresh {
                send_own(conn, counters, 500, req.method() == "HEAD");
                conn.fail_gracefully();
            } else if matches!(outcome, Outcome::Sent { .. }) {
                // A complete response went out before the failure: deliver it, then close.
                conn.fail_gracefully();
            } else if outcome == Outcome::Deferred {
                // The `Deferred` lives on elsewhere and still answers, in order: wait for it,
                // then close. Dropped unanswered later, it does not count this failure again.
                if let Some(m) = &mark {
                    m.state.fetch_or(COUNTED, Ordering::AcqRel);
                }
                conn.count_failure();
                st.awaiting = true;
                st.failed = true;
                self.track_answer(st, mark, req.method() == "HEAD");
                conn.pause_input();
            } else {
                // Part of a response is on its way: it cannot be fixed, only cut.
                conn.fail();
            }
            return Flow::Stop;
        }
        match outcome {
            Outcome::Sent { close: true } | Outcome::Streaming { close: true, .. } => {
                conn.shutdown();
                Flow::Stop
            }
            Outcome::Deferred => {
                st.awaiting = true;
                self.track_answer(st, mark, req.method() == "HEAD");
                conn.pause_input();
                Flow::Stop
            }
            _ => Flow::Continue,
        }
    }

    /// Handles the requests in `data`; returns the bytes consumed.
    fn process(&self, conn: &mut Conn<'_>, st: &mut HttpConn, data: &[u8]) -> usize {
        if st.scanned != 0
            && let Some(consumed) = self.still_incomplete(conn, st, data)
        {
            return consumed;
        }
        let mut tally = Tally::default();
        // The reactor's clock stands still during a pass: one Date line serves all of it.
        let date = with_date(conn.now(), |d| *d);
        let pos = self.process_with(conn, st, data, &mut tally, &date);
        tally.flush(self.counters(conn));
        pos
    }

    /// Whether the head at the start of `data`, found incomplete by the last pass, still is:
    /// no line ended in the bytes that came since (a head ends with a line end), and none of
    /// them is a control byte (which httparse would refuse wherever it stood, so the head
    /// is parsed again to answer it now; a CR also makes it parse, harmlessly). Its limits are checked as on every read. `Some`:
    /// what `process` consumes (nothing, or all of it after an error answered here).
    #[cold]
    #[inline(never)]
    fn still_incomplete(
        &self,
        conn: &mut Conn<'_>,
        st: &mut HttpConn,
        data: &[u8],
    ) -> Option<usize> {
        let seen = std::mem::take(&mut st.scanned) as usize;
        let fresh = data.get(seen..)?;
        if fresh.contains(&b'\n') || !is_field_text(fresh) {
            return None;
        }
        if let Err(e) = check_incomplete(data, &self.limits) {
            self.reject(conn, st, e, is_head(data));
            return Some(data.len());
        }
        st.scanned = u16::try_from(data.len()).unwrap_or(0);
        Some(0)
    }

    fn process_with(
        &self,
        conn: &mut Conn<'_>,
        st: &mut HttpConn,
        data: &[u8],
        tally: &mut Tally,
        date: &[u8; DATE_LINE_LEN],
    ) -> usize {
        let mut pos = 0;
        let mut served = 0;
        let mut partial_body = false;
        let mut body_got = 0u64;
        let mut yielded = false;
        let mut fields = FieldSlots::new();
        loop {
            let queued = match conn.queued_if_open() {
                Some(q) if !st.awaiting => q,
                _ => break,
            };
            if let Some(c) = st.aside.as_mut()
                && let Some(decoder) = c.decoder.as_mut()
            {
                match decoder.decode(&data[pos..], &mut c.body) {
                    Ok((n, Progress::NeedMore)) => {
                        pos += n;
                        partial_body = true;
                        body_got = c.body.len() as u64;
                        break;
                    }
                    Ok((n, Progress::Done)) => {
                        pos += n;
                        c.decoder = None;
                        st.body_since = None;
                        served += 1;
                        if let Flow::Stop = self.dispatch_chunked(conn, st, tally, date) {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        let head = is_head(&c.head);
                        self.reject(conn, st, e, head);
                        return data.len();
                    }
                }
            }
            let buf = &data[pos..];
            if buf.is_empty() {
                break;
            }
            if served >= self.max_pipelined {
                // Yield: the rest is presented again on the next loop turn.
                conn.pause_input();
                conn.resume_input();
                yielded = true;
                break;
            }
            if queued > self.high_watermark {
                // Too much output queued: first let it flush (yield); if it is still above the
                // watermark after that, the client is not reading, and parsing waits for
                // `on_drain`, so memory stays flat.
                conn.pause_input();
                if st.flush_yield {
                    st.backpressured = true;
                } else {
                    st.flush_yield = true;
                    conn.resume_input();
                }
                break;
            }
            st.flush_yield = false;
            let parsed = match parse_head(buf, &mut fields, &self.limits) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    st.scanned = u16::try_from(buf.len()).unwrap_or(0);
                    break;
                }
                Err(e) => {
                    self.reject(conn, st, e, is_head(buf));
                    return data.len();
                }
            };
            let head = parsed.head;
            let body = match head.framing {
                Framing::None => &[][..],
                Framing::Length(n) => {
                    let end = head.len + n as usize;
                    if buf.len() < end {
                        self.send_continue(conn, st, &head);
                        st.head_request = head.is_head;
                        partial_body = true;
                        body_got = (buf.len() - head.len) as u64;
                        break;
                    }
                    st.body_since = None;
                    &buf[head.len..end]
                }
                Framing::Chunked => {
                    let c = st.aside.get_or_insert_default();
                    c.head.clear();
                    c.head.extend_from_slice(&buf[..head.len]);
                    c.body.clear();
                    c.decoder = Some(ChunkedDecoder::new(&self.limits));
                    self.send_continue(conn, st, &head);
                    pos += head.len;
                    continue;
                }
            };
            pos += head.len + body.len();
            served += 1;
            let req = Request {
                method: parsed.method,
                target: parsed.target,
                version: head.version,
                headers: parsed.headers,
                body,
            };
            if let Flow::Stop = self.dispatch(conn, st, tally, date, &req, &head) {
                break;
            }
        }
        // The read deadline for what comes next.
        if !partial_body {
            st.body_since = None;
        }
        // Input shoal holds back itself (a yield, or output above the watermark) does not
        // count against the client: no read deadline runs until it is parsed (the write
        // timeout guards a client that does not read).
        let held = yielded || st.backpressured || st.flush_yield;
        if st.awaiting || conn.is_closing() || (held && !partial_body) {
            st.phase = Phase::Busy;
            // A deferred answer has `response_timeout` from its request (a deadline already
            // running for it stays).
            let answer = st.awaiting && self.response_timeout.is_some() && !conn.is_closing();
            if !(answer && matches!(st.deadline, Some((_, TimeoutKind::Response)))) {
                self.set_deadline(conn, st, answer.then_some(TimeoutKind::Response), 0);
            }
        } else if partial_body {
            st.phase = Phase::Body;
            self.set_deadline(conn, st, Some(TimeoutKind::Body), body_got);
        } else if let Some(n) = (served > 0 || (st.requests > 0 && st.phase != Phase::Head))
            .then(|| stray_crlf(&data[pos..]))
            .flatten()
        {
            // The CRLF some clients send after a request (RFC 9112 §2.2), in the same read or
            // its own: no new request has begun, so the connection is idle, not slow. A CR
            // whose LF has not come yet stays, for the next request's parse to skip.
            pos += n;
            st.scanned = 0;
            st.phase = Phase::Idle;
            self.set_deadline(conn, st, Some(TimeoutKind::KeepAlive), 0);
        } else if pos < data.len() {
            // A head still arriving: its deadline runs from its first bytes (a head after a
            // request served in this pass is a new one), or, for a connection's first
            // request, from the accept (`on_open` set it).
            if served > 0 || (st.phase != Phase::Head && st.requests > 0) {
                self.set_deadline(conn, st, Some(TimeoutKind::Header), 0);
            }
            st.phase = Phase::Head;
        } else {
            st.phase = Phase::Idle;
            self.set_deadline(conn, st, Some(TimeoutKind::KeepAlive), 0);
        }
        pos
    }

    fn send_continue(&self, conn: &mut Conn<'_>, st: &mut HttpConn, head: &Head) {
        if head.expect_continue && head.version == 1 && !st.continue_sent {
            st.continue_sent = true;
            if conn.write(b"HTTP/1.1 100 Continue\r\n\r\n").is_ok() {
                let counters = self.counters(conn);
                inc(&counters.continues);
                counters.response(100);
            }
        }
    }

    /// Dispatches a request whose chunked body is complete: the head is parsed again from
    /// the copy kept when its body started. Kept out of the request loop, whose stack frame
    /// would otherwise hold a second set of header slots.
    #[inline(never)]
    fn dispatch_chunked(
        &self,
        conn: &mut Conn<'_>,
        st: &mut HttpConn,
        tally: &mut Tally,
        date: &[u8; DATE_LINE_LEN],
    ) -> Flow {
        let c = st.aside.as_mut().expect("a chunked body was decoded");
        let head_buf = std::mem::take(&mut c.head);
        let body = std::mem::take(&mut c.body);
        let flow = {
            let mut fields = FieldSlots::new();
            match parse_head(&head_buf, &mut fields, &self.limits) {
                Ok(Some(parsed)) => {
                    let req = Request {
                        method: parsed.method,
                        target: parsed.target,
                        version: parsed.head.version,
                        headers: parsed.headers,
                        body: &body,
                    };
                    let head = parsed.head;
                    self.dispatch(conn, st, tally, date, &req, &head)
                }
                // It parsed when its body began; it cannot fail now.
                _ => {
                    self.reject(conn, st, ParseError::BadRequestLine, false);
                    Flow::Stop
                }
            }
        };
        if let Some(c) = st.aside.as_mut() {
            // Kept for the next chunked body, unless large: one big body must not pin its
            // memory for the rest of a keep-alive connection's life.
            const KEEP: usize = 64 << 10;
            if head_buf.capacity() <= KEEP {
                c.head = head_buf;
            }
            if body.capacity() <= KEEP {
                c.body = body;
                c.body.clear();
            }
        }
        flow
    }

    /// Keeps what becomes of a deferred answer, for `response_timeout` (only when it is set:
    /// otherwise nothing is allocated for it).
    fn track_answer(&self, st: &mut HttpConn, mark: Option<Mark>, head: bool) {
        if self.response_timeout.is_some()
            && let Some(m) = mark
        {
            if head {
                m.state.fetch_or(HEAD_REQUEST, Ordering::Relaxed);
            }
            st.aside.get_or_insert_default().pending = Some(m.state);
        }
    }

    fn expire(&self, conn: &mut Conn<'_>, st: &mut HttpConn, kind: TimeoutKind) {
        // The timer's side of the race with the answer: one `fetch_or`, whose result decides.
        let answer = if kind == TimeoutKind::Response {
            st.aside
                .as_mut()
                .and_then(|a| a.pending.take())
                .map_or(0, |s| s.fetch_or(TIMED_OUT, Ordering::AcqRel))
        } else {
            0
        };
        if answer & SENT != 0 {
            // The whole answer is on its way to the reactor (a complete response, or a
            // stream's end): it arrives and completes in time.
            st.deadline = None;
            return;
        }
        let counters = self.counters(conn);
        counters.timeout(kind);
        match kind {
            TimeoutKind::KeepAlive => conn.close_with(CloseReason::IdleTimeout, CloseMode::Flush),
            TimeoutKind::Header | TimeoutKind::Body => {
                // A body was being read for a HEAD request (its head is parsed): no body in
                // the answer either.
                let head = kind == TimeoutKind::Body
                    && match st.aside.as_ref().filter(|a| a.decoder.is_some()) {
                        Some(a) => is_head(&a.head),
                        None => st.head_request,
                    };
                send_own(conn, counters, 408, head);
                conn.close_with(CloseReason::ReadTimeout, CloseMode::Linger);
            }
            TimeoutKind::Response => {
                if answer & STARTED == 0 {
                    // Nothing of the answer left: shoal answers instead.
                    send_own(conn, counters, 503, answer & HEAD_REQUEST != 0);
                    conn.close_with(CloseReason::HandlerTimeout, CloseMode::Linger);
                } else {
                    // A stream under way: cut it, so its body never looks complete.
                    conn.close_with(CloseReason::HandlerTimeout, CloseMode::Abort);
                }
            }
        }
        st.deadline = None;
        st.phase = Phase::Busy;
    }
}

impl<H: HttpHandler> Handler for Http<H> {
    type State = HttpConn;

    fn on_open(&self, conn: &mut Conn<'_>, st: &mut HttpConn) {
        // A new connection has header_read_timeout to send its first request.
        self.set_deadline(conn, st, Some(TimeoutKind::Header), 0);
        st.phase = Phase::Idle;
    }

    fn on_data(&self, conn: &mut Conn<'_>, st: &mut HttpConn, data: &[u8]) -> usize {
        self.process(conn, st, data)
    }

    fn on_resume(&self, conn: &mut Conn<'_>, st: &mut HttpConn, data: &[u8]) -> usize {
        if st.awaiting {
            // The deferred response went out: on to the next request, or close.
            st.awaiting = false;
            if let Some(a) = st.aside.as_mut() {
                a.pending = None;
            }
            st.deadline = None;
            if st.failed {
                // Its handler failed after deferring it: nothing more is served.
                conn.close_with(CloseReason::HandlerFailed, CloseMode::Linger);
                return data.len();
            }
            if st.peer_closed {
                conn.close();
                return data.len();
            }
        }
        st.backpressured = false;
        self.process(conn, st, data)
    }

    fn on_eof(&self, conn: &mut Conn<'_>, st: &mut HttpConn) -> bool {
        if st.awaiting {
            // Half-close after a complete request: answer fully, then close.
            st.peer_closed = true;
            return true;
        }
        if st.decoding() || matches!(st.phase, Phase::Head | Phase::Body) {
            // A request cut short: never delivered as complete.
            inc(&self.counters(conn).incomplete);
        }
        false
    }

    fn on_drain(&self, conn: &mut Conn<'_>, st: &mut HttpConn) {
        if st.backpressured {
            st.backpressured = false;
            st.flush_yield = false;
            conn.resume_input();
        }
    }

    fn thread_scope(&self, run: &mut dyn FnMut()) {
        self.handler.thread_scope(run);
    }

    fn worker_batch(&self) -> usize {
        self.handler.worker_batch()
    }

    fn worker_scope(&self, run: &mut dyn FnMut()) {
        self.handler.worker_scope(run);
    }

    fn on_timer(&self, conn: &mut Conn<'_>, st: &mut HttpConn, tag: u64) {
        if tag != DEADLINE_TAG {
            return;
        }
        st.armed = None;
        let Some((at, kind)) = st.deadline else {
            return;
        };
        let now = conn.now();
        if now + Duration::from_millis(1) >= at {
            self.expire(conn, st, kind);
        } else {
            conn.set_timer(at - now, DEADLINE_TAG);
            st.armed = Some(at);
        }
    }
}

/// An HTTP/1.1 server: the engine's reactors (and optional worker pool) serving an
/// [`HttpHandler`].
///
/// ```no_run
/// use shoal_core::Config;
/// use shoal_core::http::{HttpConfig, HttpServer, Request, Response};
///
/// let config = HttpConfig::new(Config::new("127.0.0.1:8080".parse().unwrap()));
/// let server = HttpServer::bind(config, |_req: &Request<'_>, res: &mut Response<'_, '_>| {
///     let _ = res.send(200, &[("Content-Type", "text/plain")], b"Hello, World!");
/// })
/// .unwrap();
/// server.run().unwrap();
/// ```
pub struct HttpServer<H: HttpHandler> {
    server: Server<Http<H>>,
    stats: Arc<[Counters]>,
}

impl<H: HttpHandler> std::fmt::Debug for HttpServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl<H: HttpHandler> HttpServer<H> {
    /// Validates `config` and binds (see [`Server::bind`]). The engine's `max_read_buffer` is
    /// raised to hold a largest head and body.
    pub fn bind(config: HttpConfig, handler: H) -> Result<Self> {
        config.validate()?;
        let mut engine = config.engine.clone();
        engine.max_read_buffer = engine
            .max_read_buffer
            .max(config.max_header_bytes + config.max_body_size.saturating_add(64 * 1024));
        let stats: Arc<[Counters]> = (0..engine.threads).map(|_| Counters::default()).collect();
        let http = Http {
            handler,
            limits: Limits {
                max_header_bytes: config.max_header_bytes,
                max_headers: config.max_headers,
                max_target_len: config.max_target_len,
                max_body_size: config.max_body_size as u64,
                max_chunk_line: config.max_chunk_line,
            },
            max_pipelined: config.max_pipelined,
            max_requests: config.max_requests_per_connection,
            high_watermark: engine.write_high_watermark,
            header_timeout: config.header_read_timeout,
            body_timeout: config.body_read_timeout,
            body_min_rate: config.body_min_rate,
            keepalive_timeout: config.keepalive_timeout,
            response_timeout: config.response_timeout,
            stats: stats.clone(),
        };
        Ok(HttpServer {
            server: Server::bind_as(engine, Arc::new(http), true)?,
            stats,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A handle for use from any thread (stop, stats, writes to connections).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Starts the reactor (and worker) threads and returns.
    pub fn start(&mut self) -> Result<()> {
        self.server.start()
    }

    /// Waits for the threads to finish after `stop`.
    pub fn wait(&mut self) -> Result<()> {
        self.server.wait()
    }

    /// Starts and blocks until stopped.
    pub fn run(self) -> Result<()> {
        self.server.run()
    }

    /// Whether a started server has finished (stopped, every thread done); see
    /// [`Server::is_finished`].
    pub fn is_finished(&self) -> bool {
        self.server.is_finished()
    }

    /// Stops the server (see [`ServerHandle::stop`]).
    pub fn stop(&self) {
        self.server.stop();
    }

    /// The engine's counters.
    pub fn stats(&self) -> Stats {
        self.server.handle().stats()
    }

    /// The HTTP counters, summed over reactors.
    pub fn http_stats(&self) -> HttpStats {
        let mut s = HttpStats::default();
        for c in self.stats.iter() {
            s.add(c);
        }
        s
    }

    /// A cloneable view of the HTTP counters, readable from any thread.
    pub fn http_stats_handle(&self) -> HttpStatsHandle {
        HttpStatsHandle(self.stats.clone())
    }
}

/// Reads an [`HttpServer`]'s HTTP counters from any thread.
#[derive(Debug, Clone)]
pub struct HttpStatsHandle(Arc<[Counters]>);

impl HttpStatsHandle {
    /// A snapshot summed over reactors.
    pub fn get(&self) -> HttpStats {
        let mut s = HttpStats::default();
        for c in self.0.iter() {
            s.add(c);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_server_bounds_a_client_that_stops_reading_by_default() {
        assert_eq!(
            HttpConfig::default().engine.write_timeout,
            Some(HTTP_WRITE_TIMEOUT)
        );
        assert_eq!(
            HttpConfig::new(Config::default()).engine.write_timeout,
            Some(HTTP_WRITE_TIMEOUT)
        );
        let own = Config::default().write_timeout(Some(Duration::from_secs(5)));
        assert_eq!(
            HttpConfig::new(own).engine.write_timeout,
            Some(Duration::from_secs(5))
        );
        // A stream server keeps none unless asked.
        assert_eq!(Config::default().write_timeout, None);
    }

    /// Per-connection HTTP state is part of every idle connection's footprint; the buffers of
    /// chunked bodies live behind one pointer until a connection sends one.
    #[test]
    fn idle_http_state_stays_small() {
        assert!(
            std::mem::size_of::<HttpConn>() <= 80,
            "HttpConn grew to {} bytes",
            std::mem::size_of::<HttpConn>()
        );
        let st = HttpConn::default();
        assert!(st.aside.is_none() && !st.decoding());
    }
}
