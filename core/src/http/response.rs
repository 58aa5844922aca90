//! Responses, serialized straight into the connection's output queue: at once from the
//! handler ([`Response`]), or later from any thread ([`Deferred`], [`ChunkedBody`]).

use std::cell::RefCell;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use super::date::{DATE_LEN, with_date};
use super::stats::{Counters, inc};
use crate::conn::{Conn, ConnId};
use crate::error::{Error, Result};
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
    /// Head sent, body streaming; `chunked` false means close-delimited (HTTP/1.0).
    Streaming { close: bool, chunked: bool },
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

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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

/// Appends a status line and header block to `out`. User headers are validated (a token
/// name; no CR, LF, NUL or other control byte in the value), framing headers are shoal's.
/// Returns whether the connection must close after this response.
pub(crate) fn write_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    info: &Info,
    status: u16,
    headers: &[(N, V)],
    body: Body,
    date: &[u8; DATE_LEN],
) -> Result<(bool, bool)> {
    if !(200..=999).contains(&status) {
        return Err(Error::InvalidResponse(
            "status must be in 200..=999 (interim responses are shoal's)",
        ));
    }
    let start = out.len();
    let result = write_head_inner(out, info, status, headers, body, date);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_head_inner<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    info: &Info,
    status: u16,
    headers: &[(N, V)],
    body: Body,
    date: &[u8; DATE_LEN],
) -> Result<(bool, bool)> {
    let mut close = !info.keep_alive;
    let mut has_date = false;
    let mut has_connection = false;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Error::InvalidResponse("header name is not a token"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::InvalidResponse(
                "header value contains CR, LF, NUL or another control byte",
            ));
        }
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return Err(Error::InvalidResponse(
                "Content-Length and Transfer-Encoding are set by shoal",
            ));
        }
        if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            has_connection = true;
            if value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                close = true;
            }
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    let mut chunked = false;
    if has_body(status) {
        match body {
            Body::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                let mut v = n;
                loop {
                    i -= 1;
                    digits[i] = b'0' + (v % 10) as u8;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                out.extend_from_slice(&digits[i..]);
                out.extend_from_slice(b"\r\n");
            }
            Body::Streamed if info.version == 1 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                chunked = true;
            }
            // HTTP/1.0 has no chunked coding: the body ends when the connection closes.
            Body::Streamed => close = true,
        }
    }
    if !has_connection {
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if info.version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok((close, chunked))
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

thread_local! {
    /// The status line and headers of an inline response are built here, then queued.
    static HEAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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
    counters: &'r Counters,
    stats: &'r Arc<[Counters]>,
}

impl<'r, 'c> Response<'r, 'c> {
    pub(crate) fn new(
        conn: &'r mut Conn<'c>,
        info: Info,
        counters: &'r Counters,
        stats: &'r Arc<[Counters]>,
    ) -> Self {
        Response {
            conn,
            info,
            outcome: Outcome::Fresh,
            counters,
            stats,
        }
    }

    /// The connection, for its id, addresses, timers or handle.
    pub fn conn(&mut self) -> &mut Conn<'c> {
        self.conn
    }

    /// Whether the connection stays open after this response (so far: a `Connection: close`
    /// header in the response also closes it).
    pub fn keep_alive(&self) -> bool {
        self.info.keep_alive
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
        let info = self.info;
        let conn = &mut *self.conn;
        let now = conn.now();
        let close = HEAD.with_borrow_mut(|head| {
            head.clear();
            let (close, _) = with_date(now, |d| {
                write_head(head, &info, status, headers, Body::Length(body.len()), d)
            })?;
            let body = if info.head || !has_body(status) {
                &[][..]
            } else {
                body
            };
            conn.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])?;
            Ok::<_, Error>(close)
        })?;
        self.counters.response(status);
        self.outcome = Outcome::Sent { close };
        Ok(())
    }

    /// Sends the status and headers of a streamed response; the body follows with
    /// [`Response::write_chunk`] and ends with [`Response::finish`] (chunked coding for
    /// HTTP/1.1, close-delimited for HTTP/1.0).
    pub fn start_chunked<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(N, V)],
    ) -> Result<()> {
        self.fresh()?;
        let info = self.info;
        let conn = &mut *self.conn;
        let now = conn.now();
        let (close, chunked) = HEAD.with_borrow_mut(|head| {
            head.clear();
            let r = with_date(now, |d| {
                write_head(head, &info, status, headers, Body::Streamed, d)
            })?;
            conn.write(head)?;
            Ok::<_, Error>(r)
        })?;
        self.counters.response(status);
        self.outcome = Outcome::Streaming { close, chunked };
        Ok(())
    }

    /// Sends one piece of a streamed body (an empty piece sends nothing).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        let Outcome::Streaming { chunked, .. } = self.outcome else {
            return Err(Error::InvalidResponse("no streamed response was started"));
        };
        if data.is_empty() || self.info.head {
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
        let Outcome::Streaming { close, chunked } = self.outcome else {
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
        inc(&self.counters.deferred);
        Ok(Deferred {
            handle: self.conn.handle().clone(),
            id: self.conn.id(),
            info: self.info,
            stats: self.stats.clone(),
            done: false,
        })
    }
}

/// After a deferred or streamed response completed from another thread: carry on with the
/// next pipelined request, or close.
fn complete(handle: &ServerHandle, id: ConnId, close: bool) -> Result<()> {
    if close {
        handle.shutdown(id)
    } else {
        handle.resume_input(id)
    }
}

/// A response to be given later, from any thread: `Send`, and tied to its connection by a
/// generation-checked id, so answering after the connection closed fails with
/// [`Error::Closed`] and never reaches another connection.
#[derive(Debug)]
#[must_use = "dropping a Deferred unanswered sends a 500"]
pub struct Deferred {
    handle: ServerHandle,
    id: ConnId,
    info: Info,
    stats: Arc<[Counters]>,
    done: bool,
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
    /// sent and the `Deferred` can be answered again.
    pub fn send<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(N, V)],
        body: &[u8],
    ) -> Result<()> {
        if self.done {
            return Err(Error::InvalidResponse("the response was already started"));
        }
        let mut out = Vec::with_capacity(256 + body.len());
        let (close, _) = with_date(Instant::now(), |d| {
            write_head(
                &mut out,
                &self.info,
                status,
                headers,
                Body::Length(body.len()),
                d,
            )
        })?;
        if !self.info.head && has_body(status) {
            out.extend_from_slice(body);
        }
        self.done = true;
        self.handle.write_owned(self.id, out)?;
        self.counters().response(status);
        complete(&self.handle, self.id, close)
    }

    /// Starts a streamed response (as [`Response::start_chunked`]); the returned
    /// [`ChunkedBody`] sends the body from any thread.
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
        self.handle.write_owned(self.id, out)?;
        self.counters().response(status);
        Ok(ChunkedBody {
            handle: self.handle.clone(),
            id: self.id,
            head: self.info.head,
            close,
            chunked,
            finished: false,
        })
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.done {
            log::warn!(
                "deferred response on connection {:?} dropped unanswered; sending 500",
                self.id
            );
            // A handler failure: the connection does not carry on after it.
            let _ = self.send(500, &[("Connection", "close")], b"");
            if let Some(c) = self.stats.get(self.id.reactor()) {
                inc(&c.handler_failures);
            }
        }
    }
}

/// The body of a streamed response answered from another thread. Dropping it before
/// [`ChunkedBody::finish`] aborts the connection, so a truncated body never looks complete.
#[derive(Debug)]
#[must_use = "dropping a ChunkedBody unfinished aborts the connection"]
pub struct ChunkedBody {
    handle: ServerHandle,
    id: ConnId,
    head: bool,
    close: bool,
    chunked: bool,
    finished: bool,
}

impl ChunkedBody {
    /// The connection this response belongs to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Sends one piece of the body (an empty piece sends nothing).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::InvalidResponse("the body is finished"));
        }
        if data.is_empty() || self.head {
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
        self.handle.write_owned(self.id, out)
    }

    /// Ends the body; the connection goes on to the next request (or closes).
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        if self.chunked && !self.head {
            self.handle.write(self.id, b"0\r\n\r\n")?;
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
    const DATE: &[u8; DATE_LEN] = b"Thu, 01 Jan 1970 00:00:00 GMT";

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
    fn chunk_prefixes() {
        let mut b = [0u8; 18];
        assert_eq!(chunk_prefix(0x1f, &mut b), b"1f\r\n");
        assert_eq!(chunk_prefix(1, &mut b), b"1\r\n");
        assert_eq!(chunk_prefix(0x10000, &mut b), b"10000\r\n");
    }
}
