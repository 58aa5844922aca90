//! A whole connection: random bytes, cut at random points, sent to a real in-process HTTP
//! server over loopback. Whatever arrives, the server answers only with well-formed HTTP/1.1
//! responses, answers nothing after rejecting a request (no request smuggled behind a bad
//! one), never fails a handler, and keeps serving a fresh connection.
#![no_main]

use std::any::Any;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use shoal_core::Config;
use shoal_core::http::{HttpConfig, HttpServer, HttpStatsHandle, Request, Response};

struct Target {
    addr: SocketAddr,
    stats: HttpStatsHandle,
    /// The running server, kept (not forgotten) for the life of the fuzzing process, so the
    /// leak checker sees its memory as reachable.
    _server: Mutex<Box<dyn Any + Send>>,
}

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let config = HttpConfig::new(Config::new("127.0.0.1:0".parse().unwrap()).threads(1))
            .max_header_bytes(1024)
            .max_body_size(2048)
            .header_read_timeout(Duration::from_millis(500))
            .body_read_timeout(Duration::from_millis(500));
        let mut server =
            HttpServer::bind(config, |req: &Request<'_>, res: &mut Response<'_, '_>| {
                let body = format!("{} {} {}", req.method(), req.target(), req.body().len());
                // The answer to HEAD declares the body's length without the body: say so,
                // for the response checker.
                let head = if res.is_head() { "1" } else { "0" };
                let _ = res.send(
                    200,
                    &[("Content-Type", "text/plain"), ("X-Head", head)],
                    body.as_bytes(),
                );
            })
            .expect("bind");
        server.start().expect("start");
        Target {
            addr: server.local_addr(),
            stats: server.http_stats_handle(),
            _server: Mutex::new(Box::new(server)),
        }
    })
}

/// Splits `out` into responses; panics on anything that is not a well-formed response.
fn check_responses(mut out: &[u8]) {
    let mut rejected = false;
    while !out.is_empty() {
        assert!(
            !rejected,
            "a response after a rejection: {:?}",
            String::from_utf8_lossy(out)
        );
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed response head {other:?}: {:?}",
                String::from_utf8_lossy(out)
            ),
        };
        let code = resp.code.expect("status");
        let mut body_len = None;
        let mut chunked = false;
        let mut head = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("x-head") {
                head = h.value == b"1";
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                body_len = Some(
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap(),
                );
            }
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        assert!(!chunked, "the test handler never streams");
        let body_len = if code == 100 || code == 204 || code == 304 {
            0
        } else if head {
            body_len.expect("a Content-Length");
            0
        } else {
            body_len.expect("every response has a Content-Length")
        };
        assert!(out.len() >= len + body_len, "truncated response body");
        rejected = code >= 400;
        out = &out[len + body_len..];
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t = target();
    let (cuts, input) = match data {
        [a, b, rest @ ..] => ([usize::from(*a), usize::from(*a) + usize::from(*b)], rest),
        _ => return,
    };
    let failures_before = t.stats.get().handler_failures;
    let mut s = TcpStream::connect(t.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        let end = cut.clamp(start, input.len());
        if s.write_all(&input[start..end]).is_err() {
            break; // the server closed after rejecting the request
        }
        start = end;
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    check_responses(&out);
    assert_eq!(t.stats.get().handler_failures, failures_before);
    // A fresh connection is still served.
    let mut probe = TcpStream::connect(t.addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    probe
        .write_all(b"GET /probe HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    probe.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
});
