//! RFC 9112 conformance and request-smuggling defences, as a table of raw requests. Each case
//! names the clause it rests on, the statuses expected, and whether the connection stays
//! open (then a final probe request is answered). No case may produce a response to the
//! request hidden at `/smuggled`. The whole table is re-run with every request split at every
//! byte offset, which must not change a single answer.

mod http_util;

use std::time::Duration;

use http_util::*;
use shoal_core::http::{Request, Response};

/// Answers every request with its method, target and body length.
fn reflect(req: &Request<'_>, res: &mut Response<'_, '_>) {
    let body = format!("{} {} {}", req.method(), req.target(), req.body().len());
    res.send(200, &[("Content-Type", "text/plain")], body.as_bytes())
        .unwrap();
}

const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";

struct Case {
    name: &'static str,
    rfc: &'static str,
    req: &'static [u8],
    /// Statuses answering the case's own requests (the probe not included).
    expect: &'static [u16],
    /// The connection stays usable afterwards (the probe is answered).
    open: bool,
}

const fn ok(
    name: &'static str,
    rfc: &'static str,
    req: &'static [u8],
    expect: &'static [u16],
) -> Case {
    Case {
        name,
        rfc,
        req,
        expect,
        open: true,
    }
}

/// Rejected: one error status, then the connection closes (nothing after it is answered).
const fn bad(
    name: &'static str,
    rfc: &'static str,
    req: &'static [u8],
    status: &'static [u16],
) -> Case {
    Case {
        name,
        rfc,
        req,
        expect: status,
        open: false,
    }
}

const SMUGGLE: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

macro_rules! smuggle {
    ($s:literal) => {
        concat!($s, "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()
    };
}

const CASES: &[Case] = &[
    // ---- accepted ----
    ok("simple GET", "9112 §3", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[200]),
    ok("Host as IP literal and port", "9112 §3.2, 3986 §3.2.2", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", &[200]),
    ok("query string", "9112 §3.2.1", b"GET /a/b?c=d&e HTTP/1.1\r\nHost: x\r\n\r\n", &[200]),
    ok("absolute-form target", "9112 §3.2.2", b"GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", &[200]),
    ok("asterisk-form OPTIONS", "9112 §3.2.4", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &[200]),
    ok("HTTP/1.0 keep-alive", "9112 §9.3", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &[200]),
    ok("case-insensitive field names", "9110 §5.1", b"GET / HTTP/1.1\r\nhOsT: x\r\n\r\n", &[200]),
    ok("empty line before request line", "9112 §2.2", b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &[200]),
    ok("tab and obs-text in a value", "9110 §5.5", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\xe9\r\n\r\n", &[200]),
    ok("Content-Length body", "9112 §6.3", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", &[200]),
    ok("Content-Length 0", "9112 §6.3", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &[200]),
    ok("chunked body", "9112 §7.1", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[200]),
    ok("chunked, upper-case hex and coding", "9112 §7.1", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", &[200]),
    ok("chunk extension", "9112 §7.1.1", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n", &[200]),
    ok("trailer section", "9112 §7.1.2", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nExpires: never\r\n\r\n", &[200]),
    ok("two pipelined requests", "9112 §9.3.2", b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", &[200, 200]),
    ok("GET body hides a request: consumed as body", "9112 §6.3", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n"), &[200]),
    ok("HTTP/1.2 read as HTTP/1.1", "9110 §2.5", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", &[200]),
    ok("HTTP/1.9 with a chunked body, read as HTTP/1.1", "9110 §2.5", b"post /x HTTP/1.9\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", &[200]),
    ok("Expect 100-continue with the body present", "9110 §10.1.1", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", &[200]),
    Case { name: "HTTP/1.0 closes after the response", rfc: "9112 §9.3", req: b"GET / HTTP/1.0\r\n\r\n", expect: &[200], open: false },
    Case { name: "Connection: close", rfc: "9112 §9.6", req: b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", expect: &[200], open: false },
    // ---- framing: request smuggling ----
    bad("Content-Length with Transfer-Encoding", "9112 §6.1, §11.2", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), &[400]),
    bad("Transfer-Encoding before Content-Length", "9112 §6.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"), &[400]),
    bad("duplicate Content-Length, same value", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), &[400]),
    bad("duplicate Content-Length, different values", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc"), &[400]),
    bad("Content-Length list", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"), &[400]),
    bad("Content-Length not digits", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3a\r\n\r\nabc"), &[400]),
    bad("Content-Length negative", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), &[400]),
    bad("Content-Length with sign", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"), &[400]),
    bad("Content-Length overflow", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\n"), &[400]),
    bad("transfer coding without chunked", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), &[400]),
    bad("unknown transfer coding before chunked", "9112 §6.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), &[501]),
    bad("chunked not last", "9112 §6.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), &[400]),
    bad("chunked applied twice", "9112 §6.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), &[400]),
    bad("mistyped chunked", "9112 §6.3", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), &[400]),
    bad("Transfer-Encoding in HTTP/1.0", "9112 §6.1", smuggle!("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), &[400]),
    // ---- field syntax ----
    bad("whitespace before the colon", "9112 §5.1", smuggle!("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), &[400]),
    bad("obs-fold", "9112 §5.2", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n"), &[400]),
    bad("bare CR in a value", "9112 §2.2", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"), &[400]),
    bad("NUL in a value", "9110 §5.5", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"), &[400]),
    bad("control byte in a value", "9110 §5.5", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n"), &[400]),
    bad("empty field name", "9112 §5.1", smuggle!("GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n"), &[400]),
    bad("non-token field name", "9110 §5.1", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nX Y: v\r\n\r\n"), &[400]),
    bad("line without a colon", "9112 §5.1", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"), &[400]),
    bad("missing Host in HTTP/1.1", "9112 §3.2", smuggle!("GET / HTTP/1.1\r\n\r\n"), &[400]),
    bad("duplicate Host", "9112 §3.2", smuggle!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), &[400]),
    bad("Host value with a space", "9112 §3.2, 3986 §3.2.2", smuggle!("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), &[400]),
    bad("Host value with a path", "9112 §3.2, 3986 §3.2.2", smuggle!("GET / HTTP/1.1\r\nHost: evil/x\r\n\r\n"), &[400]),
    bad("Host value with userinfo", "9112 §3.2, 3986 §3.2.1", smuggle!("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), &[400]),
    bad("bare LF line endings", "9112 §2.2 (policy: rejected)", smuggle!("GET / HTTP/1.1\nHost: x\n\n"), &[400]),
    bad("bare LF ending one field", "9112 §2.2 (policy: rejected)", smuggle!("GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"), &[400]),
    // ---- request line ----
    bad("malformed method", "9112 §3.1", smuggle!("G@T / HTTP/1.1\r\nHost: x\r\n\r\n"), &[400]),
    bad("two spaces in the request line", "9112 §3", smuggle!("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), &[400]),
    bad("tab in the request line", "9112 §3", smuggle!("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n"), &[400]),
    bad("space in the target", "9112 §3.2", smuggle!("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), &[400]),
    bad("malformed version", "9112 §2.3", smuggle!("GET / HTTP/1.x\r\nHost: x\r\n\r\n"), &[400]),
    bad("lower-case version", "9112 §2.3", smuggle!("GET / http/1.1\r\nHost: x\r\n\r\n"), &[400]),
    bad("HTTP/2.0 request line", "9112 §2.3", smuggle!("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), &[505]),
    bad("HTTP/2.0 after an empty line", "9112 §2.2, §2.3", smuggle!("\r\nGET / HTTP/2.0\r\nHost: x\r\n\r\n"), &[505]),
    bad("HTTP/1.2 without Host (the rules of 1.1)", "9110 §2.5, 9112 §3.2", smuggle!("GET / HTTP/1.2\r\n\r\n"), &[400]),
    bad("HTTP/1.2 with two spaces in the request line", "9112 §3", smuggle!("GET  / HTTP/1.2\r\nHost: x\r\n\r\n"), &[400]),
    bad("HTTP/1.2 with a bare LF ending the request line", "9112 §2.2 (policy: rejected)", smuggle!("GET / HTTP/1.2\nHost: x\r\n\r\n"), &[400]),
    bad("HTTP/1.2 with chunked and Content-Length", "9112 §6.1", smuggle!("POST / HTTP/1.2\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), &[400]),
    bad("unsupported expectation", "9110 §10.1.1", smuggle!("GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n"), &[417]),
    // ---- chunked framing ----
    bad("non-hex chunk size", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nabc\r\n0\r\n\r\n"), &[400]),
    bad("empty chunk size", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\n"), &[400]),
    bad("bare LF in a chunk extension", "9112 §7.1.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n"), &[400]),
    bad("bare LF ending a chunk-size line", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"), &[400]),
    bad("chunk data not followed by CRLF", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"), &[400]),
    bad("chunk size overflow", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n"), &[400]),
    bad("0x prefix on a chunk size", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"), &[400]),
    bad("chunk data longer than declared", "9112 §7.1", smuggle!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"), &[400]),
];

fn has_smuggled(ex: &Exchange) -> bool {
    ex.responses.iter().any(|r| r.text().contains("/smuggled"))
}

fn expected(case: &Case) -> Vec<u16> {
    let mut e = case.expect.to_vec();
    if case.open {
        e.push(200);
    }
    e
}

fn run(addr: std::net::SocketAddr, bytes: &[u8], at: Option<usize>) -> Exchange {
    let pieces: Vec<&[u8]> = match at {
        Some(i) => vec![&bytes[..i], &bytes[i..]],
        None => vec![bytes],
    };
    exchange(
        addr,
        &pieces,
        Duration::from_millis(2),
        Duration::from_secs(5),
        false,
    )
}

#[test]
fn table_has_enough_cases() {
    assert!(CASES.len() >= 45, "{} cases", CASES.len());
    let rejected = CASES
        .iter()
        .filter(|c| !c.open && c.expect[0] >= 400)
        .count();
    assert!(rejected >= 30);
}

#[test]
fn every_case_gets_its_status_and_nothing_smuggled() {
    let srv = Http::start(config(1), reflect);
    let mut failures = Vec::new();
    for case in CASES {
        let mut bytes = case.req.to_vec();
        bytes.extend_from_slice(PROBE);
        let ex = run(srv.addr, &bytes, None);
        let want = expected(case);
        let mut why = Vec::new();
        if ex.statuses() != want {
            why.push(format!("statuses {:?}, want {want:?}", ex.statuses()));
        }
        if has_smuggled(&ex) {
            why.push("answered the smuggled request".into());
        }
        if !ex.closed {
            why.push("connection not closed".into());
        }
        if ex.reset {
            why.push("reset instead of a clean close".into());
        }
        if !ex.garbage.is_empty() {
            why.push(format!("{} unparsed bytes", ex.garbage.len()));
        }
        if !case.open
            && case.expect[0] >= 400
            && ex.responses.first().and_then(|r| r.header("connection")) != Some("close")
        {
            why.push("error response without Connection: close".into());
        }
        if !why.is_empty() {
            failures.push(format!("{} ({}): {}", case.name, case.rfc, why.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let st = srv.server.http_stats();
    assert!(st.parse_errors_total() >= 40, "{st:?}");
    let _ = SMUGGLE;
}

#[test]
fn splitting_a_request_at_any_byte_changes_nothing() {
    let srv = Http::start(config(2), reflect);
    let addr = srv.addr;
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = CASES.get(i) else { break };
                    let mut bytes = case.req.to_vec();
                    bytes.extend_from_slice(PROBE);
                    let want = expected(case);
                    for at in 1..bytes.len() {
                        let ex = run(addr, &bytes, Some(at));
                        if ex.statuses() != want || has_smuggled(&ex) || ex.reset {
                            failures.lock().unwrap().push(format!(
                                "{} split at {at}: {:?} (want {want:?}), reset {}",
                                case.name,
                                ex.statuses(),
                                ex.reset
                            ));
                            break;
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_body_cut_short_by_end_of_stream_is_never_delivered() {
    let srv = Http::start(config(1), reflect);
    for req in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    ] {
        let ex = exchange(
            srv.addr,
            &[req],
            Duration::ZERO,
            Duration::from_secs(5),
            true,
        );
        assert!(
            ex.responses.is_empty(),
            "{}: {:?}",
            String::from_utf8_lossy(req),
            ex.statuses()
        );
        assert!(ex.closed);
    }
    assert!(srv.server.http_stats().incomplete >= 4);
    assert_eq!(srv.server.http_stats().requests, 0);
}
