//! A strict, incremental decoder for chunked request bodies (RFC 9112 §7.1).
//!
//! Input may stop anywhere: the decoder consumes only what it can use (whole size lines and
//! trailer sections, any amount of chunk data) and keeps its place. It is strict where
//! leniency has enabled request smuggling: a size line is `1*HEXDIG [chunk-ext] CRLF` with
//! no bare CR or LF anywhere in it (`httparse::parse_chunk_size` alone accepts a bare LF
//! inside an extension), its length is bounded, chunk data must be followed by exactly CRLF,
//! and the running body size is bounded.

use super::parse::{Limits, ParseError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decoder state for one chunked body.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    total: u64,
    max_body: u64,
    max_line: usize,
    max_trailers: usize,
    /// Bytes of framing beyond what the body's data allows (see [`EXCESS_LIMIT`]).
    excess: u64,
}

/// The most framing a body may carry beyond 16 bytes per chunk and 2 per byte of data
/// (size lines, extensions, CRLFs): past it a client is sending mostly non-data (1-byte
/// chunks with 4 KiB extensions would cost 4,000 bytes of input per byte of body, and dodge
/// `body_min_rate`, which counts data). Rejected as a bad chunk. The rule and the numbers
/// are Go net/http's.
const EXCESS_LIMIT: u64 = 16 * 1024;

/// What a decode step reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    NeedMore,
    Done,
}

fn has_bare_lf(s: &[u8]) -> bool {
    s.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || s[i - 1] != b'\r'))
}

fn validate_size_line(line: &[u8]) -> Result<(), ParseError> {
    // `line` ends with "\r\n"; everything before must be free of CR and LF.
    let body = &line[..line.len() - 2];
    if body.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(ParseError::BadChunk);
    }
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ParseError::BadChunk);
    }
    let rest = &body[digits..];
    if rest.is_empty() {
        return Ok(());
    }
    // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): only whitespace may
    // precede the first ";", and no control bytes but HTAB anywhere.
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    if rest.get(ws) != Some(&b';') {
        return Err(ParseError::BadChunk);
    }
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ParseError::BadChunk);
    }
    Ok(())
}

impl ChunkedDecoder {
    pub(crate) fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            total: 0,
            max_body: limits.max_body_size,
            max_line: limits.max_chunk_line,
            max_trailers: limits.max_header_bytes,
            excess: 0,
        }
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns the bytes of `input`
    /// consumed and whether the body is complete.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Progress), ParseError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok((pos, Progress::Done)),
                State::Size => {
                    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > self.max_line {
                            return Err(ParseError::ChunkLineTooLong);
                        }
                        return Ok((pos, Progress::NeedMore));
                    };
                    if lf + 1 > self.max_line {
                        return Err(ParseError::ChunkLineTooLong);
                    }
                    if lf == 0 || rest[lf - 1] != b'\r' {
                        return Err(ParseError::BadChunk);
                    }
                    let line = &rest[..=lf];
                    validate_size_line(line)?;
                    let size = match httparse::parse_chunk_size(line) {
                        Ok(httparse::Status::Complete((_, size))) => size,
                        _ => return Err(ParseError::BadChunk),
                    };
                    pos += lf + 1;
                    // The size line (without its CRLF, as Go counts it) and the CRLF after
                    // the data, less what this chunk may carry.
                    self.excess = (self.excess + lf as u64 + 1)
                        .saturating_sub(size.saturating_mul(2).saturating_add(16));
                    if self.excess > EXCESS_LIMIT {
                        return Err(ParseError::BadChunk);
                    }
                    if size == 0 {
                        self.state = State::Trailers;
                    } else {
                        self.total = self
                            .total
                            .checked_add(size)
                            .filter(|t| *t <= self.max_body)
                            .ok_or(ParseError::BodyTooLarge)?;
                        self.state = State::Data(size);
                    }
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((pos, Progress::NeedMore));
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(ParseError::BadChunk);
                        }
                        return Ok((pos, Progress::NeedMore));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ParseError::BadChunk);
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    if rest.len() < 2 {
                        return Ok((pos, Progress::NeedMore));
                    }
                    if &rest[..2] == b"\r\n" {
                        pos += 2;
                        self.state = State::Done;
                        continue;
                    }
                    // Trailer fields: wait for the whole section, then let httparse check it.
                    // A bare LF within the limit is reported before the size: the same error
                    // however the section was cut into reads.
                    // Only the section's own bytes count: what follows it is the next request.
                    let end = rest.windows(4).position(|w| w == b"\r\n\r\n");
                    let scope = end.map_or(rest.len(), |e| e + 4).min(self.max_trailers);
                    if has_bare_lf(&rest[..scope]) {
                        return Err(ParseError::BareLineFeed);
                    }
                    let Some(end) = end else {
                        if rest.len() > self.max_trailers {
                            return Err(ParseError::HeadTooLarge);
                        }
                        return Ok((pos, Progress::NeedMore));
                    };
                    let section = &rest[..end + 4];
                    if section.len() > self.max_trailers {
                        return Err(ParseError::HeadTooLarge);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 64];
                    match httparse::parse_headers(section, &mut fields) {
                        Ok(httparse::Status::Complete((n, _))) if n == section.len() => {}
                        _ => return Err(ParseError::BadChunk),
                    }
                    pos += section.len();
                    self.state = State::Done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 4096,
        max_headers: 64,
        max_target_len: 1024,
        max_body_size: 1 << 20,
        max_chunk_line: 64,
    };

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, ParseError> {
        let mut d = ChunkedDecoder::new(&LIMITS);
        let mut out = Vec::new();
        match d.decode(input, &mut out)? {
            (n, Progress::Done) if n == input.len() => Ok(out),
            (n, p) => panic!("consumed {n} of {}, {p:?}", input.len()),
        }
    }

    /// Feeds the input in two pieces split at `at`, keeping unconsumed bytes like the stream
    /// layer does.
    fn decode_split(input: &[u8], at: usize) -> Result<Option<Vec<u8>>, ParseError> {
        let mut d = ChunkedDecoder::new(&LIMITS);
        let mut out = Vec::new();
        let mut buf = input[..at].to_vec();
        let (n, _) = d.decode(&buf, &mut out)?;
        buf.drain(..n);
        buf.extend_from_slice(&input[at..]);
        match d.decode(&buf, &mut out)? {
            (n, Progress::Done) if n == buf.len() => Ok(Some(out)),
            (_, Progress::Done) => panic!("trailing bytes"),
            (_, Progress::NeedMore) => Ok(None),
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        assert_eq!(
            decode_all(b"4\r\nWiki\r\n5;a=b\r\npedia\r\n0\r\n\r\n").unwrap(),
            b"Wikipedia"
        );
        assert_eq!(
            decode_all(b"1\r\nx\r\n0\r\nExpires: never\r\n\r\n").unwrap(),
            b"x"
        );
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
        assert_eq!(decode_all(b"0\r\n\r\n").unwrap(), b"");
    }

    #[test]
    fn rejects_malformed_size_lines_and_framing() {
        for bad in [
            &b"x\r\nabc\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4;ext\nfoo\r\nWiki\r\n0\r\n\r\n",
            b"4;a\rb\r\nWiki\r\n0\r\n\r\n",
            b"4 \r\nWiki\r\n0\r\n\r\n",
            b"-4\r\nWiki\r\n0\r\n\r\n",
            b"0x4\r\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"4\r\nWiki\n0\r\n\r\n",
            b"1\r\nx\r\n0\r\nBad Field: y\r\n\r\n",
            b"1\r\nx\r\n0\r\nX: y\n\r\n",
        ] {
            assert!(decode_all(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            decode_all(b"1ffffffffffffffff\r\n"),
            Err(ParseError::BadChunk),
            "17 hex digits overflow the size"
        );
        assert_eq!(
            decode_all(b"ffffffffffffffff\r\n"),
            Err(ParseError::BodyTooLarge)
        );
        assert_eq!(decode_all(b"200000\r\n"), Err(ParseError::BodyTooLarge));
        let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(100));
        assert_eq!(
            decode_all(long.as_bytes()),
            Err(ParseError::ChunkLineTooLong)
        );
    }

    #[test]
    fn a_body_of_mostly_framing_is_rejected() {
        // 1-byte chunks with 40-byte extensions: 47 bytes of input per byte of data, 25 of
        // them beyond what a chunk may carry.
        let mut input = Vec::new();
        for _ in 0..1000 {
            input.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(40)).as_bytes());
        }
        input.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_all(&input), Err(ParseError::BadChunk));
        // Small chunks with no extensions are fine, however many.
        let mut plain = Vec::new();
        for _ in 0..20_000 {
            plain.extend_from_slice(b"1\r\nx\r\n");
        }
        plain.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_all(&plain).unwrap().len(), 20_000);
        // Nor do a few extensions on large chunks count against a body.
        let mut big = Vec::new();
        for _ in 0..100 {
            big.extend_from_slice(format!("400;{}\r\n", "e".repeat(50)).as_bytes());
            big.extend_from_slice(&[b'y'; 0x400]);
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_all(&big).unwrap().len(), 100 * 0x400);
    }

    #[test]
    fn any_split_point_gives_the_same_body() {
        let input = b"4\r\nWiki\r\n5;a=b\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX: y\r\n\r\n";
        let whole = decode_all(input).unwrap();
        for at in 0..=input.len() {
            assert_eq!(
                decode_split(input, at).unwrap().as_ref(),
                Some(&whole),
                "split at {at}"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A body, how to cut it into chunks, optional extensions, and a trailer flag.
        fn encoded() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
            (
                proptest::collection::vec(any::<u8>(), 0..3000),
                proptest::collection::vec(1usize..700, 1..12),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(body, cuts, ext, trailer)| {
                    let mut wire = Vec::new();
                    let mut rest = &body[..];
                    let mut i = 0;
                    while !rest.is_empty() {
                        let n = cuts[i % cuts.len()].min(rest.len());
                        if ext && i % 2 == 0 {
                            wire.extend_from_slice(format!("{n:X};k=v{i}\r\n").as_bytes());
                        } else {
                            wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        }
                        wire.extend_from_slice(&rest[..n]);
                        wire.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                        i += 1;
                    }
                    wire.extend_from_slice(b"0\r\n");
                    if trailer {
                        wire.extend_from_slice(b"X-Trailer: t\r\n");
                    }
                    wire.extend_from_slice(b"\r\n");
                    (body, wire)
                })
        }

        proptest! {
            #[test]
            fn decodes_identically_at_any_split_points(
                (body, wire) in encoded(),
                splits in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
            ) {
                let limits = Limits { max_body_size: 1 << 20, ..LIMITS };
                let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(wire.len() + 1)).collect();
                cuts.sort_unstable();
                cuts.push(wire.len());
                let mut d = ChunkedDecoder::new(&limits);
                let mut out = Vec::new();
                let mut pending = Vec::new();
                let mut fed = 0;
                let mut done = false;
                for cut in cuts {
                    pending.extend_from_slice(&wire[fed..cut]);
                    fed = cut;
                    let (n, p) = d.decode(&pending, &mut out).unwrap();
                    pending.drain(..n);
                    if p == Progress::Done {
                        done = true;
                        prop_assert!(pending.is_empty() && fed == wire.len());
                    }
                }
                prop_assert!(done);
                prop_assert_eq!(out, body);
            }

            #[test]
            fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut d = ChunkedDecoder::new(&LIMITS);
                let mut out = Vec::new();
                let _ = d.decode(&input, &mut out);
            }
        }
    }
}
