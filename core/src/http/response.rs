//! Responses, serialized straight into the connection's output queue: at once from the
//! handler ([`Response`]), or later from any thread ([`Deferred`], [`ChunkedBody`]).

use std::cell::Cell;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::date::{DATE_LINE_LEN, with_date};
use super::stats::{Counters, Tally, inc};
use crate::conn::{Conn, ConnId};
use crate::error::{Error, Result};
use crate::reactor::Pacer;
use crate::server::ServerHandle;

/// What the response must respect about its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Info {
    /// The request's minor version (0 or 1).
    pub(crate) version: u8,
    /// A HEAD request: headers only.
    pub(crate) head: bool,
    /// The connection may stay open after this response.
    pub(crate) keep_alive: bool,
}

/// Where a response stands, for the server once the handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing sent yet.
    Fresh,
    /// Complete; `close` if the connection must close after it.
    Sent { close: bool },
    /// Head sent, body streaming; `chunked` false means close-delimited (HTTP/1.0), `body`
    /// false that the status allows none (204, 304): the pieces are dropped.
    Streaming {
        close: bool,
        chunked: bool,
        body: bool,
    },
    /// Handed to a [`Deferred`].
    Deferred,
}

/// The standard reason phrase of a status code (empty for unknown codes, which is allowed).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Byte classes for header validation, one table lookup per byte.
const TCHAR: u8 = 1;
const FIELD_VCHAR: u8 = 2;

const fn byte_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let tchar = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        // Field values: visible ASCII, space, tab and obs-text; never CR, LF, NUL or another
        // control byte (RFC 9110 §5.5).
        let vchar = c == b'\t' || (c >= 0x20 && c != 0x7f);
        t[b] = (if tchar { TCHAR } else { 0 }) | (if vchar { FIELD_VCHAR } else { 0 });
        b += 1;
    }
    t
}

static CLASSES: [u8; 256] = byte_classes();

/// A token (RFC 9110 §5.6.2): a method, a field name.
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && all_in(bytes, TCHAR)
}

/// Bytes that may stand in a field value: no control byte but tab (RFC 9110 §5.5).
pub(crate) fn is_field_text(bytes: &[u8]) -> bool {
    all_in(bytes, FIELD_VCHAR)
}

/// Whether every byte is in `class`. No early exit: a branch-free AND over the table, since
/// the bytes are almost always valid and short (header names).
fn all_in(bytes: &[u8], class: u8) -> bool {
    bytes
        .iter()
        .fold(class, |acc, &b| acc & CLASSES[usize::from(b)])
        != 0
}

/// Whether `value` is a valid field value (every byte `FIELD_VCHAR`). Eight bytes at a time:
/// a word with no byte below 0x20 and none equal to 0x7f is valid as it stands (bytes from
/// 0x80 up are obs-text, allowed); a word that may hold one (a tab, or a false alarm of the
/// borrow) is checked byte by byte.
fn valid_value(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = value.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_ne_bytes(w.try_into().expect("eight bytes"));
        // Some byte < 0x20 (its high bit clear and the subtraction borrowing into it), or
        // some byte of x ^ 0x7f.. equal to zero.
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        if below_space | del != 0 && !all_in(w, FIELD_VCHAR) {
            return false;
        }
    }
    all_in(words.remainder(), FIELD_VCHAR)
}

/// The status line of the common statuses, ready to copy.
fn status_line(status: u16) -> Option<&'static [u8]> {
    Some(match status {
        200 => b"HTTP/1.1 200 OK\r\n",
        201 => b"HTTP/1.1 201 Created\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        _ => return None,
    })
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    Length(usize),
    Streamed,
}

/// Whether a status allows a body (and a Content-Length).
fn has_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// What serializing a head needs to know, found (and validated) before a byte is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) close: bool,
    pub(crate) chunked: bool,
    /// The status allows a body (and a Content-Length).
    body_allowed: bool,
    has_date: bool,
    has_connection: bool,
    /// The handler's own Connection field says `close`.
    says_close: bool,
    /// An upper bound on the head's length.
    pub(crate) bound: usize,
}

/// What the handler's header fields say about the head, found while validating them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Facts {
    has_date: bool,
    has_connection: bool,
    /// A `Connection: close` among them.
    close: bool,
    /// Their serialized length.
    len: usize,
}

fn check_status(status: u16) -> Result<()> {
    if (200..=999).contains(&status) {
        Ok(())
    } else {
        Err(Error::InvalidResponse(
            "status must be in 200..=999 (interim responses are shoal's)",
        ))
    }
}

/// Validates header fields (a token name; no CR, LF, NUL or other control byte in the value;
/// Content-Length and Transfer-Encoding are shoal's).
fn check_fields<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> Result<Facts> {
    let mut f = Facts::default();
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.is_empty() || !all_in(name, TCHAR) {
            return Err(Error::InvalidResponse("header name is not a token"));
        }
        if !valid_value(value) {
            return Err(Error::InvalidResponse(
                "header value contains CR, LF, NUL or another control byte",
            ));
        }
        // Only names of these lengths can be special: most headers skip the comparisons.
        match name.len() {
            14 | 17
                if name.eq_ignore_ascii_case(b"content-length")
                    || name.eq_ignore_ascii_case(b"transfer-encoding") =>
            {
                return Err(Error::InvalidResponse(
                    "Content-Length and Transfer-Encoding are set by shoal",
                ));
            }
            4 if name.eq_ignore_ascii_case(b"date") => f.has_date = true,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                f.has_connection = true;
                if value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    f.close = true;
                }
            }
            _ => {}
        }
        f.len += name.len() + value.len() + 4;
    }
    Ok(f)
}

/// Checks the status and decides the framing of a head whose fields were checked.
fn plan_checked(info: &Info, status: u16, f: Facts, body: Body) -> Result<Plan> {
    check_status(status)?;
    let mut p = Plan {
        close: !info.keep_alive || f.close,
        chunked: false,
        body_allowed: has_body(status),
        has_date: f.has_date,
        has_connection: f.has_connection,
        says_close: f.close,
        // Status line, Date, Content-Length or Transfer-Encoding, Connection, final CRLF.
        bound: 48 + DATE_LINE_LEN + 40 + 26 + 2 + f.len,
    };
    if p.body_allowed && matches!(body, Body::Streamed) {
        if info.version == 1 {
            p.chunked = true;
        } else {
            // HTTP/1.0 has no chunked coding: the body ends when the connection closes.
            p.close = true;
        }
    }
    Ok(p)
}

/// Validates the status and the user headers and decides the framing.
pub(crate) fn plan<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    info: &Info,
    status: u16,
    headers: &[(N, V)],
    body: Body,
) -> Result<Plan> {
    plan_checked(info, status, check_fields(headers)?, body)
}

/// Header fields to serialize: pairs already checked by [`plan`], or a prepared block.
pub(crate) trait Fields {
    fn put_fields<S: Sink>(&self, out: &mut S);

    /// The status line, then the fields.
    #[inline]
    fn put_status_and_fields<S: Sink>(&self, status: u16, out: &mut S) {
        put_status_line(status, out);
        self.put_fields(out);
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> Fields for [(N, V)] {
    #[inline]
    fn put_fields<S: Sink>(&self, out: &mut S) {
        for (name, value) in self {
            out.put(name.as_ref());
            out.put(b": ");
            out.put(value.as_ref());
            out.put(b"\r\n");
        }
    }
}

impl Fields for PreparedHeaders {
    #[inline]
    fn put_fields<S: Sink>(&self, out: &mut S) {
        out.put(self.as_bytes());
    }

    #[inline]
    fn put_status_and_fields<S: Sink>(&self, status: u16, out: &mut S) {
        if status == 200 {
            out.put(&self.block);
        } else {
            put_status_line(status, out);
            self.put_fields(out);
        }
    }
}

/// The status line of a 200 response, which a prepared block keeps in front of its fields.
const OK_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// Response header fields checked and serialized once, for answers that repeat them (a
/// handler's `Content-Type`, a server's fixed `Server` or cache headers):
/// [`Response::send_prepared`] and [`Deferred::send_prepared`] copy the block instead of
/// validating and writing each field again. The rules of [`Response::send`] apply, when the
/// block is made.
///
/// ```
/// use shoal_core::http::PreparedHeaders;
/// let text = PreparedHeaders::new(&[("Content-Type", "text/plain")]).unwrap();
/// assert_eq!(text.as_bytes(), b"Content-Type: text/plain\r\n");
/// assert!(PreparedHeaders::new(&[("X-Evil", "a\r\nb")]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedHeaders {
    /// The status line of a 200 response, then the serialized fields: the most common head
    /// starts with one copy.
    block: Box<[u8]>,
    facts: Facts,
}

impl PreparedHeaders {
    /// Checks and serializes `headers` (the error [`Response::send`] would give for them).
    pub fn new<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> Result<Self> {
        let facts = check_fields(headers)?;
        let mut block = Vec::with_capacity(OK_LINE.len() + facts.len);
        block.extend_from_slice(OK_LINE);
        headers.put_fields(&mut block);
        Ok(PreparedHeaders {
            block: block.into_boxed_slice(),
            facts,
        })
    }

    /// The serialized fields, each ending in CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.block[OK_LINE.len()..]
    }
}

/// Where a head is serialized: the tail of the output queue (with room reserved for
/// [`Plan::bound`] bytes, so no append reallocates) or a buffer of its own.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    // Inlined so that the fixed separators (": ", CRLF) become plain stores in every caller.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The `Content-Length` field line for a body of `n` bytes, ready to copy: one piece
/// instead of name, digits and CRLF separately. Returns the line and its length.
#[inline(always)] // Returned by value, the line would be copied around the stack twice.
fn content_length_line(n: usize) -> ([u8; 38], usize) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    const NAME: &[u8; 16] = b"Content-Length: ";
    let mut line = [0u8; 38];
    line[..16].copy_from_slice(NAME);
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1_000..=9_999 => 4,
        _ => n.ilog10() as usize + 1,
    };
    let end = 16 + digits;
    // Two digits per division, from the right.
    let mut v = n;
    let mut at = end;
    while at >= 18 {
        let pair = (v % 100) * 2;
        line[at - 2..at].copy_from_slice(&PAIRS[pair..pair + 2]);
        v /= 100;
        at -= 2;
    }
    if at > 16 {
        line[16] = b'0' + v as u8;
    }
    line[end] = b'\r';
    line[end + 1] = b'\n';
    (line, end + 2)
}

/// Writes the status line.
#[inline]
fn put_status_line<S: Sink>(status: u16, out: &mut S) {
    match status_line(status) {
        Some(line) => out.put(line),
        None => {
            out.put(b"HTTP/1.1 ");
            out.put(&[
                b'0' + (status / 100) as u8,
                b'0' + (status / 10 % 10) as u8,
                b'0' + (status % 10) as u8,
                b' ',
            ]);
            let r = reason(status).as_bytes();
            out.put(&r[..r.len().min(32)]);
            out.put(b"\r\n");
        }
    }
}

/// Serializes a planned head.
pub(crate) fn emit<S: Sink, F: Fields + ?Sized>(
    out: &mut S,
    plan: &Plan,
    info: &Info,
    status: u16,
    headers: &F,
    body: Body,
    date: &[u8; DATE_LINE_LEN],
) {
    headers.put_status_and_fields(status, out);
    if !plan.has_date {
        out.put(date);
    }
    if plan.body_allowed {
        match body {
            Body::Length(n) => {
                let (line, len) = content_length_line(n);
                out.put(&line[..len]);
            }
            Body::Streamed if plan.chunked => out.put(b"Transfer-Encoding: chunked\r\n"),
            Body::Streamed => {}
        }
    }
    // A connection that closes after this response says so (RFC 9112 §9.6), even when the
    // handler's own Connection field says otherwise: `close` in any Connection line wins.
    if plan.close {
        if !plan.says_close {
            out.put(b"Connection: close\r\n");
        }
    } else if !plan.has_connection && info.version == 0 {
        out.put(b"Connection: keep-alive\r\n");
    }
    out.put(b"\r\n");
}

/// Appends a status line and header block to `out` (nothing on error). Returns whether the
/// connection must close after this response, and whether the body is chunked.
pub(crate) fn write_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    info: &Info,
    status: u16,
    headers: &[(N, V)],
    body: Body,
    date: &[u8; DATE_LINE_LEN],
) -> Result<(bool, bool)> {
    let p = plan(info, status, headers, body)?;
    write_planned(out, &p, info, status, headers, body, date);
    Ok((p.close, p.chunked))
}

/// Appends a head already planned.
fn write_planned<F: Fields + ?Sized>(
    out: &mut Vec<u8>,
    p: &Plan,
    info: &Info,
    status: u16,
    headers: &F,
    body: Body,
    date: &[u8; DATE_LINE_LEN],
) {
    out.reserve(p.bound);
    emit(out, p, info, status, headers, body, date);
}

/// Appends the framing of one chunk of `len` bytes: `len` in hex and CRLF.
fn chunk_prefix(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let mut i = 16;
    let mut v = len;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[i..]
}

/// Bodies up to this size are copied into the output queue together with the head.
const INLINE_BODY: usize = 8 * 1024;

/// The response to one request, given to the handler with it. Answer at once with
/// [`Response::send`] (the fast path: serialized straight into the output queue), stream a
/// chunked body with [`Response::start_chunked`], or take a [`Deferred`] with
/// [`Response::defer`] and answer later from any thread. A handler that returns without doing
/// any of these gets a 500 sent for it.
#[derive(Debug)]
pub struct Response<'r, 'c> {
    conn: &'r mut Conn<'c>,
    info: Info,
    pub(crate) outcome: Outcome,
    pub(crate) failed: bool,
    tally: &'r mut Tally,
    stats: &'r Arc<[Counters]>,
    /// The `Date` line of this pass over the connection's input.
    date: &'r [u8; DATE_LINE_LEN],
}

impl<'r, 'c> Response<'r, 'c> {
    pub(crate) fn new(
        conn: &'r mut Conn<'c>,
        info: Info,
        tally: &'r mut Tally,
        stats: &'r Arc<[Counters]>,
        date: &'r [u8; DATE_LINE_LEN],
    ) -> Self {
        Response {
            conn,
            info,
            outcome: Outcome::Fresh,
            failed: false,
            tally,
            stats,
            date,
        }
    }

    /// Reports that the handler failed (a binding's callback raised an error it already
    /// logged): handled as a panic is, without a further log line. Unstarted, it is answered
    /// with 500 and the connection closes after it; a response under way is cut off.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// The connection, read-only: its id, addresses, output queued, handle and time left.
    /// Writes, timers and pausing input belong to the HTTP layer (raw bytes would break the
    /// framing of its responses).
    pub fn conn(&self) -> &Conn<'c> {
        self.conn
    }

    /// Whether the connection stays open after this response (so far: a `Connection: close`
    /// header in the response also closes it).
    pub fn keep_alive(&self) -> bool {
        self.info.keep_alive
    }

    /// Whether an answer was started: sent, streaming, or deferred.
    pub fn is_started(&self) -> bool {
        self.outcome != Outcome::Fresh
    }

    /// Whether this answers a HEAD request (the body is not sent; Content-Length still is).
    pub fn is_head(&self) -> bool {
        self.info.head
    }

    fn fresh(&self) -> Result<()> {
        if self.outcome == Outcome::Fresh {
            Ok(())
        } else {
            Err(Error::InvalidResponse("the response was already started"))
        }
    }

    /// Sends a complete response: status, headers (without Content-Length,
    /// Transfer-Encoding, which shoal writes; a `Date` is added unless given), and body.
    pub fn send<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(N, V)],
        body: &[u8],
    ) -> Result<()> {
        self.fresh()?;
        let facts = check_fields(headers)?;
        self.send_fields(status, headers, facts, body)
    }

    /// Sends a complete response as [`Response::send`] does, with header fields checked and
    /// serialized beforehand: the fast path for answers that repeat their headers.
    pub fn send_prepared(
        &mut self,
        status: u16,
        headers: &PreparedHeaders,
        body: &[u8],
    ) -> Result<()> {
        self.fresh()?;
        self.send_fields(status, headers, headers.facts, body)
    }

    fn send_fields<F: Fields + ?Sized>(
        &mut self,
        status: u16,
        headers: &F,
        facts: Facts,
        body: &[u8],
    ) -> Result<()> {
        let info = self.info;
        // The head declares the body's length even when the body is not sent (HEAD).
        let framing = Body::Length(body.len());
        let p = plan_checked(&info, status, facts, framing)?;
        let payload = if info.head || !p.body_allowed {
            &[][..]
        } else {
            body
        };
        let (conn, d) = (&mut *self.conn, self.date);
        // A small body is serialized with the head straight into the output queue (one
        // copy); a large one is queued after it in pooled chunks.
        let (inline, rest) = if payload.len() <= INLINE_BODY {
            (payload, &[][..])
        } else {
            (&[][..], payload)
        };
        conn.write_with(p.bound + inline.len(), |out| {
            emit(out, &p, &info, status, headers, framing, d);
            out.put(inline);
        })?;
        if !rest.is_empty() {
            conn.write(rest)?;
        }
        self.tally.response(status);
        self.outcome = Outcome::Sent { close: p.close };
        Ok(())
    }

    /// Sends the status and headers of a streamed response; the body follows with
    /// [`Response::write_chunk`] and ends with [`Response::finish`] (chunked coding for
    /// HTTP/1.1, close-delimited for HTTP/1.0). The pieces leave when the handler returns
    /// and count against `max_write_buffer` together (`WriteOverflow` past it): for a large
    /// or endless body, [`Response::defer`] and stream with [`Deferred::start_chunked`] from
    /// another thread.
    pub fn start_chunked<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(N, V)],
    ) -> Result<()> {
        self.fresh()?;
        let info = self.info;
        let p = plan(&info, status, headers, Body::Streamed)?;
        let d = self.date;
        self.conn.write_with(p.bound, |out| {
            emit(out, &p, &info, status, headers, Body::Streamed, d);
        })?;
        self.tally.response(status);
        self.outcome = Outcome::Streaming {
            close: p.close,
            chunked: p.chunked,
            body: p.body_allowed,
        };
        Ok(())
    }

    /// Whether the streamed response started here carries a body: false for an answer to
    /// HEAD and for status 204 or 304 (RFC 9112 §6.3), whose pieces are dropped, so a
    /// handler can skip producing them. False before [`Response::start_chunked`].
    pub fn streams_body(&self) -> bool {
        matches!(self.outcome, Outcome::Streaming { body: true, .. }) && !self.info.head
    }

    /// Sends one piece of a streamed body (an empty piece sends nothing).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        let Outcome::Streaming { chunked, body, .. } = self.outcome else {
            return Err(Error::InvalidResponse("no streamed response was started"));
        };
        // HEAD, 204 and 304 responses end with their head (RFC 9112 §6.3): no body bytes.
        if data.is_empty() || self.info.head || !body {
            return Ok(());
        }
        if chunked {
            let mut p = [0u8; 18];
            let prefix = chunk_prefix(data.len(), &mut p);
            self.conn.write_vectored(&[
                IoSlice::new(prefix),
                IoSlice::new(data),
                IoSlice::new(b"\r\n"),
            ])
        } else {
            self.conn.write(data)
        }
    }

    /// Ends a streamed body.
    pub fn finish(&mut self) -> Result<()> {
        let Outcome::Streaming { close, chunked, .. } = self.outcome else {
            return Err(Error::InvalidResponse("no streamed response was started"));
        };
        if chunked && !self.info.head {
            self.conn.write(b"0\r\n\r\n")?;
        }
        self.outcome = Outcome::Sent { close };
        Ok(())
    }

    /// Takes the response away from the handler, to be answered later from any thread (a
    /// proxy waiting for its upstream). Requests pipelined behind this one wait, so responses
    /// stay in order. Dropping the [`Deferred`] unanswered sends a 500.
    pub fn defer(&mut self) -> Result<Deferred> {
        self.fresh()?;
        self.outcome = Outcome::Deferred;
        inc(&self.stats[self.conn.id().reactor()].deferred);
        let state = Arc::new(AtomicU8::new(0));
        IN_HANDLER.set(Some(Mark {
            id: self.conn.id(),
            dropped: false,
            state: state.clone(),
        }));
        Ok(Deferred {
            handle: self.conn.handle().clone(),
            id: self.conn.id(),
            info: self.info,
            stats: self.stats.clone(),
            done: false,
            state,
        })
    }
}

/// A response deferred by the handler running on this thread.
#[derive(Debug)]
pub(crate) struct Mark {
    id: ConnId,
    /// The [`Deferred`] was dropped unanswered before the handler's failure or return was
    /// seen (a panic unwinding through it, a binding dropping it with its error): the request
    /// loop answers the 500 itself, in order, and counts one failure.
    pub(crate) dropped: bool,
    /// Shared with the `Deferred` (see [`DeferState`]).
    pub(crate) state: DeferState,
}

/// What became of a deferred response, shared by its [`Deferred`] (and the [`ChunkedBody`]
/// it starts) with the connection's request loop: bits that only ever get set. The answer
/// and the `response_timeout` race through one `fetch_or` each, so exactly one of them wins:
/// a timed-out answer is refused before anything of it is queued, and a timer that finds the
/// answer complete lets it arrive.
pub(crate) type DeferState = Arc<AtomicU8>;

/// A failure of the request was counted (its drop unanswered later counts no other).
pub(crate) const COUNTED: u8 = 1;
/// A streamed answer began.
pub(crate) const STARTED: u8 = 2;
/// The whole answer was handed to the reactor.
pub(crate) const SENT: u8 = 4;
/// `response_timeout` passed first: the connection answered 503 or was cut.
pub(crate) const TIMED_OUT: u8 = 8;
/// The request loop's note: the request is a HEAD request (its 503 carries no body).
pub(crate) const HEAD_REQUEST: u8 = 16;

thread_local! {
    static IN_HANDLER: Cell<Option<Mark>> = const { Cell::new(None) };
}

/// After the handler of `id` returned or failed with its response deferred: the mark its
/// `defer` left. Clears it.
pub(crate) fn take_mark(id: ConnId) -> Option<Mark> {
    IN_HANDLER.take().filter(|m| m.id == id)
}

/// After a deferred or streamed response completed from another thread: carry on with the
/// next pipelined request, or close.
fn complete(handle: &ServerHandle, id: ConnId, close: bool) -> Result<()> {
    if close {
        handle.shutdown(id)
    } else {
        handle.resume(id)
    }
}

/// A response to be given later, from any thread: `Send`, and tied to its connection by a
/// generation-checked id, so answering after the connection closed fails with
/// [`Error::Closed`] and never reaches another connection.
///
/// With [`HttpConfig::response_timeout`](super::HttpConfig::response_timeout) set, an answer
/// still incomplete that long after its request is given up: the client gets a 503 and the
/// connection closes (nothing of the answer sent yet), or the connection is cut (a stream
/// under way, which never looks complete), and a later answer fails with [`Error::Closed`].
#[derive(Debug)]
#[must_use = "dropping a Deferred unanswered sends a 500"]
pub struct Deferred {
    handle: ServerHandle,
    id: ConnId,
    info: Info,
    stats: Arc<[Counters]>,
    done: bool,
    state: DeferState,
}

impl Deferred {
    /// The connection this response belongs to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    fn counters(&self) -> &Counters {
        &self.stats[self.id.reactor()]
    }

    /// Sends the complete response (as [`Response::send`]). On an invalid header nothing is
    /// sent and the `Deferred` can be answered again. [`Error::Closed`] once the connection
    /// is gone, or `response_timeout` gave the answer up.
    pub fn send<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(N, V)],
        body: &[u8],
    ) -> Result<()> {
        if self.done {
            return Err(Error::InvalidResponse("the response was already started"));
        }
        let facts = check_fields(headers)?;
        self.send_fields(status, headers, facts, body)
    }

    /// Sends the complete response with prepared header fields (as
    /// [`Response::send_prepared`]; the same errors as [`Deferred::send`]).
    pub fn send_prepared(
        &mut self,
        status: u16,
        headers: &PreparedHeaders,
        body: &[u8],
    ) -> Result<()> {
        self.send_fields(status, headers, headers.facts, body)
    }

    fn send_fields<F: Fields + ?Sized>(
        &mut self,
        status: u16,
        headers: &F,
        facts: Facts,
        body: &[u8],
    ) -> Result<()> {
        if self.done {
            return Err(Error::InvalidResponse("the response was already started"));
        }
        let framing = Body::Length(body.len());
        let p = plan_checked(&self.info, status, facts, framing)?;
        let mut out = Vec::with_capacity(p.bound + body.len());
        with_date(Instant::now(), |d| {
            write_planned(&mut out, &p, &self.info, status, headers, framing, d);
        });
        let close = p.close;
        if !self.info.head && p.body_allowed {
            out.extend_from_slice(body);
        }
        self.done = true;
        if self.state.fetch_or(SENT, Ordering::AcqRel) & TIMED_OUT != 0 {
            return Err(Error::Closed);
        }
        self.handle.queue(self.id, out)?;
        self.counters().response(status);
        complete(&self.handle, self.id, close)
    }

    /// Starts a streamed response (as [`Response::start_chunked`]); the returned
    /// [`ChunkedBody`] sends the body from any thread. [`Error::Closed`] once the connection
    /// is gone, or `response_timeout` gave the answer up.
    pub fn start_chunked<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(N, V)],
    ) -> Result<ChunkedBody> {
        if self.done {
            return Err(Error::InvalidResponse("the response was already started"));
        }
        let mut out = Vec::with_capacity(256);
        let (close, chunked) = with_date(Instant::now(), |d| {
            write_head(&mut out, &self.info, status, headers, Body::Streamed, d)
        })?;
        self.done = true;
        if self.state.fetch_or(STARTED, Ordering::AcqRel) & TIMED_OUT != 0 {
            return Err(Error::Closed);
        }
        self.handle.queue(self.id, out)?;
        self.counters().response(status);
        Ok(ChunkedBody {
            state: self.state.clone(),
            pacer: Arc::new(Pacer::new(self.handle.low_watermark(), true)),
            handle: self.handle.clone(),
            id: self.id,
            // HEAD, 204 and 304 responses end with their head (RFC 9112 §6.3).
            no_body: self.info.head || !has_body(status),
            close,
            chunked,
            finished: false,
        })
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.done && self.state.load(Ordering::Acquire) & TIMED_OUT != 0 {
            // `response_timeout` gave the answer up already (and answered 503 for it).
            return;
        }
        if !self.done {
            log::warn!(
                "deferred response on connection {:?} dropped unanswered; sending 500",
                self.id
            );
            let mark = IN_HANDLER.take();
            if let Some(m) = mark
                .as_ref()
                .filter(|m| m.id == self.id && !m.dropped && Arc::ptr_eq(&m.state, &self.state))
            {
                // Dropped inside the handler that deferred it (or as its panic unwinds): the
                // request loop answers the 500 and counts the failure once.
                IN_HANDLER.set(Some(Mark {
                    id: m.id,
                    dropped: true,
                    state: m.state.clone(),
                }));
                return;
            }
            IN_HANDLER.set(mark);
            // A handler failure: the connection does not carry on after it. After
            // `response_timeout` the connection answered 503 already, and the timeout was
            // counted instead.
            let _ = self.send(500, &[("Connection", "close")], b"");
            if self.state.fetch_or(COUNTED, Ordering::AcqRel) & (COUNTED | TIMED_OUT) == 0
                && let Some(c) = self.stats.get(self.id.reactor())
            {
                inc(&c.handler_failures);
            }
        }
    }
}

/// Waits for room in a [`ChunkedBody`]'s connection (from [`ChunkedBody::waiter`]).
#[derive(Debug, Clone)]
pub struct BodyWaiter {
    pacer: Arc<Pacer>,
    handle: ServerHandle,
    id: ConnId,
}

impl BodyWaiter {
    /// As [`ChunkedBody::wait_writable`].
    pub fn wait_writable(&self, timeout: Option<Duration>) -> Result<bool> {
        self.pacer.wait(&self.handle, self.id, timeout)
    }

    /// As [`ChunkedBody::queued`].
    pub fn queued(&self) -> usize {
        self.pacer.queued()
    }
}

/// The body of a streamed response answered from another thread. Dropping it before
/// [`ChunkedBody::finish`] aborts the connection, so a truncated body never looks complete.
#[derive(Debug)]
#[must_use = "dropping a ChunkedBody unfinished aborts the connection"]
pub struct ChunkedBody {
    handle: ServerHandle,
    /// Shared with the request loop, for `response_timeout` (see [`DeferState`]).
    state: DeferState,
    id: ConnId,
    /// Flow control: what this body has queued, and the wait for it to drain.
    pacer: Arc<Pacer>,
    /// Nothing of the body is sent (HEAD, 204, 304).
    no_body: bool,
    close: bool,
    chunked: bool,
    finished: bool,
}

impl ChunkedBody {
    /// Whether this response carries a body: false for an answer to HEAD and for status 204
    /// or 304 (RFC 9112 §6.3), whose pieces are dropped, so a producer can skip them.
    pub fn streams_body(&self) -> bool {
        !self.no_body
    }

    /// The connection this response belongs to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Bytes of this response written and not yet handed to the kernel (in the reactor's
    /// inbox or the connection's output queue).
    pub fn queued(&self) -> usize {
        self.pacer.queued()
    }

    /// Waits until at most the low watermark (`write_low_watermark`) of output is queued, so
    /// the next pieces stay within `max_write_buffer` however slowly the client reads: call
    /// it before each write of a large or endless body. `Ok(true)` when writable, `Ok(false)`
    /// when `timeout` passed first (`None`: no limit); [`Error::Closed`] once the connection
    /// is gone; [`Error::WrongThread`] on one of the server's own threads (its reactor could
    /// not flush while it waited).
    pub fn wait_writable(&self, timeout: Option<Duration>) -> Result<bool> {
        self.pacer.wait(&self.handle, self.id, timeout)
    }

    /// A handle to [`ChunkedBody::wait_writable`] and [`ChunkedBody::queued`] that does not
    /// borrow the body: one thread may wait while another holds the body (a binding that
    /// keeps the body behind a lock waits without holding it).
    pub fn waiter(&self) -> BodyWaiter {
        BodyWaiter {
            pacer: self.pacer.clone(),
            handle: self.handle.clone(),
            id: self.id,
        }
    }

    /// Sends one piece of the body (an empty piece sends nothing). It is queued at once
    /// whatever is queued already: past `max_write_buffer` the connection is reset, so a large
    /// body waits for [`ChunkedBody::wait_writable`] between pieces.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::InvalidResponse("the body is finished"));
        }
        if data.is_empty() || self.no_body {
            return Ok(());
        }
        let mut out = Vec::with_capacity(data.len() + 24);
        if self.chunked {
            let mut p = [0u8; 18];
            out.extend_from_slice(chunk_prefix(data.len(), &mut p));
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(data);
        }
        self.handle.write_paced(self.id, out, &self.pacer)
    }

    /// Ends the body; the connection goes on to the next request (or closes).
    /// [`Error::Closed`] once the connection is gone (`response_timeout` cut it, say).
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        if self.state.fetch_or(SENT, Ordering::AcqRel) & TIMED_OUT != 0 {
            // `response_timeout` cut the connection.
            return Err(Error::Closed);
        }
        if self.chunked && !self.no_body {
            self.handle.queue(self.id, b"0\r\n\r\n".to_vec())?;
        }
        complete(&self.handle, self.id, self.close)
    }
}

impl Drop for ChunkedBody {
    fn drop(&mut self) {
        if !self.finished {
            log::warn!(
                "streamed response on connection {:?} dropped unfinished; aborting",
                self.id
            );
            let _ = self.handle.abort(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: Info = Info {
        version: 1,
        head: false,
        keep_alive: true,
    };
    const DATE: &[u8; DATE_LINE_LEN] = b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";

    #[test]
    fn serializes_status_headers_and_length() {
        let mut out = Vec::new();
        let (close, _) = write_head(
            &mut out,
            &INFO,
            200,
            &[("Content-Type", "text/plain")],
            Body::Length(13),
            DATE,
        )
        .unwrap();
        assert!(!close);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 13\r\n\r\n"
        );
    }

    #[test]
    fn prepared_fields_serialize_as_pairs_do() {
        let pairs = [("Content-Type", "text/plain"), ("X-A", "b")];
        let prepared = PreparedHeaders::new(&pairs).unwrap();
        assert_eq!(
            prepared.as_bytes(),
            b"Content-Type: text/plain\r\nX-A: b\r\n"
        );
        // Fields that change the head shoal adds: its own Date and Connection lines give way.
        let own: [(&str, &str); 2] = [
            ("Connection", "close"),
            ("Date", "Sun, 29 Nov 2026 00:00:00 GMT"),
        ];
        for pairs in [&pairs[..], &own[..]] {
            let prepared = PreparedHeaders::new(pairs).unwrap();
            for status in [200, 201, 204, 404, 500, 599] {
                for info in [
                    INFO,
                    Info { version: 0, ..INFO },
                    Info {
                        keep_alive: false,
                        ..INFO
                    },
                    Info { head: true, ..INFO },
                ] {
                    let body = Body::Length(5);
                    let mut a = Vec::new();
                    write_head(&mut a, &info, status, pairs, body, DATE).unwrap();
                    let p = plan_checked(&info, status, prepared.facts, body).unwrap();
                    let mut b = Vec::new();
                    write_planned(&mut b, &p, &info, status, &prepared, body, DATE);
                    let text = String::from_utf8_lossy(&b);
                    assert_eq!(String::from_utf8_lossy(&a), text);
                    let line = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                    assert!(b.starts_with(line.as_bytes()), "{status}");
                    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
                    assert_eq!(text.matches("Date: ").count(), 1, "{text}");
                    assert!(text.matches("Connection: ").count() <= 1, "{text}");
                    assert!(text.ends_with("\r\n\r\n"), "{text}");
                }
            }
        }
    }

    #[test]
    fn rejects_injection_and_framing_headers() {
        let mut out = b"keep".to_vec();
        for (n, v) in [
            ("X-Evil", "a\r\nSet-Cookie: x"),
            ("X-Evil", "a\nb"),
            ("X-Evil", "a\0b"),
            ("Bad Name", "v"),
            ("", "v"),
            ("Content-Length", "5"),
            ("transfer-encoding", "chunked"),
        ] {
            assert!(
                write_head(&mut out, &INFO, 200, &[(n, v)], Body::Length(0), DATE).is_err(),
                "{n}: {v:?}"
            );
            assert_eq!(out, b"keep", "nothing written on error");
        }
        assert!(write_head(&mut out, &INFO, 100, &[("a", "b")], Body::Length(0), DATE).is_err());
    }

    /// The word-at-a-time check agrees with the byte table for every byte at every position
    /// of a word and of the tail, next to valid neighbours of every kind.
    #[test]
    fn value_check_matches_the_byte_table() {
        let bytewise = |v: &[u8]| {
            v.iter()
                .all(|&b| CLASSES[usize::from(b)] & FIELD_VCHAR != 0)
        };
        for fill in [b'a', b' ', b'\t', 0x80, 0xff, 0x7e] {
            for len in [1, 7, 8, 9, 16, 21] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut v = vec![fill; len];
                        v[at] = b;
                        assert_eq!(valid_value(&v), bytewise(&v), "{v:?}");
                    }
                }
            }
        }
        assert!(valid_value(b""));
        assert!(all_in(b"Content-Type", TCHAR) && !all_in(b"Content Type", TCHAR));
    }

    #[test]
    fn close_and_version_rules() {
        let mut out = Vec::new();
        let closing = Info {
            keep_alive: false,
            ..INFO
        };
        let (close, _) = write_head(
            &mut out,
            &closing,
            404,
            &[("a", "b")],
            Body::Length(0),
            DATE,
        )
        .unwrap();
        assert!(close);
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
        out.clear();
        let v10 = Info { version: 0, ..INFO };
        let (close, chunked) =
            write_head(&mut out, &v10, 200, &[("a", "b")], Body::Streamed, DATE).unwrap();
        assert!(close && !chunked, "HTTP/1.0 streams close-delimited");
        out.clear();
        let (close, _) = write_head(
            &mut out,
            &INFO,
            200,
            &[("Connection", "close")],
            Body::Length(0),
            DATE,
        )
        .unwrap();
        assert!(close);
        out.clear();
        write_head(&mut out, &INFO, 204, &[("a", "b")], Body::Length(5), DATE).unwrap();
        assert!(!out.windows(14).any(|w| w == b"Content-Length"));
    }

    #[test]
    fn content_length_lines() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            999,
            1_000,
            9_999,
            10_000,
            123_456_789,
            usize::MAX,
        ] {
            let (line, len) = content_length_line(n);
            assert_eq!(line[..len], *format!("Content-Length: {n}\r\n").as_bytes());
        }
    }

    #[test]
    fn chunk_prefixes() {
        let mut b = [0u8; 18];
        assert_eq!(chunk_prefix(0x1f, &mut b), b"1f\r\n");
        assert_eq!(chunk_prefix(1, &mut b), b"1\r\n");
        assert_eq!(chunk_prefix(0x10000, &mut b), b"10000\r\n");
    }
}
