//! Request heads: tokenized by `httparse` (the request line of the common form by a strict
//! shortcut that agrees with it, `common_request_line`), then checked against the framing
//! and validity rules of RFC 9112 that a tokenizer leaves to its caller (the
//! request-smuggling lessons of hyper, Go's net/http, nginx and llhttp).

use std::mem::MaybeUninit;

/// Most header fields a request may carry (the `max_headers` setting is capped by it).
pub const MAX_HEADERS: usize = 256;

/// Why a request was rejected. Each maps to one status code and one stats counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseError {
    /// Malformed method, target or version token, or several spaces between them
    /// (RFC 9112 §3).
    BadRequestLine,
    /// A field line without a colon, an empty or non-token field name, whitespace before
    /// the colon, obs-fold, or a control byte in a value (RFC 9112 §5, §5.1, §5.2).
    BadHeader,
    /// A line ending in a bare LF, or a bare CR (RFC 9112 §2.2: not accepted here).
    BareLineFeed,
    /// The head is larger than `max_header_bytes` (431).
    HeadTooLarge,
    /// More than `max_headers` fields (431).
    TooManyHeaders,
    /// The request target is longer than `max_target_len` (414).
    UriTooLong,
    /// An HTTP major version other than 1 (505).
    UnsupportedVersion,
    /// HTTP/1.1 without a Host field (RFC 9112 §3.2).
    MissingHost,
    /// More than one Host field (RFC 9112 §3.2).
    DuplicateHost,
    /// A Host value that is not `uri-host [":" port]` (RFC 9112 §3.2, RFC 3986 §3.2.2).
    BadHost,
    /// A Content-Length that is not 1*DIGIT, overflows, or appears more than once or as a
    /// list (RFC 9112 §6.3).
    BadContentLength,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.1, §6.3).
    ContentLengthWithTransferEncoding,
    /// `chunked` missing, not last or repeated, or Transfer-Encoding in an HTTP/1.0
    /// request (RFC 9112 §6.1, §6.3): the body length cannot be determined.
    BadTransferEncoding,
    /// A transfer coding other than `chunked` applied before a final `chunked` (501,
    /// RFC 9112 §6.1).
    UnsupportedTransferEncoding,
    /// An Expect other than `100-continue` (417).
    UnsupportedExpectation,
    /// A declared or accumulated body larger than `max_body_size` (413).
    BodyTooLarge,
    /// A malformed chunk-size line, chunk data not followed by CRLF, or a bad trailer
    /// section (RFC 9112 §7.1).
    BadChunk,
    /// A chunk-size line (extensions included) longer than `max_chunk_line`.
    ChunkLineTooLong,
}

impl ParseError {
    /// Number of kinds.
    pub const COUNT: usize = 18;

    /// Every kind, in [`ParseError::index`] order.
    pub const ALL: [ParseError; Self::COUNT] = [
        ParseError::BadRequestLine,
        ParseError::BadHeader,
        ParseError::BareLineFeed,
        ParseError::HeadTooLarge,
        ParseError::TooManyHeaders,
        ParseError::UriTooLong,
        ParseError::UnsupportedVersion,
        ParseError::MissingHost,
        ParseError::DuplicateHost,
        ParseError::BadHost,
        ParseError::BadContentLength,
        ParseError::ContentLengthWithTransferEncoding,
        ParseError::BadTransferEncoding,
        ParseError::UnsupportedTransferEncoding,
        ParseError::UnsupportedExpectation,
        ParseError::BodyTooLarge,
        ParseError::BadChunk,
        ParseError::ChunkLineTooLong,
    ];

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }

    /// The status code the server answers with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::UriTooLong => 414,
            ParseError::UnsupportedVersion => 505,
            ParseError::UnsupportedTransferEncoding => 501,
            ParseError::UnsupportedExpectation => 417,
            ParseError::BodyTooLarge => 413,
            _ => 400,
        }
    }

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ParseError::BadRequestLine => "bad_request_line",
            ParseError::BadHeader => "bad_header",
            ParseError::BareLineFeed => "bare_line_feed",
            ParseError::HeadTooLarge => "head_too_large",
            ParseError::TooManyHeaders => "too_many_headers",
            ParseError::UriTooLong => "uri_too_long",
            ParseError::UnsupportedVersion => "unsupported_version",
            ParseError::MissingHost => "missing_host",
            ParseError::DuplicateHost => "duplicate_host",
            ParseError::BadHost => "bad_host",
            ParseError::BadContentLength => "bad_content_length",
            ParseError::ContentLengthWithTransferEncoding => {
                "content_length_with_transfer_encoding"
            }
            ParseError::BadTransferEncoding => "bad_transfer_encoding",
            ParseError::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            ParseError::UnsupportedExpectation => "unsupported_expectation",
            ParseError::BodyTooLarge => "body_too_large",
            ParseError::BadChunk => "bad_chunk",
            ParseError::ChunkLineTooLong => "chunk_line_too_long",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What the server needs to know about a parsed head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// Bytes of the head, final CRLF included.
    pub(crate) len: usize,
    /// Minor version: 0 or 1.
    pub(crate) version: u8,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) is_head: bool,
}

/// The limits a head is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_target_len: usize,
    pub(crate) max_body_size: u64,
    pub(crate) max_chunk_line: usize,
}

/// A parsed request head: the tokenizer's view plus the checked facts.
pub(crate) struct Parsed<'h, 'b> {
    pub(crate) method: &'b str,
    pub(crate) target: &'b str,
    pub(crate) headers: &'h [httparse::Header<'b>],
    pub(crate) head: Head,
}

/// Slots for the header fields httparse tokenizes, made ready (initialized) only as far as a
/// request needs: one set serves every request of a pass over a connection's input, so a
/// pass of pipelined requests readies them once, and a request with few fields does not pay
/// for `max_headers` of them.
pub(crate) struct FieldSlots<'b> {
    slots: [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS],
    /// `slots[..ready]` are initialized.
    ready: usize,
}

/// Slots readied for a first attempt; a request with more fields is tokenized again with
/// all `max_headers`.
const FIRST_SLOTS: usize = 16;

/// The first slots, ready to copy.
static EMPTY_SLOTS: [MaybeUninit<httparse::Header<'static>>; FIRST_SLOTS] =
    [MaybeUninit::new(httparse::EMPTY_HEADER); FIRST_SLOTS];

impl<'b> FieldSlots<'b> {
    pub(crate) fn new() -> Self {
        FieldSlots {
            slots: [const { MaybeUninit::uninit() }; MAX_HEADERS],
            ready: 0,
        }
    }

    /// The first `n` slots (at most [`MAX_HEADERS`]), initialized.
    fn first(&mut self, n: usize) -> &mut [httparse::Header<'b>] {
        let n = n.min(MAX_HEADERS);
        if self.ready < n {
            // The first slots are copied from a ready-made block (one `memcpy`), the rest
            // filled one by one.
            let from = self.ready;
            let copied = n.min(FIRST_SLOTS).max(from);
            if from < copied {
                self.slots[from..copied].copy_from_slice(&EMPTY_SLOTS[from..copied]);
            }
            self.slots[copied..n].fill(MaybeUninit::new(httparse::EMPTY_HEADER));
            self.ready = n;
        }
        let slots = &mut self.slots[..n];
        // SAFETY: `n <= ready`, and `slots[..ready]` are initialized (filled just above or by
        // an earlier call, and `ready` never decreases); `MaybeUninit<T>` has the
        // layout of `T`, so the initialized prefix may be viewed as `[T]`.
        unsafe {
            &mut *(slots as *mut [MaybeUninit<httparse::Header<'b>>]
                as *mut [httparse::Header<'b>])
        }
    }
}

/// The request line in its common form — at the very start of the buffer, a method of
/// capital letters, one space, a target of visible ASCII, one space, `HTTP/1.1` or
/// `HTTP/1.0`, CR LF — recognized in a few word operations. Returns the method, the
/// target, the minor version and the line's length. Everything this accepts, httparse's
/// request-line parser accepts with the same result (a property test holds it to that);
/// anything else (empty lines first, other method or target bytes, bare LF, a partial
/// line) is left to httparse.
#[inline(always)]
pub(crate) fn common_request_line(buf: &[u8]) -> Option<(&str, &str, u8, usize)> {
    let m = prefix_in::<b'A', b'Z'>(buf);
    if m == 0 || buf.get(m) != Some(&b' ') {
        return None;
    }
    let t_start = m + 1;
    let t = t_start + visible_ascii_prefix(&buf[t_start..]);
    if t == t_start || buf.get(t) != Some(&b' ') {
        return None;
    }
    let tail = buf.get(t + 1..)?.first_chunk::<10>()?;
    let version = if *tail == *b"HTTP/1.1\r\n" {
        1
    } else if *tail == *b"HTTP/1.0\r\n" {
        0
    } else {
        return None;
    };
    debug_assert!(buf[..m].is_ascii() && buf[t_start..t].is_ascii());
    // SAFETY: `buf[..m]` are capital letters and `buf[t_start..t]` visible ASCII (both
    // checked above): ASCII is valid UTF-8.
    let (method, target) = unsafe {
        (
            std::str::from_utf8_unchecked(&buf[..m]),
            std::str::from_utf8_unchecked(&buf[t_start..t]),
        )
    };
    Some((method, target, version, t + 11))
}

/// How many bytes at the start of `buf` are visible ASCII (`!` to `~`).
#[inline]
fn visible_ascii_prefix(buf: &[u8]) -> usize {
    prefix_in::<b'!', b'~'>(buf)
}

/// How many bytes at the start of `buf` lie in `LO..=HI` (`1 <= LO <= HI < 0x7f`), eight at
/// a time.
#[inline(always)]
fn prefix_in<const LO: u8, const HI: u8>(buf: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let above = (0x80 - (HI as u64 + 1)) * ONES;
    let below = (0x80 - LO as u64) * ONES;
    let mut at = 0;
    while let Some(w) = buf.get(at..at + 8) {
        let w = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        // Per byte b: b >= 0x80, b + (0x80 - HI - 1) >= 0x80 (b > HI) or b + (0x80 - LO) <
        // 0x80 (b < LO). A byte below 0x80 carries into no other (both sums stay below
        // 0x100); a byte at or above is flagged itself, and its carry only reaches bytes
        // after it: the lowest flagged byte is the first bad one.
        let bad = (w | w.wrapping_add(above) | !w.wrapping_add(below)) & HIGH;
        if bad != 0 {
            return at + (bad.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + buf[at..]
        .iter()
        .take_while(|b| (LO..=HI).contains(b))
        .count()
}

/// `name` is `Host` in any case: one word comparison (setting bit 5 lower-cases a letter and
/// maps no other byte onto one, so this is exact for any bytes).
#[inline]
fn is_host(name: &[u8]) -> bool {
    match name.first_chunk::<4>() {
        Some(w) if name.len() == 4 => {
            u32::from_le_bytes(*w) | 0x2020_2020 == u32::from_le_bytes(*b"host")
        }
        _ => false,
    }
}

/// Bytes of a `reg-name` (RFC 3986 §3.2.2: unreserved, pct-encoded, sub-delims).
const REG_NAME: u8 = 1;
/// Bytes inside an `IP-literal`'s brackets (hex digits, `:`, `.`, and IPvFuture's
/// unreserved and sub-delims).
const IP_LITERAL: u8 = 2;

const fn host_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let reg = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        t[b] = (if reg { REG_NAME | IP_LITERAL } else { 0 })
            | (if c == b':' { IP_LITERAL } else { 0 });
        b += 1;
    }
    t
}

static HOST_CLASSES: [u8; 256] = host_classes();

/// How many bytes at the start of `bytes` are in `class`.
#[inline(always)]
fn host_prefix(bytes: &[u8], class: u8) -> usize {
    let mut i = 0;
    while i < bytes.len() && HOST_CLASSES[usize::from(bytes[i])] & class != 0 {
        i += 1;
    }
    i
}

/// A Host value: `uri-host [":" port]` (RFC 9112 §3.2, RFC 3986 §3.2.2), where uri-host is
/// a bracketed IP literal or a reg-name (an IPv4 address is one too), and port is digits.
/// Empty is allowed (a request whose target has no authority sends an empty Host).
#[inline(always)]
fn valid_host(value: &[u8]) -> bool {
    // The common case, a name with or without a port, in one pass without a call.
    let name = host_prefix(value, REG_NAME);
    match value.get(name) {
        None => true,
        Some(b':') => value[name + 1..].iter().all(u8::is_ascii_digit),
        Some(b'[') if name == 0 => valid_ip_literal_host(value),
        Some(_) => false,
    }
}

/// A Host value starting with `[`: an IP literal, then an optional port.
#[cold]
fn valid_ip_literal_host(value: &[u8]) -> bool {
    let rest = &value[1..];
    let Some(end) = rest.iter().position(|&b| b == b']') else {
        return false;
    };
    if end == 0 || host_prefix(&rest[..end], IP_LITERAL) != end {
        return false;
    }
    match rest[end + 1..].split_first() {
        None => true,
        Some((&b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Every LF must follow a CR (httparse accepts bare LF line endings; shoal does not, so a
/// head means the same to shoal as to any strict intermediary).
///
/// httparse stops every line at its terminator and accepts no CR or LF inside a line (nor
/// obs-fold, which shoal leaves off), so an LF can only end a line: the empty lines before
/// the request line, the request line, each field line and the final empty line. Each field
/// name starts right after the terminator of the line before it (the request line's, or the
/// previous field's), and the head ends with the last field's terminator and the empty
/// line. So checking the two bytes before each name, and the last four bytes, covers every
/// line: a few comparisons per field instead of a pass over every byte.
#[inline(always)]
fn has_bare_lf(buf: &[u8], len: usize, method: &str, headers: &[httparse::Header<'_>]) -> bool {
    let offset = |p: *const u8| (p as usize).wrapping_sub(buf.as_ptr() as usize);
    // Empty lines before the request line come in CR LF pairs.
    let start = offset(method.as_ptr());
    if start > len || !buf[..start].chunks(2).all(|c| c == b"\r\n") {
        return true;
    }
    for h in headers {
        let at = offset(h.name.as_ptr());
        if at < 2 || at > len || buf[at - 2..at] != *b"\r\n" {
            return true;
        }
    }
    // The last line's terminator and the empty line that ends the head.
    !buf[..len].ends_with(b"\r\n\r\n")
}

/// What an `httparse` version error means: another major version (505), HTTP/1 with a
/// minor version above 1 (handled as HTTP/1.1, RFC 9110 §2.5), a version token still
/// arriving that may become one of those (wait), or garbage (400).
#[derive(Debug, PartialEq, Eq)]
enum VersionError {
    OtherMajor,
    HigherMinor,
    Incomplete,
    Malformed,
}

/// How many bytes of empty lines (CR LF pairs) come before the request line.
fn empty_lines(buf: &[u8]) -> usize {
    buf.chunks_exact(2).take_while(|c| *c == b"\r\n").count() * 2
}

fn classify_version(buf: &[u8]) -> VersionError {
    let buf = &buf[empty_lines(buf)..];
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let v = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    let pattern = |i: usize, b: u8| match i {
        0..=4 => b == b"HTTP/"[i],
        5 | 7 => b.is_ascii_digit(),
        6 => b == b'.',
        _ => false,
    };
    let prefix_ok = v.iter().enumerate().all(|(i, &b)| pattern(i, b));
    if !prefix_ok {
        VersionError::Malformed
    } else if v.len() < 8 && line_end.is_none() {
        VersionError::Incomplete
    } else if v.len() != 8 || (v[5] == b'1' && v[7] <= b'1') {
        // httparse refuses no well-formed HTTP/1.0 or HTTP/1.1 token: the error is elsewhere.
        VersionError::Malformed
    } else if line_end.is_none() {
        // The whole token is here; only the line end is missing.
        VersionError::Incomplete
    } else if v[5] != b'1' {
        VersionError::OtherMajor
    } else {
        VersionError::HigherMinor
    }
}

/// Tokenizes a head whose request line names HTTP/1.2 to HTTP/1.9, which httparse refuses.
/// RFC 9110 §2.5: a recipient processes such a message as the highest minor version it
/// implements, so the request is read as HTTP/1.1 (minor version 1). The request line is
/// held to what httparse accepts in 1.1 (a token method, one space, a target of the bytes
/// httparse allows in one, one space, the version, CR LF); the fields are httparse's.
#[cold]
fn tokenize_higher_minor<'b>(
    buf: &'b [u8],
    fields: &mut FieldSlots<'b>,
    max: usize,
    limits: &Limits,
) -> Result<Option<Tokens<'b>>, ParseError> {
    let start = empty_lines(buf);
    let line_len = buf[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .ok_or(ParseError::BadRequestLine)?;
    let line_end = start + line_len;
    match buf.get(line_end..line_end + 2) {
        Some(b"\r\n") => {}
        // The LF after the CR is still to come.
        None if buf.len() == line_end + 1 => {
            check_incomplete(buf, limits)?;
            return Ok(None);
        }
        _ => return Err(ParseError::BareLineFeed),
    }
    let mut parts = buf[start..line_end].split(|&b| b == b' ');
    let (Some(method), Some(target), Some(_version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequestLine);
    };
    if !super::response::is_token(method)
        || target.is_empty()
        || !target
            .iter()
            .all(|&b| matches!(b, b'!'..=0x7e | 0x80..=0xff))
    {
        return Err(ParseError::BadRequestLine);
    }
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
    else {
        return Err(ParseError::BadRequestLine);
    };
    let fields_at = line_end + 2;
    match httparse::parse_headers(&buf[fields_at..], fields.first(max)) {
        Ok(httparse::Status::Complete((len, headers))) => {
            Ok(Some((method, target, 1, fields_at + len, headers.len())))
        }
        Ok(httparse::Status::Partial) => {
            check_incomplete(buf, limits)?;
            Ok(None)
        }
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooManyHeaders),
        Err(_) => Err(ParseError::BadHeader),
    }
}

/// What tokenizing a head found: method, target, minor version, head length, field count.
type Tokens<'b> = (&'b str, &'b str, u8, usize, usize);

/// What [`common_head`] found.
enum Common<'b> {
    /// A complete head with a common request line.
    Head(Tokens<'b>),
    /// A common request line, and fields still arriving.
    Partial,
    /// Anything else, incomplete or malformed, which [`tokenize`] parses (and judges) in
    /// full.
    Other,
}

/// A head whose request line has the common form: the line recognized by
/// [`common_request_line`], the fields tokenized by httparse.
#[inline(always)]
fn common_head<'b>(buf: &'b [u8], fields: &mut FieldSlots<'b>, max: usize) -> Common<'b> {
    let Some((method, target, version, line)) = common_request_line(buf) else {
        return Common::Other;
    };
    let mut n = FIRST_SLOTS.min(max);
    loop {
        match httparse::parse_headers(&buf[line..], fields.first(n)) {
            Ok(httparse::Status::Complete((len, headers))) => {
                return Common::Head((method, target, version, line + len, headers.len()));
            }
            // httparse's request parser reads such a line the same way and then parses the
            // fields as here, so it would find them incomplete too.
            Ok(httparse::Status::Partial) => return Common::Partial,
            Err(httparse::Error::TooManyHeaders) if n < max => n = max,
            Err(_) => return Common::Other,
        }
    }
}

/// Enforces the limits on an incomplete head, before reading more. The target is measured
/// exactly as for a complete head (the bytes between the first and the second space of the
/// request line), so a head within its limits answers the same whether it arrives at once or
/// in pieces. (A malformed line that never ends may not: see `HttpConn::scanned`.)
#[cold]
pub(crate) fn check_incomplete(buf: &[u8], limits: &Limits) -> Result<(), ParseError> {
    let line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if let Some(sp) = buf[..line].iter().position(|&b| b == b' ') {
        let rest = &buf[sp + 1..line];
        let target = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        if target > limits.max_target_len {
            return Err(ParseError::UriTooLong);
        }
    }
    if buf.len() > limits.max_header_bytes {
        return Err(ParseError::HeadTooLarge);
    }
    Ok(())
}

/// Tokenizes a head with httparse's request parser and maps what it refuses to a
/// [`ParseError`]. `Ok(None)`: incomplete, wait for more (the size limits are already
/// enforced on what is buffered).
#[cold]
fn tokenize<'b>(
    buf: &'b [u8],
    fields: &mut FieldSlots<'b>,
    max: usize,
    limits: &Limits,
) -> Result<Option<Tokens<'b>>, ParseError> {
    let mut req = httparse::Request::new(fields.first(max));
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_incomplete(buf, limits)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
        Err(httparse::Error::Version) => match classify_version(buf) {
            VersionError::OtherMajor => return Err(ParseError::UnsupportedVersion),
            VersionError::HigherMinor => {
                return tokenize_higher_minor(buf, fields, max, limits);
            }
            VersionError::Incomplete if buf.len() <= limits.max_header_bytes => return Ok(None),
            _ => return Err(ParseError::BadRequestLine),
        },
        Err(httparse::Error::Token) => return Err(ParseError::BadRequestLine),
        Err(httparse::Error::NewLine) if !buf.contains(&b'\n') => {
            return Err(ParseError::BareLineFeed);
        }
        Err(_) => {
            // A field-level error; a bare CR anywhere reads as a line-ending problem.
            let first_line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            return Err(if req.version.is_none() || first_line >= buf.len() {
                ParseError::BadRequestLine
            } else {
                ParseError::BadHeader
            });
        }
    };
    match (req.method, req.path, req.version) {
        (Some(method), Some(target), Some(version)) => {
            Ok(Some((method, target, version, len, req.headers.len())))
        }
        // A complete parse sets all three.
        _ => Err(ParseError::BadRequestLine),
    }
}

/// Parses and checks the head at the start of `buf`. `Ok(None)`: incomplete, wait for more
/// (the size limits are already enforced on what is buffered).
#[inline(always)]
pub(crate) fn parse_head<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut FieldSlots<'b>,
    limits: &Limits,
) -> Result<Option<Parsed<'h, 'b>>, ParseError> {
    let max = limits.max_headers.min(MAX_HEADERS);
    let tokens = match common_head(buf, fields, max) {
        Common::Head(found) => found,
        Common::Partial => {
            check_incomplete(buf, limits)?;
            return Ok(None);
        }
        Common::Other => match tokenize(buf, fields, max, limits)? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    check_head(buf, fields, tokens, limits)
}

/// [`parse_head`] without the shortcut for common request lines: everything tokenized by
/// httparse's request parser (the reference the shortcut is tested against).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_head_in_full<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut FieldSlots<'b>,
    limits: &Limits,
) -> Result<Option<Parsed<'h, 'b>>, ParseError> {
    let max = limits.max_headers.min(MAX_HEADERS);
    match tokenize(buf, fields, max, limits)? {
        Some(tokens) => check_head(buf, fields, tokens, limits),
        None => Ok(None),
    }
}

/// Checks a tokenized head against the limits and the rules of RFC 9112.
#[inline(always)]
fn check_head<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut FieldSlots<'b>,
    (method, target, version, len, count): Tokens<'b>,
    limits: &Limits,
) -> Result<Option<Parsed<'h, 'b>>, ParseError> {
    let headers = &fields.first(count)[..];
    // In the order an incomplete head is checked (`check_incomplete`): the answer does not
    // depend on how the head was cut into reads.
    if target.len() > limits.max_target_len {
        return Err(ParseError::UriTooLong);
    }
    if len > limits.max_header_bytes {
        return Err(ParseError::HeadTooLarge);
    }
    if has_bare_lf(buf, len, method, headers) {
        return Err(ParseError::BareLineFeed);
    }
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut chunked_count = 0;
    let mut chunked_last = false;
    let mut other_coding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name.as_bytes();
        // Dispatch on length: most fields match none of the names below.
        if !matches!(name.len(), 4 | 6 | 10 | 14 | 17) {
            continue;
        }
        if is_host(name) {
            if !valid_host(h.value) {
                return Err(ParseError::BadHost);
            }
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // 1*DIGIT, once: no sign, no list, no repeat (even of the same value).
            if content_length.is_some()
                || h.value.is_empty()
                || !h.value.iter().all(u8::is_ascii_digit)
            {
                return Err(ParseError::BadContentLength);
            }
            let mut n: u64 = 0;
            for &d in h.value {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    .ok_or(ParseError::BadContentLength)?;
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_count += 1;
                    chunked_last = true;
                } else {
                    other_coding = true;
                    chunked_last = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, "close");
            keep_alive_token |= has_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(ParseError::UnsupportedExpectation);
            }
        }
    }
    if hosts > 1 {
        return Err(ParseError::DuplicateHost);
    }
    if version == 1 && hosts == 0 {
        return Err(ParseError::MissingHost);
    }
    let framing = if te_seen {
        if content_length.is_some() {
            return Err(ParseError::ContentLengthWithTransferEncoding);
        }
        // RFC 9112 §6.3: without `chunked` as the final coding the length of the body
        // cannot be determined, which is a 400 whatever the other codings are; only a
        // coding shoal does not implement in front of a final `chunked` is a 501 (§6.1).
        // (Two tests where one would do: written as one, `chunked_count != 1 ||
        // !chunked_last`, the request loop took 6 more instructions per request in callgrind,
        // for requests without Transfer-Encoding.)
        if version == 0 || chunked_count > 1 || (chunked_count == 1 && !chunked_last) {
            return Err(ParseError::BadTransferEncoding);
        }
        if chunked_count == 0 {
            return Err(ParseError::BadTransferEncoding);
        }
        if other_coding {
            return Err(ParseError::UnsupportedTransferEncoding);
        }
        Framing::Chunked
    } else if let Some(n) = content_length {
        if n > limits.max_body_size {
            return Err(ParseError::BodyTooLarge);
        }
        if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else {
        Framing::None
    };
    let keep_alive = if version == 1 {
        !close
    } else {
        keep_alive_token && !close
    };
    let is_head = method == "HEAD";
    Ok(Some(Parsed {
        method,
        target,
        headers,
        head: Head {
            len,
            version,
            framing,
            keep_alive,
            expect_continue,
            is_head,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 8192,
        max_headers: 64,
        max_target_len: 2048,
        max_body_size: 1 << 20,
        max_chunk_line: 1024,
    };

    fn parse(buf: &[u8]) -> Result<Option<Head>, ParseError> {
        let mut fields = FieldSlots::new();
        parse_head(buf, &mut fields, &LIMITS).map(|p| p.map(|p| p.head))
    }

    #[test]
    fn host_values() {
        for ok in [
            &b""[..],
            b"x",
            b"example.com",
            b"example.com:8080",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:8080",
            b"[v1.fe80::a+en1]",
            b"a-b_c~d%20!$&'()*+,;=",
            b"host:",
        ] {
            assert!(valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"a b"[..],
            b"evil/x",
            b"a@b",
            b"a?b",
            b"a#b",
            b"host:80:80",
            b"host:8o",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::1]:x",
            b"a\tb",
            b"\xe9",
            b"a\"b",
        ] {
            assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn host_matches_in_any_case_and_nothing_else() {
        for name in [&b"host"[..], b"Host", b"HOST", b"hOsT"] {
            assert!(is_host(name), "{name:?}");
        }
        for name in [
            &b"hos"[..],
            b"hosts",
            b"h0st",
            b"Hos\x14",
            b"(ost",
            b"",
            b"post",
        ] {
            assert!(!is_host(name), "{name:?}");
        }
        // Exhaustively: a byte differing from a letter of `host` only by bit 5 is that
        // letter's capital; no other byte is taken for it.
        for at in 0..4 {
            for b in 0..=255u8 {
                let mut name = *b"host";
                name[at] = b;
                assert_eq!(
                    is_host(&name),
                    name.eq_ignore_ascii_case(b"host"),
                    "{name:?}"
                );
            }
        }
    }

    #[test]
    fn simple_get() {
        let h = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.len, 32);
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn fields_beyond_the_first_slots_are_tokenized() {
        for n in [13, 14, 15, 40, 62] {
            let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
            for i in 0..n {
                head.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"Content-Length: 3\r\n\r\n");
            let mut fields = FieldSlots::new();
            let p = parse_head(&head, &mut fields, &LIMITS).unwrap().unwrap();
            assert_eq!(p.headers.len(), n + 2);
            assert_eq!(p.headers[n + 1].value, b"3");
            assert_eq!(p.head.framing, Framing::Length(3), "{n} fields");
        }
    }

    /// One set of slots serves every head of a pass, as in the server's request loop: heads
    /// with many fields, then few, then one on the full path, then exactly `max_headers`
    /// and one more, each tokenized in full and none seeing another's fields.
    #[test]
    fn slots_are_reused_across_heads_of_any_size() {
        let head = |line: &str, n: usize| {
            let mut h = format!("{line}\r\nHost: x\r\n").into_bytes();
            for i in 0..n {
                h.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        let max = LIMITS.max_headers;
        let heads = [
            (head("GET / HTTP/1.1", 40), Ok(41)),
            (head("GET / HTTP/1.1", 2), Ok(3)),
            (head("get /x HTTP/1.1", 20), Ok(21)),
            (head("GET / HTTP/1.1", 16), Ok(17)),
            (head("GET / HTTP/1.1", max - 1), Ok(max)),
            (head("GET / HTTP/1.1", max), Err(ParseError::TooManyHeaders)),
            (head("GET / HTTP/1.1", 0), Ok(1)),
        ];
        let mut fields = FieldSlots::new();
        for (h, want) in &heads {
            let got = parse_head(h, &mut fields, &LIMITS).map(|p| {
                let p = p.expect("a complete head");
                let last = p.headers.last().expect("Host at least");
                if p.headers.len() > 1 {
                    assert_eq!(last.value, format!("{}", p.headers.len() - 2).as_bytes());
                }
                p.headers.len()
            });
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(&h[..16]));
        }
        // Readied past the first block, then further: nothing is copied twice.
        let mut slots = FieldSlots::new();
        assert_eq!(slots.first(17).len(), 17);
        assert_eq!(slots.first(20).len(), 20);
        assert_eq!(slots.first(3).len(), 3);
    }

    /// The word-at-a-time class scan agrees with a byte loop for every byte value at every
    /// position of the first words, whatever follows the first outsider.
    #[test]
    fn class_prefix_matches_a_byte_loop() {
        fn check<const LO: u8, const HI: u8>(fill: u8) {
            for len in 0..20 {
                for p in 0..len {
                    for b in 0..=255u8 {
                        for after in [fill, 0x00, 0x7f, 0x80, 0xff] {
                            let mut buf = vec![fill; len];
                            buf[p] = b;
                            buf[p + 1..].fill(after);
                            let naive = buf.iter().take_while(|c| (LO..=HI).contains(c)).count();
                            assert_eq!(prefix_in::<LO, HI>(&buf), naive, "{buf:?}");
                        }
                    }
                }
            }
        }
        check::<b'A', b'Z'>(b'Q');
        check::<b'!', b'~'>(b'/');
    }

    #[test]
    fn uncommon_request_lines_are_parsed_in_full() {
        for (line, method, target) in [
            (&b"M-SEARCH * HTTP/1.1"[..], "M-SEARCH", "*"),
            (b"get /a HTTP/1.1", "get", "/a"),
            (b"GET /caf\xc3\xa9 HTTP/1.1", "GET", "/caf\u{e9}"),
        ] {
            assert_eq!(common_request_line(line), None);
            let mut head = line.to_vec();
            head.extend_from_slice(b"\r\nHost: x\r\n\r\n");
            let mut fields = FieldSlots::new();
            let p = parse_head(&head, &mut fields, &LIMITS).unwrap().unwrap();
            assert_eq!(
                (p.method, p.target, p.head.len),
                (method, target, head.len())
            );
        }
        let mut fields = FieldSlots::new();
        let p = parse_head(b"\r\nGET / HTTP/1.0\r\n\r\n", &mut fields, &LIMITS);
        assert_eq!(p.unwrap().unwrap().head.version, 0);
    }

    #[test]
    fn partial_head_waits() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHo").unwrap().map(|h| h.len), None);
    }

    #[test]
    fn framing_rules() {
        let cl = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(cl.unwrap().framing, Framing::Length(5));
        let te = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(te.unwrap().unwrap().framing, Framing::Chunked);
        for (req, err) in [
            (&b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"[..], ParseError::BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", ParseError::BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", ParseError::BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", ParseError::BadContentLength),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ParseError::ContentLengthWithTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ParseError::BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ParseError::BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", ParseError::BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n", ParseError::BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ParseError::UnsupportedTransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ParseError::BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", ParseError::BodyTooLarge),
        ] {
            assert_eq!(parse(req).map(|h| h.map(|h| h.framing)), Err(err), "{}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn line_and_field_rules() {
        for (req, err) in [
            (
                &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
                ParseError::BareLineFeed,
            ),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", ParseError::BareLineFeed),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", ParseError::BadHeader),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
                ParseError::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
                ParseError::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
                ParseError::BadHeader,
            ),
            (b"GET / HTTP/1.1\r\n: empty\r\n\r\n", ParseError::BadHeader),
            (
                b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
                ParseError::BadRequestLine,
            ),
            (
                b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
                ParseError::BadRequestLine,
            ),
            (
                b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
                ParseError::UnsupportedVersion,
            ),
            (
                b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
                ParseError::BadRequestLine,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", ParseError::MissingHost),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                ParseError::DuplicateHost,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n",
                ParseError::UnsupportedExpectation,
            ),
        ] {
            assert_eq!(
                parse(req).map(|h| h.is_some()),
                Err(err),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn size_limits_apply_to_partial_heads() {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 3000));
        assert_eq!(parse(&long).map(|_| ()), Err(ParseError::UriTooLong));
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while big.len() < 9000 {
            big.extend_from_slice(b"X-Filler: ");
            big.extend(std::iter::repeat_n(b'a', 1000));
            big.extend_from_slice(b"\r\n");
        }
        assert_eq!(parse(&big).map(|_| ()), Err(ParseError::HeadTooLarge));
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).map(|_| ()), Err(ParseError::TooManyHeaders));
    }

    #[test]
    fn a_higher_minor_version_is_read_as_http_1_1_however_split() {
        for full in [
            &b"GET /a?b HTTP/1.2\r\nHost: x\r\nX: y\r\n\r\n"[..],
            b"\r\nget /a?b HTTP/1.9\r\nHost: x\r\nX: y\r\n\r\n",
        ] {
            let mut fields = FieldSlots::new();
            let parsed = parse_head(full, &mut fields, &LIMITS).unwrap().unwrap();
            assert_eq!(parsed.target, "/a?b");
            assert_eq!(parsed.headers.len(), 2);
            let head = parsed.head;
            assert_eq!(head.version, 1);
            assert_eq!(head.len, full.len());
            assert!(head.keep_alive);
            for at in 0..full.len() {
                assert_eq!(
                    parse(&full[..at]).map(|h| h.is_none()),
                    Ok(true),
                    "prefix {at}"
                );
            }
        }
        for (bad, err) in [
            (&b"GET / HTTP/1.2\r\n\r\n"[..], ParseError::MissingHost),
            (b"GET / HTTP/1.2\nHost: x\r\n\r\n", ParseError::BareLineFeed),
            (b"GET / HTTP/1.2\rHost: x\r\n\r\n", ParseError::BareLineFeed),
            (
                b"GET / HTTP/1.2\r\nHost: x\nX: y\r\n\r\n",
                ParseError::BareLineFeed,
            ),
            (
                b"GET / HTTP/1.2 HTTP/1.2\r\nHost: x\r\n\r\n",
                ParseError::BadRequestLine,
            ),
            (b"GET / HTTP/1.2\r\nHost : x\r\n\r\n", ParseError::BadHeader),
            (
                b"GET / HTTP/1.22\r\nHost: x\r\n\r\n",
                ParseError::BadRequestLine,
            ),
        ] {
            assert_eq!(
                parse(bad).map(|_| ()),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // httparse refuses a bad method or target before it looks at the version, so
        // these checks of the cold path are defensive: held to the same rules directly.
        for bad in [
            &b"GET  / HTTP/1.2\r\nHost: x\r\n\r\n"[..],
            b"G@T / HTTP/1.2\r\nHost: x\r\n\r\n",
            b" / HTTP/1.2\r\nHost: x\r\n\r\n",
            b"GET /\x7f HTTP/1.2\r\nHost: x\r\n\r\n",
            b"GET /\xff HTTP/1.2\r\nHost: x\r\n\r\n",
        ] {
            let mut fields = FieldSlots::new();
            let r = tokenize_higher_minor(bad, &mut fields, MAX_HEADERS, &LIMITS);
            assert_eq!(
                r.map(|_| ()),
                Err(ParseError::BadRequestLine),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut fields = FieldSlots::new();
        let ok = b"get /\xc3\xa9 HTTP/1.2\r\nHost: x\r\n\r\n";
        let t = tokenize_higher_minor(ok, &mut fields, MAX_HEADERS, &LIMITS)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.0, t.1, t.2, t.3, t.4),
            ("get", "/\u{e9}", 1, ok.len(), 1)
        );
    }

    #[test]
    fn another_major_version_is_recognised_even_when_split() {
        let full = b"GET / HTTP/2.0\r\nHost: x\r\n\r\n";
        assert_eq!(parse(full).map(|_| ()), Err(ParseError::UnsupportedVersion));
        for at in 7..15 {
            assert_eq!(
                parse(&full[..at]).map(|h| h.is_none()),
                Ok(true),
                "prefix {at}"
            );
        }
        assert_eq!(
            parse(b"GET / HTTP/2.x\r\n").map(|_| ()),
            Err(ParseError::BadRequestLine)
        );
        assert_eq!(
            parse(b"GET / HTTQ").map(|_| ()),
            Err(ParseError::BadRequestLine)
        );
    }

    #[test]
    fn keep_alive_rules() {
        let h = |r: &[u8]| parse(r).unwrap().unwrap().keep_alive;
        assert!(h(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!h(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(h(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn statuses_and_indices() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!([400, 413, 414, 417, 431, 501, 505].contains(&e.status()));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = String> {
            "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
        }

        fn head() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
                "/[a-z0-9/._~-]{0,40}(\\?[a-z0-9=&]{0,20})?",
                proptest::collection::vec((token(), "[ -~]{0,30}"), 0..10),
                any::<bool>(),
            )
                .prop_map(|(method, path, fields, v11)| {
                    let mut h = format!(
                        "{method} {path} HTTP/1.{}\r\nHost: example\r\n",
                        u8::from(v11)
                    );
                    for (n, v) in fields {
                        let lower = n.to_ascii_lowercase();
                        if [
                            "host",
                            "content-length",
                            "transfer-encoding",
                            "expect",
                            "connection",
                        ]
                        .contains(&lower.as_str())
                        {
                            continue;
                        }
                        h.push_str(&format!("{n}: {}\r\n", v.trim()));
                    }
                    h.push_str("\r\n");
                    h.into_bytes()
                })
        }

        proptest! {
            #[test]
            fn a_valid_head_parses_the_same_whatever_arrived_first(
                h in head(),
                at in any::<proptest::sample::Index>(),
            ) {
                let whole = parse(&h).unwrap().unwrap();
                prop_assert_eq!(whole.len, h.len());
                let at = at.index(h.len());
                // A strict prefix is never complete and never an error.
                prop_assert!(parse(&h[..at]).unwrap().is_none());
                let again = parse(&h).unwrap().unwrap();
                prop_assert_eq!(again.len, whole.len);
                prop_assert_eq!(again.keep_alive, whole.keep_alive);
            }

            #[test]
            fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = parse(&input);
            }
        }
    }
}
