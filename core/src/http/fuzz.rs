//! Property checks behind the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API).
//! Each takes arbitrary bytes and panics when a property the server relies on is broken.

use super::chunked::{ChunkedDecoder, Progress};
use super::parse::{
    FieldSlots, Limits, ParseError, common_request_line, parse_head, parse_head_in_full,
};

/// Small limits, so that the fuzzer reaches them; `max_headers` above the 16 slots readied
/// first, so that the retry with all of them is compared too.
const LIMITS: Limits = Limits {
    max_header_bytes: 2048,
    max_headers: 24,
    max_target_len: 256,
    max_body_size: 4096,
    max_chunk_line: 64,
};

type HeadOutcome = Result<Option<(usize, String)>, ParseError>;

fn head_outcome(buf: &[u8]) -> HeadOutcome {
    let mut fields = FieldSlots::new();
    let outcome = parse_head(buf, &mut fields, &LIMITS).map(|p| p.map(|p| meaning(&p)));
    let mut fields = FieldSlots::new();
    let in_full = parse_head_in_full(buf, &mut fields, &LIMITS).map(|p| p.map(|p| meaning(&p)));
    assert_eq!(
        outcome, in_full,
        "the common-line shortcut changed the outcome"
    );
    outcome
}

/// Everything the server takes from a head.
fn meaning(p: &super::parse::Parsed<'_, '_>) -> (usize, String) {
    (
        p.head.len,
        format!("{:?} {:?} {:?} {:?}", p.head, p.method, p.target, p.headers),
    )
}

/// The shortcut for common request lines accepts only lines httparse accepts, with the same
/// method, target, version and length.
fn common_request_line_agrees(data: &[u8]) {
    let Some((method, target, version, line)) = common_request_line(data) else {
        return;
    };
    let mut head = data[..line].to_vec();
    head.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 1];
    let mut req = httparse::Request::new(&mut fields);
    assert_eq!(
        req.parse(&head),
        Ok(httparse::Status::Complete(line + 2)),
        "the shortcut accepted a line httparse does not"
    );
    assert_eq!(
        (req.method, req.path, req.version),
        (Some(method), Some(target), Some(version))
    );
}

/// The request head parser: a complete head is complete in every longer buffer with the same
/// meaning, and incomplete in every shorter one (the server parses growing buffers, so a
/// different answer for a prefix would be a desynchronisation); incomplete input is never
/// longer than the head limit.
pub fn parse_head_properties(data: &[u8]) {
    let whole = head_outcome(data);
    match &whole {
        Ok(Some((len, meaning))) => {
            assert!(*len <= data.len());
            assert_eq!(
                head_outcome(&data[..*len]),
                Ok(Some((*len, meaning.clone())))
            );
            for cut in [0, len / 2, len.saturating_sub(1)] {
                if cut < *len {
                    assert_eq!(
                        head_outcome(&data[..cut]),
                        Ok(None),
                        "prefix of {cut} bytes"
                    );
                }
            }
        }
        Ok(None) => assert!(data.len() <= LIMITS.max_header_bytes),
        Err(_) => {}
    }
    line_endings_are_strict(data, &whole);
    common_request_line_agrees(data);
}

/// Whether every LF in `head` follows a CR (the reference the parser's cheaper check must
/// agree with).
fn every_lf_after_cr(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && head[i - 1] == b'\r'))
}

/// A head with a bare LF is never accepted; a head the tokenizer completes with CR LF line
/// endings throughout is never refused for a bare LF.
fn line_endings_are_strict(data: &[u8], whole: &HeadOutcome) {
    if let Ok(Some((len, _))) = whole {
        assert!(every_lf_after_cr(&data[..*len]), "a bare LF was accepted");
    }
    let mut fields = [httparse::EMPTY_HEADER; 16];
    if let Ok(httparse::Status::Complete(len)) = httparse::Request::new(&mut fields).parse(data)
        && every_lf_after_cr(&data[..len])
    {
        assert_ne!(
            *whole,
            Err(ParseError::BareLineFeed),
            "CR LF endings refused as a bare LF"
        );
    }
}

type ChunkedOutcome = (Result<Progress, ParseError>, usize, Vec<u8>);

/// Feeds `pieces` to a decoder the way the server does: unconsumed bytes are presented again
/// with the next piece.
fn decode_in_pieces(data: &[u8], cuts: &[usize]) -> ChunkedOutcome {
    let mut d = ChunkedDecoder::new(&LIMITS);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    bounds.sort_unstable();
    bounds.push(data.len());
    for end in bounds {
        if end < consumed {
            continue;
        }
        match d.decode(&data[consumed..end], &mut out) {
            Ok((n, Progress::Done)) => return (Ok(Progress::Done), consumed + n, out),
            Ok((n, Progress::NeedMore)) => {
                assert!(consumed + n <= end);
                consumed += n;
            }
            Err(e) => return (Err(e), consumed, out),
        }
    }
    (Ok(Progress::NeedMore), consumed, out)
}

/// The chunked decoder: cutting the input anywhere changes nothing (same body, same end,
/// same error), the body never exceeds its limit, and consumed bytes never exceed the input.
pub fn chunked_properties(data: &[u8]) {
    let (cut_a, cut_b, input) = match data {
        [a, b, rest @ ..] => (usize::from(*a), usize::from(*b) * 4, rest),
        _ => return,
    };
    let whole = decode_in_pieces(input, &[]);
    let split = decode_in_pieces(input, &[cut_a, cut_b]);
    let bytewise: Vec<usize> = (0..input.len().min(64)).collect();
    let tiny = decode_in_pieces(input, &bytewise);
    assert!(whole.2.len() as u64 <= LIMITS.max_body_size);
    // Errors may be detected at different points of a split stream, but never differ in kind
    // or turn into success; successes are identical.
    match (&whole.0, &split.0) {
        (Ok(Progress::Done), _) => {
            assert_eq!(whole, split, "split at {cut_a}, {cut_b}");
            assert_eq!(whole, tiny, "split at every byte");
        }
        (Err(e), Err(f)) => assert_eq!(e, f),
        (Ok(Progress::NeedMore), Ok(Progress::NeedMore)) => assert_eq!(whole.2, split.2),
        (a, b) => panic!("whole {a:?}, split {b:?}"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEEDS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    ];

    /// Inputs the fuzzers found, kept as regression tests.
    const REGRESSIONS: &[&[u8]] = &[
        // A long method and a target within the limit: the partial parse used to measure
        // the whole request line and answer 414 to a prefix of a head that parses whole.
        include_bytes!("fuzz_regressions/parse_head-long-method"),
    ];

    /// Chunked-decoder inputs the fuzzers found.
    const CHUNKED_REGRESSIONS: &[&[u8]] = &[
        // A trailer section with a bare LF inside the limit and more bytes beyond it: the
        // whole input was refused as too large, a split one for the bare LF.
        include_bytes!("fuzz_regressions/chunked-trailer-error-order"),
        // A bare LF in the bytes after the trailer section (the next request) was blamed on
        // the section when read together with it.
        include_bytes!("fuzz_regressions/chunked-bare-lf-after-trailers"),
    ];

    #[test]
    fn the_fuzzers_findings_stay_fixed() {
        for input in REGRESSIONS {
            parse_head_properties(input);
        }
        for input in CHUNKED_REGRESSIONS {
            chunked_properties(input);
        }
    }

    #[test]
    fn the_properties_hold_on_the_seeds() {
        for seed in SEEDS {
            parse_head_properties(seed);
            let mut c = vec![3, 7];
            c.extend_from_slice(b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n");
            chunked_properties(&c);
            chunked_properties(seed);
        }
    }

    proptest! {
        #[test]
        fn the_properties_hold_on_random_heads(
            seed in 0..SEEDS.len(),
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
        ) {
            let mut data = SEEDS[seed].to_vec();
            for (at, b) in edits {
                let i = usize::from(at) % (data.len() + 1);
                if b % 3 == 0 && i < data.len() {
                    data.remove(i);
                } else {
                    data.insert(i, b);
                }
            }
            parse_head_properties(&data);
        }

        /// Heads whose lines end in CR LF or a bare LF at random (leading empty lines,
        /// the request line, fields with trailing whitespace, the final empty line): the
        /// parser refuses exactly those with a bare LF.
        #[test]
        fn bare_lf_is_found_wherever_a_line_ends(
            endings in proptest::collection::vec(any::<bool>(), 8),
            leading in 0usize..3,
            fields in 0usize..4,
            trailing in proptest::collection::vec(0u8..3, 4),
        ) {
            let eol = |i: usize| if endings[i % 8] { &b"\r\n"[..] } else { &b"\n"[..] };
            let mut data = Vec::new();
            let mut bare = false;
            let mut line = 0;
            let mut end = |data: &mut Vec<u8>, bare: &mut bool| {
                let e = eol(line);
                *bare |= e == b"\n";
                data.extend_from_slice(e);
                line += 1;
            };
            for _ in 0..leading {
                end(&mut data, &mut bare);
            }
            data.extend_from_slice(b"GET /p HTTP/1.1");
            end(&mut data, &mut bare);
            data.extend_from_slice(b"Host: h");
            end(&mut data, &mut bare);
            for (f, &spaces) in trailing.iter().enumerate().take(fields) {
                data.extend_from_slice(format!("X-{f}: v{f}").as_bytes());
                data.extend(std::iter::repeat_n(b' ', usize::from(spaces)));
                end(&mut data, &mut bare);
            }
            end(&mut data, &mut bare);
            let outcome = head_outcome(&data);
            if bare {
                prop_assert_eq!(outcome, Err(ParseError::BareLineFeed));
            } else {
                prop_assert!(matches!(outcome, Ok(Some((n, _))) if n == data.len()));
            }
            parse_head_properties(&data);
        }

        /// Request lines of the common form take the shortcut, with the tokens they hold;
        /// the head means the same as through httparse's request parser.
        #[test]
        fn common_request_lines_take_the_shortcut(
            method in "[A-Z]{1,12}",
            target in "[!-~]{1,40}",
            version in 0u8..2,
            fields in 0usize..24,
        ) {
            let mut data = format!("{method} {target} HTTP/1.{version}\r\nHost: h\r\n").into_bytes();
            for f in 0..fields {
                data.extend_from_slice(format!("X-{f}: v\r\n").as_bytes());
            }
            data.extend_from_slice(b"\r\n");
            let line = method.len() + target.len() + 12;
            prop_assert_eq!(
                common_request_line(&data),
                Some((method.as_str(), target.as_str(), version, line))
            );
            parse_head_properties(&data);
        }

        /// Request lines of the common form with a few bytes replaced by ones at the edges
        /// of what the shortcut accepts: it never accepts what httparse refuses, nor reads
        /// it differently.
        #[test]
        fn request_lines_agree_with_httparse(
            method in "[A-Z]{1,8}",
            target in "[!-~]{1,24}",
            version in 0u8..2,
            edits in proptest::collection::vec(
                (any::<u16>(), proptest::sample::select(&b"@[`{a-_/*H0.2 \t\r\n\x00\x1f\x21\x7e\x7f\x80\xff"[..])),
                0..3,
            ),
        ) {
            let mut data = format!("{method} {target} HTTP/1.{version}\r\n").into_bytes();
            for (at, b) in edits {
                let i = usize::from(at) % data.len();
                data[i] = b;
            }
            data.extend_from_slice(b"Host: h\r\n\r\n");
            parse_head_properties(&data);
        }

        #[test]
        fn the_properties_hold_on_random_chunked_bodies(
            sizes in proptest::collection::vec(0usize..40, 0..5),
            cuts in any::<(u8, u8)>(),
            ext in any::<bool>(),
        ) {
            let mut data = vec![cuts.0, cuts.1];
            for n in sizes {
                data.extend_from_slice(format!("{n:x}{}\r\n", if ext { ";e=1" } else { "" })
                    .as_bytes());
                data.extend(std::iter::repeat_n(b'z', n));
                data.extend_from_slice(b"\r\n");
            }
            data.extend_from_slice(b"0\r\n\r\n");
            chunked_properties(&data);
        }
    }
}
