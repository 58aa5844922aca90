//! The HTTP server's behaviour through real sockets: pipelining, bodies in both framings,
//! deferred and streamed responses, HEAD, 100-continue, HTTP/1.0, half-close, staged closes,
//! slow-client timeouts, handler failures, pool dispatch, and a third-party client.

mod http_util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http_util::*;
use shoal_core::http::{
    HttpConfig, MAX_BODY, MAX_HEAD, PreparedHeaders, Request, Response, Version,
};

const SEC: Duration = Duration::from_secs(1);

/// `Content-Type: text/plain` and `X-Prep: yes`, prepared once.
fn prepared() -> &'static PreparedHeaders {
    static P: OnceLock<PreparedHeaders> = OnceLock::new();
    P.get_or_init(|| {
        PreparedHeaders::new(&[("Content-Type", "text/plain"), ("X-Prep", "yes")]).unwrap()
    })
}

/// How the last `/paced` producer ended.
static PACED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// How many `/doze` handlers have started.
static DOZING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The test application: routes exercising every response style.
fn app(req: &Request<'_>, res: &mut Response<'_, '_>) {
    let text = [("Content-Type", "text/plain")];
    match req.path() {
        "/prepared" => res.send_prepared(200, prepared(), b"same").unwrap(),
        "/plain" => res
            .send(
                200,
                &[("Content-Type", "text/plain"), ("X-Prep", "yes")],
                b"same",
            )
            .unwrap(),
        "/prepared-close" => {
            static CLOSE: OnceLock<PreparedHeaders> = OnceLock::new();
            let close =
                CLOSE.get_or_init(|| PreparedHeaders::new(&[("Connection", "close")]).unwrap());
            res.send_prepared(200, close, b"bye").unwrap();
        }
        "/prepared-defer" => {
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || d.send_prepared(201, prepared(), b"later").unwrap());
        }
        "/echo" => res.send(200, &text, req.body()).unwrap(),
        "/version" => {
            let v = match req.version() {
                Version::Http10 => "1.0",
                Version::Http11 => "1.1",
            };
            res.send(200, &text, v.as_bytes()).unwrap();
        }
        "/defer" => {
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                d.send(200, &[("X-From", "thread")], b"deferred").unwrap();
            });
        }
        "/defer-slow" => {
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                d.send(200, &[("X-From", "thread")], b"slow").unwrap();
            });
        }
        "/busy-then-defer" => {
            // Still running when stop() arrives, then defers.
            std::thread::sleep(Duration::from_millis(200));
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                d.send(200, &[("X-From", "thread")], b"busy").unwrap();
            });
        }
        "/defer-stream" => {
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                let mut body = d.start_chunked(200, &[("X-From", "thread")]).unwrap();
                for part in [&b"one,"[..], b"two,", b"three"] {
                    std::thread::sleep(Duration::from_millis(5));
                    body.write(part).unwrap();
                }
                body.finish().unwrap();
            });
        }
        "/defer-stream-big" => {
            // 256 KiB in four parts, 50 ms apart: a client that does not read backs it up.
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                let mut body = d.start_chunked(200, &[("X-From", "thread")]).unwrap();
                for _ in 0..4 {
                    if body.write(&[b'x'; 64 << 10]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = body.finish();
            });
        }
        "/defer-stream-endless" => {
            // A part every 50 ms for 10 s: longer than any grace period in these tests.
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                let mut body = d.start_chunked(200, &[("X-From", "thread")]).unwrap();
                for _ in 0..200 {
                    if body.write(b"part;").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = body.finish();
            });
        }
        "/stream" => {
            res.start_chunked(200, &text).unwrap();
            for i in 0..5 {
                res.write_chunk(format!("part{i};").as_bytes()).unwrap();
            }
            res.finish().unwrap();
        }
        "/stream204" => {
            // A 204 ends with its head: what the handler streams must not reach the wire (it
            // would read as the next response).
            res.start_chunked(204, &text).unwrap();
            res.write_chunk(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
                .unwrap();
            res.finish().unwrap();
        }
        "/defer-stream304" => {
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                let mut body = d.start_chunked(304, &[("ETag", "\"x\"")]).unwrap();
                body.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
                    .unwrap();
                body.finish().unwrap();
            });
        }
        "/stream-fail" => {
            // Fails after part of a streamed body: the body must not look complete.
            res.start_chunked(200, &text).unwrap();
            res.write_chunk(b"part").unwrap();
            res.fail();
        }
        "/doze" => {
            DOZING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(150));
            let body = format!("{} {}", req.method(), req.target());
            res.send(200, &text, body.as_bytes()).unwrap();
        }
        "/nap" => {
            std::thread::sleep(Duration::from_millis(10));
            let body = format!("{} {}", req.method(), req.target());
            res.send(200, &text, body.as_bytes()).unwrap();
        }
        "/panic" => panic!("handler fails on purpose"),
        "/silent" => {}
        "/fail" => res.fail(),
        "/fail-after-send" => {
            res.send(200, &text, b"sent first").unwrap();
            res.fail();
        }
        "/paced" => {
            // A 40 MiB body (over max_write_buffer) from another thread, waiting for room
            // before each MiB.
            let mut d = res.defer().unwrap();
            let mut body = d.start_chunked(200, &text).unwrap();
            assert!(matches!(
                body.wait_writable(Some(Duration::ZERO)),
                Err(shoal_core::Error::WrongThread)
            ));
            std::thread::spawn(move || {
                let piece = vec![b'p'; 1 << 20];
                let mut most = 0;
                for _ in 0..40 {
                    match body.wait_writable(Some(Duration::from_secs(10))) {
                        Ok(true) => {}
                        other => {
                            *PACED.lock().unwrap() = Some(format!("{other:?}"));
                            return;
                        }
                    }
                    most = most.max(body.queued());
                    if body.write(&piece).is_err() {
                        *PACED.lock().unwrap() = Some("write failed".into());
                        return;
                    }
                }
                *PACED.lock().unwrap() = Some(format!("done, at most {most} queued"));
                body.finish().unwrap();
            });
        }
        "/drop-deferred" => {
            let d = res.defer().unwrap();
            drop(d);
        }
        "/defer-then-panic" => {
            let _d = res.defer().unwrap();
            panic!("handler fails after deferring");
        }
        "/answer-then-panic" => {
            // Answered in full from another thread before the handler fails.
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || d.send(200, &text, b"answered").unwrap())
                .join()
                .unwrap();
            panic!("handler fails after its deferred answer");
        }
        "/defer-away-then-panic" => {
            // The answer comes after the handler has failed.
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                d.send(200, &text, b"answered").unwrap();
            });
            panic!("handler fails while its deferred answer is under way");
        }
        "/defer-drop-away-then-panic" => {
            // The handler fails; the Deferred it handed away is later dropped unanswered.
            let d = res.defer().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                drop(d);
            });
            panic!("handler fails, and its deferred answer is dropped later");
        }
        "/bad-header" => {
            let err = res
                .send(200, &[("X-Evil", "a\r\nSet-Cookie: owned")], b"nope")
                .unwrap_err();
            res.send(500, &text, err.to_string().as_bytes()).unwrap();
        }
        "/close" => res.send(200, &[("Connection", "close")], b"bye").unwrap(),
        "/says-keep-alive" => res
            .send(200, &[("Connection", "keep-alive")], b"ka")
            .unwrap(),
        "/big" => {
            let n: usize = req
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .unwrap()
                .parse()
                .unwrap();
            res.send(200, &text, &vec![b'b'; n]).unwrap();
        }
        _ => {
            let body = format!("{} {}", req.method(), req.target());
            res.send(200, &text, body.as_bytes()).unwrap();
        }
    }
}

/// `cfg` inline (0 workers) or with `workers` worker threads.
fn with_workers(mut cfg: HttpConfig, workers: usize) -> HttpConfig {
    if workers > 0 {
        cfg.engine = cfg.engine.workers(workers, 16);
    }
    cfg
}

/// A client with a 4 KiB receive buffer: the server's output backs up quickly.
fn slow_reader(addr: std::net::SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

#[test]
fn a_hundred_pipelined_requests_get_ordered_responses_in_few_writes() {
    for threads_workers in [(1, 0), (2, 2)] {
        let mut cfg = config(threads_workers.0);
        if threads_workers.1 > 0 {
            cfg.engine = cfg.engine.workers(threads_workers.1, 64);
        }
        let srv = Http::start(cfg, app);
        let mut c = Client::connect(srv.addr);
        let mut batch = Vec::new();
        for i in 0..100 {
            batch.extend_from_slice(&get(&format!("/n{i}")));
        }
        c.send(&batch);
        let rs = c.read(100, &[]);
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), format!("GET /n{i}"));
        }
        let st = srv.server.http_stats();
        assert_eq!(st.requests, 100);
        assert_eq!(st.keepalive_reuses, 99);
    }
}

#[test]
fn bodies_of_every_size_in_both_framings() {
    let srv = Http::start(config(2), app);
    let mut c = Client::connect(srv.addr);
    for size in [0usize, 1, 8 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut req = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n")
            .into_bytes();
        req.extend_from_slice(&body);
        c.send(&req);
        let r = c.read(1, &[]).remove(0);
        assert_eq!(r.status, 200);
        assert!(r.body == body, "Content-Length body of {size} bytes");

        let mut req =
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in body.chunks(100_000) {
            req.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\nTrailer: yes\r\n\r\n");
        c.send(&req);
        let r = c.read(1, &[]).remove(0);
        assert_eq!(r.status, 200);
        assert!(r.body == body, "chunked body of {size} bytes");
    }
}

#[test]
fn deferred_response_from_another_thread_keeps_pipelined_order() {
    for workers in [0, 2] {
        let cfg = with_workers(config(1), workers);
        let srv = Http::start(cfg, app);
        let mut c = Client::connect(srv.addr);
        let mut batch = get("/defer");
        batch.extend_from_slice(&get("/after1"));
        batch.extend_from_slice(&get("/after2"));
        let t0 = Instant::now();
        c.send(&batch);
        let rs = c.read(3, &[]);
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(rs[0].text(), "deferred");
        assert_eq!(rs[0].header("x-from"), Some("thread"));
        assert_eq!(rs[1].text(), "GET /after1");
        assert_eq!(rs[2].text(), "GET /after2");
        // Streamed from a thread, then the connection carries on.
        c.send(&get("/defer-stream"));
        let r = c.read(1, &[]).remove(0);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.text(), "one,two,three");
        assert_eq!(c.get("/last").text(), "GET /last");
        assert_eq!(srv.server.http_stats().deferred, 2);
    }
}

/// An HTTP server's handle refuses the stream calls: a resume from outside would answer a
/// request pipelined behind a deferred one first, and raw writes or timers would break the
/// layer's framing. The deferred answer then goes out first, as always.
#[test]
fn stream_calls_on_an_http_server_are_refused_and_the_order_holds() {
    use std::sync::{Mutex, mpsc};
    for workers in [0, 1] {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let srv = Http::start(
            with_workers(config(1), workers),
            move |req: &Request<'_>, res: &mut Response<'_, '_>| {
                if req.path() == "/hold" {
                    tx.lock().unwrap().send(res.defer().unwrap()).unwrap();
                } else {
                    res.send(200, &[("X", "y")], req.path().as_bytes()).unwrap();
                }
            },
        );
        let mut c = Client::connect(srv.addr);
        let mut batch = get("/hold");
        batch.extend_from_slice(&get("/next"));
        c.send(&batch);
        let mut d = rx.recv_timeout(5 * SEC).expect("deferred");
        let h = srv.server.handle();
        let id = d.id();
        for (call, r) in [
            ("resume_input", h.resume_input(id)),
            ("write", h.write(id, b"x")),
            ("write_owned", h.write_owned(id, b"x".to_vec())),
            (
                "write_vectored",
                h.write_vectored(id, &[std::io::IoSlice::new(b"x")]),
            ),
            ("set_timer", h.set_timer(id, Duration::ZERO, 1)),
            ("cancel_timer", h.cancel_timer(id, 1)),
            ("paced_writer", h.paced_writer(id).map(|_| ())),
            ("connect", h.connect(srv.addr).map(|_| ())),
        ] {
            assert!(
                matches!(r, Err(shoal_core::Error::WrongKind(c)) if c == call),
                "{call}: {r:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
        d.send(200, &[("X", "y")], b"held").unwrap();
        let rs = c.read(2, &[]);
        assert_eq!(
            (rs[0].text(), rs[1].text()),
            ("held".into(), "/next".into())
        );
        assert_eq!(c.get("/last").text(), "/last");
        // Closing from outside stays possible.
        h.close(id).unwrap();
    }
}

#[test]
fn inline_chunked_streaming() {
    let srv = Http::start(config(1), app);
    let mut c = Client::connect(srv.addr);
    let r = c.get("/stream");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "part0;part1;part2;part3;part4;");
    // HTTP/1.0 has no chunked coding: the body is close-delimited.
    let ex = exchange(
        srv.addr,
        &[b"GET /stream HTTP/1.0\r\n\r\n"],
        Duration::ZERO,
        5 * SEC,
        false,
    );
    assert_eq!(ex.statuses(), vec![200]);
    assert_eq!(ex.responses[0].header("transfer-encoding"), None);
    assert_eq!(ex.responses[0].text(), "part0;part1;part2;part3;part4;");
    assert!(ex.closed);
}

#[test]
fn head_http10_and_connection_close() {
    let srv = Http::start(config(1), app);
    let mut c = Client::connect(srv.addr);
    c.send(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read(1, &[true]).remove(0);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some("7"),
        "HEAD keeps the GET length"
    );
    assert_eq!(c.get("/after-head").text(), "GET /after-head");

    let ex = exchange(
        srv.addr,
        &[b"GET /version HTTP/1.0\r\n\r\n"],
        Duration::ZERO,
        5 * SEC,
        false,
    );
    assert_eq!(ex.responses[0].text(), "1.0");
    assert_eq!(ex.responses[0].header("connection"), Some("close"));
    assert!(ex.closed, "HTTP/1.0 without keep-alive closes");

    let ex = exchange(
        srv.addr,
        &[b"GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /version HTTP/1.0\r\n\r\n"],
        Duration::ZERO,
        5 * SEC,
        false,
    );
    assert_eq!(ex.statuses(), vec![200, 200]);
    assert_eq!(ex.responses[0].header("connection"), Some("keep-alive"));
    assert!(ex.closed);

    let ex = exchange(
        srv.addr,
        &[&get("/close"), &get("/never")],
        Duration::ZERO,
        5 * SEC,
        false,
    );
    assert_eq!(
        ex.statuses(),
        vec![200],
        "a response's Connection: close ends the connection"
    );
    assert!(ex.closed && !ex.reset);
}

#[test]
fn expect_100_continue() {
    let srv = Http::start(config(1), app);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let ex = read_all(&mut s, Duration::from_millis(300), &[]);
    assert_eq!(ex.statuses(), vec![200]);
    assert_eq!(ex.responses[0].text(), "hello");
    assert_eq!(srv.server.http_stats().continues, 1);
    // Too large: 413 at once, no 100, the body is never read.
    let ex = exchange(
        srv.addr,
        &[b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n"],
        Duration::ZERO,
        5 * SEC,
        false,
    );
    assert_eq!(ex.statuses(), vec![413]);
    assert!(ex.closed && !ex.reset);
}

#[test]
fn half_close_after_a_request_gets_the_whole_answer() {
    let srv = Http::start(config(1), app);
    // Inline answer, then the client's end-of-stream.
    let ex = exchange(
        srv.addr,
        &[&get("/big?bytes=300000")],
        Duration::ZERO,
        5 * SEC,
        true,
    );
    assert_eq!(ex.statuses(), vec![200]);
    assert_eq!(ex.responses[0].body.len(), 300_000);
    assert!(ex.closed);
    // A deferred answer still arrives after the client shut down its side.
    let ex = exchange(srv.addr, &[&get("/defer")], Duration::ZERO, 5 * SEC, true);
    assert_eq!(ex.statuses(), vec![200]);
    assert_eq!(ex.responses[0].text(), "deferred");
    assert!(ex.closed);
}

#[test]
fn errors_are_read_by_the_client_not_reset_even_with_unread_input() {
    let srv = Http::start(config(1).max_header_bytes(4096), app);
    // 431 while the client is still sending a huge head.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n");
        let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
        for _ in 0..2000 {
            if w.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let ex = read_all(&mut s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![431]);
    assert!(!ex.reset, "the 431 is read, not lost to a reset");
    sender.join().unwrap();
    // 413 for a declared body, with the body arriving anyway.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let mut w = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = w.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n");
        for _ in 0..64 {
            if w.write_all(&[b'z'; 65536]).is_err() {
                break;
            }
        }
    });
    let ex = read_all(&mut s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![413]);
    assert!(!ex.reset);
    sender.join().unwrap();
    let st = srv.server.http_stats();
    assert_eq!(st.responses[3], 2);
}

#[test]
fn handler_failures_answer_500_and_close_only_that_connection() {
    for workers in [0, 2] {
        let cfg = with_workers(config(1), workers);
        let srv = Http::start(cfg, app);
        let mut good = Client::connect(srv.addr);
        assert_eq!(good.get("/ok").status, 200);
        // Each failing route: the one response the client gets (none but the 500 when
        // nothing was answered; a complete answer given before or after the failure, here or
        // by a Deferred handed away), then the close: the pipelined request behind it is
        // never served. One failure is counted for each.
        for (path, status, text) in [
            ("/panic", 500, None),
            ("/silent", 500, None),
            ("/drop-deferred", 500, None),
            ("/defer-then-panic", 500, None),
            ("/fail", 500, None),
            ("/fail-after-send", 200, Some("sent first")),
            ("/answer-then-panic", 200, Some("answered")),
            ("/defer-away-then-panic", 200, Some("answered")),
            ("/defer-drop-away-then-panic", 500, None),
        ] {
            let ex = exchange(
                srv.addr,
                &[&get(path), &get("/never")],
                Duration::ZERO,
                5 * SEC,
                false,
            );
            assert_eq!(ex.statuses(), vec![status], "{path}");
            if let Some(text) = text {
                assert_eq!(ex.responses[0].text(), text, "{path}");
            }
            assert!(ex.closed, "{path}");
        }
        assert_eq!(good.get("/still-ok").status, 200);
        let st = srv.server.http_stats();
        assert_eq!(st.handler_failures, 9, "{st:?}");
        assert_eq!(st.responses[4], 6);
        assert_eq!(srv.server.stats().handler_failures, 9);
    }
}

#[test]
fn prepared_headers_answer_exactly_like_plain_ones() {
    let srv = Http::start(config(1), app);
    let mut c = Client::connect(srv.addr);
    let (p, q) = (c.get("/prepared"), c.get("/plain"));
    // The same fields in the same order (the Date aside, which may tick between them).
    let strip_date = |r: &Resp| {
        let mut r = r.clone();
        r.headers.retain(|(n, _)| n != "Date");
        r
    };
    assert_eq!(strip_date(&p), strip_date(&q));
    assert_eq!(
        (p.status, p.text(), p.header("x-prep")),
        (200, "same".into(), Some("yes"))
    );
    c.send(b"HEAD /prepared HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.read(1, &[true]).remove(0);
    assert_eq!((h.header("content-length"), h.body.len()), (Some("4"), 0));
    let d = c.get("/prepared-defer");
    assert_eq!(
        (d.status, d.text(), d.header("x-prep")),
        (201, "later".into(), Some("yes"))
    );
    // What a prepared block says about the connection counts as in a plain answer.
    let ex = exchange(
        srv.addr,
        &[&get("/prepared-close"), &get("/never")],
        Duration::ZERO,
        5 * SEC,
        false,
    );
    assert_eq!(ex.statuses(), vec![200]);
    assert!(ex.closed && !ex.reset);
    // Invalid fields are refused when the block is made.
    for bad in [
        [("X-Evil", "a\r\nb")],
        [("Content-Length", "1")],
        [("Bad Name", "v")],
    ] {
        assert!(PreparedHeaders::new(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn header_injection_is_an_error_to_the_handler_never_on_the_wire() {
    let srv = Http::start(config(1), app);
    let mut c = Client::connect(srv.addr);
    let r = c.get("/bad-header");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("control byte"), "{}", r.text());
    assert!(r.header("set-cookie").is_none());
}

#[test]
fn slow_clients_meet_their_timeouts() {
    let cfg = config(1)
        .header_read_timeout(Duration::from_millis(300))
        .body_read_timeout(Duration::from_millis(300))
        .keepalive_timeout(Duration::from_millis(400));
    let srv = Http::start(cfg, app);
    // Header trickle: bytes keep coming, the head never completes.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut closed = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        if s.write_all(b"X-Slow: y\r\n").is_err() {
            closed = Some(t0.elapsed());
            break;
        }
        if srv.server.http_stats().header_timeouts == 1 {
            closed = Some(t0.elapsed());
            break;
        }
    }
    let at = closed.expect("header timeout fired");
    assert!(at >= Duration::from_millis(280) && at < 2 * SEC, "{at:?}");
    let ex = read_all(&mut s, SEC, &[]);
    assert_eq!(ex.statuses(), vec![408]);

    // Body stalls between reads.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let ex = read_all(&mut s, 3 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![408]);
    assert_eq!(srv.server.http_stats().body_timeouts, 1);

    // Idle keep-alive: closed quietly, and its time never shortened the next head's.
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.get("/one").status, 200);
    std::thread::sleep(Duration::from_millis(250));
    c.send(b"GET /two HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(250));
    c.send(b"Host: t\r\n\r\n");
    assert_eq!(c.read(1, &[]).remove(0).text(), "GET /two");
    let t0 = Instant::now();
    let ex = read_all(&mut c.s, 3 * SEC, &[]);
    assert!(
        ex.responses.is_empty() && ex.closed,
        "idle connection closed without a response"
    );
    assert!(t0.elapsed() >= Duration::from_millis(350));
    assert_eq!(srv.server.http_stats().keepalive_timeouts, 1);
}

#[test]
fn a_trickled_body_meets_the_minimum_rate_and_a_steady_one_does_not() {
    // A byte every 50 ms never leaves a 300 ms gap, so body_read_timeout alone keeps it;
    // with a 1,000 B/s minimum it is answered 408 soon after the first 300 ms. A body sent
    // at 20 KB/s completes.
    for rate in [None, Some(1000)] {
        let cfg = config(1)
            .body_read_timeout(Duration::from_millis(300))
            .body_min_rate(rate);
        let srv = Http::start(cfg, app);
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n")
            .unwrap();
        let t0 = Instant::now();
        let mut cut = None;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(50));
            if s.write_all(b"x").is_err() || srv.server.http_stats().body_timeouts == 1 {
                cut = Some(t0.elapsed());
                break;
            }
        }
        match rate {
            None => {
                assert_eq!(cut, None);
                assert_eq!(read_all(&mut s, SEC, &[]).statuses(), vec![200]);
            }
            Some(_) => {
                let at = cut.expect("the slow body was cut off");
                assert!(at < Duration::from_millis(900), "{at:?}");
                assert_eq!(read_all(&mut s, SEC, &[]).statuses(), vec![408]);
            }
        }
        // Steady: 20 KB in 1 KB pieces every 50 ms (20 KB/s).
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20480\r\n\r\n")
            .unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(&[b'y'; 1024]).unwrap();
        }
        let ex = read_all(&mut s, SEC, &[]);
        assert_eq!(ex.statuses(), vec![200], "{rate:?}");
        assert_eq!(ex.responses[0].body.len(), 20480);
    }
}

#[test]
fn a_client_that_pipelines_but_never_reads_is_contained() {
    let mut cfg = config(1);
    cfg.engine = cfg
        .engine
        .write_timeout(Some(Duration::from_millis(500)))
        .write_high_watermark(256 << 10)
        .write_low_watermark(64 << 10);
    let srv = Http::start(cfg, app);
    let s = slow_reader(srv.addr);
    let one = get("/big?bytes=10000");
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        for _ in 0..20_000 {
            if w.write_all(&one).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    // Meanwhile others are served.
    let mut other = Client::connect(srv.addr);
    for _ in 0..10 {
        assert_eq!(other.get("/ok").status, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The write timeout closes the pipeliner; parsing stopped at the high watermark, so the
    // server answered only a few hundred of the 20,000 requests (never 200 MB of output).
    let deadline = Instant::now() + 5 * SEC;
    while srv
        .server
        .stats()
        .closed(shoal_core::CloseReason::WriteTimeout)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "write timeout never closed the pipeliner: {:?} {:?}",
            srv.server.stats(),
            srv.server.http_stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writer.join();
    assert!(
        srv.server.http_stats().requests < 2_000,
        "{:?}",
        srv.server.http_stats()
    );
    let _ = s.shutdown(Shutdown::Both);
}

#[test]
fn max_requests_per_connection_closes_after_the_last() {
    let srv = Http::start(config(1).max_requests_per_connection(Some(3)), app);
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(&get(&format!("/r{i}")));
    }
    let ex = exchange(srv.addr, &[&batch], Duration::ZERO, 5 * SEC, false);
    assert_eq!(ex.statuses(), vec![200, 200, 200]);
    assert_eq!(ex.responses[2].header("connection"), Some("close"));
    assert!(ex.closed && !ex.reset);
}

#[test]
fn python_http_client_talks_to_it() {
    let srv = Http::start(config(2), app);
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
c.request("GET", "/hello?x=1")
r = c.getresponse(); assert r.status == 200, r.status; assert r.read() == b"GET /hello?x=1"
c.request("POST", "/echo", body=b"z" * 100000, headers={{"Content-Type": "application/x-test"}})
r = c.getresponse(); assert r.status == 200; assert r.read() == b"z" * 100000
c.request("GET", "/stream")
r = c.getresponse(); assert r.read() == b"part0;part1;part2;part3;part4;"
c.request("HEAD", "/x")
r = c.getresponse(); assert r.getheader("Content-Length") == "7"; assert r.read() == b""
print("ok")
"#,
        port = srv.addr.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn the_date_header_is_present_and_well_formed() {
    let srv = Http::start(config(1), app);
    let mut c = Client::connect(srv.addr);
    let r = c.get("/");
    let d = r.header("date").expect("Date header");
    assert_eq!(d.len(), 29);
    assert!(d.ends_with(" GMT"));
}

#[test]
fn invalid_http_config_is_rejected() {
    assert!(HttpConfig::default().max_headers(0).validate().is_err());
    assert!(HttpConfig::default().max_headers(257).validate().is_err());
    assert!(
        HttpConfig::default()
            .header_read_timeout(Duration::ZERO)
            .validate()
            .is_err()
    );
    // Heads and bodies are held in memory whole: "no limit" is refused, not wrapped around.
    for cfg in [
        HttpConfig::default().max_body_size(usize::MAX),
        HttpConfig::default().max_body_size(MAX_BODY as usize + 1),
        HttpConfig::default().max_header_bytes(usize::MAX),
        HttpConfig::default().max_header_bytes(MAX_HEAD + 1),
    ] {
        let e = cfg.validate().unwrap_err();
        assert!(matches!(e, shoal_core::Error::InvalidConfig(_)), "{e}");
    }
    HttpConfig::default().validate().unwrap();
    // The largest limits allowed bind, and serve a body larger than the default read buffer.
    let srv = Http::start(
        config(1)
            .max_body_size(MAX_BODY as usize)
            .max_header_bytes(MAX_HEAD),
        app,
    );
    let body = vec![b'x'; 2 << 20];
    let mut c = Client::connect(srv.addr);
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.read(1, &[false]);
    assert_eq!((r[0].status, r[0].body.len()), (200, body.len()));
}

#[test]
fn pipelined_requests_then_a_half_close_are_all_answered() {
    // More requests than one pass serves (max_pipelined), then the client's end-of-stream at
    // once: every complete request is answered, then the connection closes.
    for (workers, max_pipelined) in [(0, 4), (0, 64), (2, 4)] {
        let cfg = with_workers(config(1), workers).max_pipelined(max_pipelined);
        let srv = Http::start(cfg, app);
        let batch: Vec<u8> = (0..300).flat_map(|i| get(&format!("/n{i}"))).collect();
        let ex = exchange(srv.addr, &[&batch], Duration::ZERO, 5 * SEC, true);
        assert_eq!(ex.responses.len(), 300, "{:?}", srv.server.http_stats());
        for (i, r) in ex.responses.iter().enumerate() {
            assert_eq!(r.text(), format!("GET /n{i}"));
        }
        assert!(ex.closed && !ex.reset);
        assert_eq!(srv.server.http_stats().incomplete, 0);
    }
}

#[test]
fn a_streamed_204_or_304_sends_no_body() {
    // RFC 9112 §6.3: a 204 or 304 response ends with its head. Bytes streamed for it are
    // dropped, so the next response is the real one.
    for workers in [0, 2] {
        let cfg = with_workers(config(1), workers);
        let srv = Http::start(cfg, app);
        for path in ["/stream204", "/defer-stream304"] {
            let ex = exchange(
                srv.addr,
                &[&get(path), &get("/next")],
                Duration::from_millis(50),
                SEC,
                false,
            );
            let want = if path == "/stream204" { 204 } else { 304 };
            assert_eq!(ex.statuses(), vec![want, 200], "{path}");
            assert_eq!(ex.responses[1].text(), "GET /next");
            assert!(ex.garbage.is_empty(), "{path}: {:?}", ex.garbage);
        }
    }
}

#[test]
fn a_stream_that_fails_midway_is_cut_not_finished() {
    for workers in [0, 2] {
        let cfg = with_workers(config(1), workers);
        let srv = Http::start(cfg, app);
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(&get("/stream-fail")).unwrap();
        s.set_read_timeout(Some(5 * SEC)).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        // The connection is cut (what was queued may be lost with it); the last chunk never
        // goes out, so the client never sees a complete body.
        assert!(!text.contains("0\r\n\r\n"), "{text}");
        assert_eq!(srv.server.http_stats().handler_failures, 1);
    }
}

#[test]
fn a_pipelined_head_gets_its_own_header_timeout() {
    // Each read ends inside the next head; every head completes well within the timeout,
    // but the first one began long before the last: no 408.
    // Timeout 1 s, 600 ms between pieces: each head completes 600 ms after its first byte
    // (400 ms to spare), while the second completes 1.2 s after the first began.
    let cfg = config(1).header_read_timeout(Duration::from_millis(1000));
    let srv = Http::start(cfg, app);
    let mut c = Client::connect(srv.addr);
    let gap = Duration::from_millis(600);
    c.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n");
    std::thread::sleep(gap);
    c.send(b"\r\nGET /2 HTTP/1.1\r\n");
    assert_eq!(c.read(1, &[]).remove(0).text(), "GET /1");
    std::thread::sleep(gap);
    c.send(b"Host: t\r\n\r\nGET /3 HTTP/1.1\r\n");
    assert_eq!(c.read(1, &[]).remove(0).text(), "GET /2");
    std::thread::sleep(gap);
    c.send(b"Host: t\r\n\r\n");
    assert_eq!(c.read(1, &[]).remove(0).text(), "GET /3");
    assert_eq!(srv.server.http_stats().header_timeouts, 0);
}

#[test]
fn requests_held_back_by_the_server_do_not_time_out() {
    // The second request arrives with the first; the first's large answer goes above the
    // output watermark and the client reads it slowly, so the server holds the second back
    // for longer than header_read_timeout. It is still answered.
    let mut cfg = config(1).header_read_timeout(Duration::from_millis(300));
    cfg.engine = cfg
        .engine
        .write_high_watermark(256 << 10)
        .write_low_watermark(64 << 10);
    let srv = Http::start(cfg, app);
    let mut s = slow_reader(srv.addr);
    let mut batch = get("/big?bytes=8000000");
    batch.extend_from_slice(&get("/after"));
    s.write_all(&batch).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let ex = read_all(&mut s, 2 * SEC, &[]);
    assert_eq!(
        ex.statuses(),
        vec![200, 200],
        "{:?}",
        srv.server.http_stats()
    );
    assert_eq!(ex.responses[1].text(), "GET /after");
    assert_eq!(srv.server.http_stats().header_timeouts, 0);
}

#[test]
fn a_closing_response_says_close_whatever_the_handler_set() {
    // The handler sends `Connection: keep-alive`, but the connection closes after this
    // response (the client asked, HTTP/1.0 without keep-alive, or the request limit): the
    // response says `close` too (RFC 9112 §9.6).
    let srv = Http::start(config(1).max_requests_per_connection(Some(2)), app);
    for (reqs, closing) in [
        (
            &b"GET /says-keep-alive HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
            &[true][..],
        ),
        (b"GET /says-keep-alive HTTP/1.0\r\n\r\n", &[true]),
        (
            b"GET /says-keep-alive HTTP/1.1\r\nHost: t\r\n\r\nGET /says-keep-alive HTTP/1.1\r\nHost: t\r\n\r\n",
            &[false, true],
        ),
    ] {
        let ex = exchange(srv.addr, &[reqs], Duration::ZERO, 2 * SEC, false);
        assert_eq!(ex.responses.len(), closing.len());
        for (r, &closes) in ex.responses.iter().zip(closing) {
            let says_close = r.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close")
            });
            assert_eq!(says_close, closes, "{r:?}");
        }
        assert!(ex.closed);
    }
}

#[test]
fn requests_pipelined_behind_a_yield_at_stop_are_all_answered() {
    // stop() arrives while a connection holds more pipelined requests, already read, than one
    // pass serves (max_pipelined 4; each takes 10 ms): every one is still answered within the
    // grace period, in order, and then the connection closes.
    for workers in [0, 2] {
        let cfg = with_workers(config(1), workers).max_pipelined(4);
        let srv = Http::start(cfg, app);
        let mut c = Client::connect(srv.addr);
        let batch: Vec<u8> = (0..20).flat_map(|i| get(&format!("/nap?{i}"))).collect();
        c.send(&batch);
        assert!(eventually(5 * SEC, || srv.server.http_stats().requests >= 1));
        srv.server.stop();
        let ex = read_all(&mut c.s, 5 * SEC, &[]);
        assert_eq!(ex.responses.len(), 20, "workers {workers}");
        for (i, r) in ex.responses.iter().enumerate() {
            assert_eq!(r.text(), format!("GET /nap?{i}"));
        }
        assert!(ex.closed && !ex.reset, "workers {workers}");
    }
}

#[test]
fn a_request_read_while_the_one_before_runs_at_stop_is_answered() {
    // On workers: the second request arrives on its own while the first one's handler runs
    // (150 ms), and stop() comes before that handler returns. The reactor read the second
    // before the stop, so it is answered too; then the connection closes. (Inline, the
    // reactor is inside the handler: the second is still in the kernel at the stop, and
    // nothing more is read once stopping.)
    let srv = Http::start(with_workers(config(1), 2), app);
    let mut c = Client::connect(srv.addr);
    let dozing = DOZING.load(std::sync::atomic::Ordering::SeqCst);
    c.send(&get("/doze"));
    assert!(eventually(5 * SEC, || DOZING
        .load(std::sync::atomic::Ordering::SeqCst)
        > dozing));
    let read_so_far = srv.server.stats().bytes_in;
    c.send(&get("/after"));
    let after = get("/after").len() as u64;
    assert!(eventually(5 * SEC, || srv.server.stats().bytes_in
        >= read_so_far + after));
    srv.server.stop();
    let ex = read_all(&mut c.s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![200, 200]);
    assert_eq!(ex.responses[1].text(), "GET /after");
    assert!(ex.closed && !ex.reset);
}

#[test]
fn a_stream_with_output_queued_at_stop_is_finished_within_the_grace_period() {
    // The client reads nothing at first (4 KiB receive buffer, and an 8 KiB send buffer on
    // the server), so the deferred stream's first 64 KiB part is mostly still queued when
    // stop() arrives: the stream still gets the grace period, and the client then reads the
    // whole body, its end, and a clean close.
    for workers in [0, 2] {
        let mut cfg = with_workers(config(1), workers);
        cfg.engine = cfg.engine.send_buffer_size(Some(8 << 10));
        let srv = Http::start(cfg, app);
        let mut s = slow_reader(srv.addr);
        s.write_all(&get("/defer-stream-big")).unwrap();
        assert!(eventually(5 * SEC, || srv.server.stats().bytes_out > 0));
        srv.server.stop();
        let ex = read_all(&mut s, 5 * SEC, &[]);
        assert_eq!(ex.statuses(), vec![200], "workers {workers}");
        assert_eq!(ex.responses[0].body.len(), 256 << 10, "workers {workers}");
        assert!(ex.closed && !ex.reset, "workers {workers}");
    }
}

#[test]
fn a_stream_still_running_when_the_grace_period_ends_is_reset() {
    // A chunked or close-delimited (HTTP/1.0) body cut by shutdown must not end with a clean
    // close that a client could take for its end: the connection is reset.
    for workers in [0, 2] {
        let mut cfg = with_workers(config(1), workers);
        cfg.engine = cfg.engine.shutdown_grace(Duration::from_millis(100));
        let srv = Http::start(cfg, app);
        let mut clients: Vec<_> = ["1.1", "1.0"]
            .into_iter()
            .map(|version| {
                let mut s = TcpStream::connect(srv.addr).unwrap();
                let req = format!("GET /defer-stream-endless HTTP/{version}\r\nHost: t\r\n\r\n");
                s.write_all(req.as_bytes()).unwrap();
                let mut first = [0u8; 12];
                s.read_exact(&mut first).unwrap();
                assert_eq!(&first, b"HTTP/1.1 200", "HTTP/{version}");
                (version, s)
            })
            .collect();
        srv.server.stop();
        for (version, s) in &mut clients {
            s.set_read_timeout(Some(5 * SEC)).unwrap();
            let end = loop {
                let mut buf = [0u8; 4096];
                match s.read(&mut buf) {
                    Ok(0) => break "end of stream",
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
                    Err(e) => panic!("workers {workers}, HTTP/{version}: {e}"),
                }
            };
            assert_eq!(end, "reset", "workers {workers}, HTTP/{version}");
        }
    }
}

#[test]
fn a_complete_answer_still_lingering_when_the_grace_period_ends_is_not_reset() {
    // An HTTP/1.0 deferred answer completes and its connection starts a graceful close, but
    // the client reads only after the grace period: the answer is whole, so the connection
    // must end cleanly, not with a reset that could throw away what the kernel still holds.
    for workers in [0, 2] {
        let mut cfg = with_workers(config(1), workers);
        cfg.engine = cfg.engine.shutdown_grace(Duration::from_millis(100));
        let srv = Http::start(cfg, app);
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(b"GET /defer HTTP/1.0\r\n\r\n").unwrap();
        // The answer comes 20 ms later; stop once it has gone out, and read after the grace.
        assert!(eventually(5 * SEC, || srv.server.stats().bytes_out > 0));
        srv.server.stop();
        std::thread::sleep(Duration::from_millis(400));
        let ex = read_all(&mut s, 5 * SEC, &[]);
        assert_eq!(ex.statuses(), vec![200], "workers {workers}");
        assert_eq!(ex.responses[0].text(), "deferred");
        assert!(ex.closed && !ex.reset, "workers {workers}");
    }
}

#[test]
fn a_deferred_answer_under_way_at_stop_is_delivered_within_the_grace_period() {
    for workers in [0, 2] {
        let cfg = with_workers(config(1), workers);
        // Deferred before stop(), and still in the handler when stop() arrives.
        for (path, text) in [("/defer-slow", "slow"), ("/busy-then-defer", "busy")] {
            let srv = Http::start(cfg.clone(), app);
            let mut c = Client::connect(srv.addr);
            c.send(&get(path));
            std::thread::sleep(Duration::from_millis(50));
            let t0 = Instant::now();
            srv.server.stop();
            let ex = read_all(&mut c.s, 5 * SEC, &[]);
            assert_eq!(ex.statuses(), vec![200], "{path}, workers {workers}");
            assert_eq!(ex.responses[0].text(), text);
            assert!(ex.closed);
            // Closed once answered, not at the end of the grace period (2 s).
            assert!(
                t0.elapsed() < Duration::from_millis(1500),
                "{:?}",
                t0.elapsed()
            );
        }
    }
}

#[test]
fn a_paced_stream_larger_than_max_write_buffer_reaches_a_slow_reader_whole() {
    // 40 MiB streamed from another thread against a 16 MiB max_write_buffer, to a client
    // that reads nothing for half a second: waiting for room before each piece keeps the
    // queue at the watermarks, so the body arrives whole instead of the connection being
    // reset. A client that leaves mid-body ends the wait with `Closed`.
    for workers in [0, 2] {
        let srv = Http::start(with_workers(config(1), workers), app);
        *PACED.lock().unwrap() = None;
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(10 * SEC)).unwrap();
        s.write_all(&get("/paced")).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let mut buf = Vec::with_capacity(41 << 20);
        let mut chunk = vec![0u8; 1 << 20];
        while !buf.ends_with(b"\r\n0\r\n\r\n") {
            let n = s.read(&mut chunk).expect("body");
            assert!(n > 0, "closed after {} bytes", buf.len());
            buf.extend_from_slice(&chunk[..n]);
        }
        let (rs, _) = parse_responses(&buf, false, &[false]);
        assert_eq!(rs.len(), 1, "workers {workers}");
        assert_eq!(rs[0].body.len(), 40 << 20, "workers {workers}");
        assert!(rs[0].body.iter().all(|&b| b == b'p'));
        let ended = PACED.lock().unwrap().clone().unwrap();
        assert!(ended.starts_with("done"), "{ended}");

        // A client that goes away: the producer's wait ends with Closed, not never.
        *PACED.lock().unwrap() = None;
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(&get("/paced")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(s);
        assert!(eventually(5 * SEC, || PACED.lock().unwrap().is_some()));
        let ended = PACED.lock().unwrap().clone().unwrap();
        assert!(
            ended.contains("Closed") || ended == "write failed",
            "workers {workers}: {ended}"
        );
    }
}

#[test]
fn a_deferred_answer_outliving_response_timeout_gets_503_or_is_cut_and_a_late_answer_fails() {
    use shoal_core::http::{ChunkedBody, Deferred};
    use std::sync::Mutex;
    use std::sync::mpsc::{Sender, channel};
    enum Kept {
        Deferred(Deferred),
        Body(ChunkedBody),
    }
    for workers in [0, 2] {
        let (tx, rx) = channel::<Kept>();
        let tx = Mutex::new(tx);
        let keep = move |k: Kept| {
            let tx: &Sender<Kept> = &tx.lock().unwrap();
            tx.send(k).unwrap();
        };
        let cfg =
            with_workers(config(1), workers).response_timeout(Some(Duration::from_millis(500)));
        let srv = Http::start(cfg, move |req: &Request<'_>, res: &mut Response<'_, '_>| {
            match req.path() {
                // Deferred, then kept by the application and never answered in time.
                "/hold" => keep(Kept::Deferred(res.defer().unwrap())),
                // A stream begun, one part sent, then kept unfinished.
                "/stream-hold" => {
                    let mut d = res.defer().unwrap();
                    let mut body = d.start_chunked(200, &[("X-From", "kept")]).unwrap();
                    body.write(b"part").unwrap();
                    keep(Kept::Body(body));
                }
                // Answered from a thread well within the timeout.
                "/quick" => {
                    let mut d = res.defer().unwrap();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(20));
                        d.send(200, &[("X-From", "thread")], b"quick").unwrap();
                    });
                }
                // Answered from a thread after the milliseconds in the query.
                "/wait" => {
                    let ms = req.query().unwrap_or("0").parse().unwrap();
                    let mut d = res.defer().unwrap();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(ms));
                        d.send(200, &[("X-From", "thread")], b"waited").unwrap();
                    });
                }
                p => res.send(200, &[("X-Path", p)], b"plain").unwrap(),
            }
        });

        // Nothing of the answer was sent: 503, and the request pipelined behind it is not
        // served.
        let t0 = Instant::now();
        let mut batch = get("/hold");
        batch.extend_from_slice(&get("/after"));
        let ex = exchange(srv.addr, &[&batch], Duration::ZERO, 5 * SEC, false);
        let waited = t0.elapsed();
        assert_eq!(ex.statuses(), vec![503], "workers={workers}: {ex:?}");
        assert_eq!(ex.responses[0].header("connection"), Some("close"));
        assert!(ex.closed && ex.garbage.is_empty(), "{ex:?}");
        assert!(
            waited >= Duration::from_millis(490) && waited < 5 * SEC,
            "answered after {waited:?}"
        );
        // The late answer fails and is not sent anywhere; dropping it counts no failure.
        let Kept::Deferred(mut d) = rx.recv_timeout(5 * SEC).unwrap() else {
            panic!("expected the deferred response");
        };
        assert!(matches!(
            d.send(200, &[("X", "y")], b"late"),
            Err(shoal_core::Error::Closed)
        ));
        drop(d);

        // A stream under way is cut: its body never looks complete.
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(&get("/stream-hold")).unwrap();
        let mut got = Vec::new();
        s.set_read_timeout(Some(5 * SEC)).unwrap();
        let t0 = Instant::now();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let waited = t0.elapsed();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
        assert!(text.contains("\r\n\r\n4\r\npart\r\n"), "{text:?}");
        assert!(
            !text.contains("0\r\n\r\n"),
            "the cut body looks complete: {text:?}"
        );
        assert!(
            waited >= Duration::from_millis(450) && waited < 5 * SEC,
            "{waited:?}"
        );
        let Kept::Body(body) = rx.recv_timeout(5 * SEC).unwrap() else {
            panic!("expected the streamed body");
        };
        assert!(matches!(body.finish(), Err(shoal_core::Error::Closed)));

        // An answer in time leaves no deadline behind: the connection idles past the
        // response timeout and serves again.
        let mut c = Client::connect(srv.addr);
        assert_eq!(c.get("/quick").text(), "quick");
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(c.get("/next").header("x-path"), Some("/next"));
        assert_eq!(c.get("/quick").text(), "quick");
        // Each deferred answer has its own time: the second of two pipelined ones is not held
        // to the first one's deadline.
        let mut batch = get("/wait?300");
        batch.extend_from_slice(&get("/wait?300"));
        c.send(&batch);
        let rs = c.read(2, &[]);
        assert_eq!(
            rs.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![200, 200]
        );

        let st = srv.server.http_stats();
        assert_eq!(st.response_timeouts, 2, "workers={workers}: {st:?}");
        assert_eq!(st.handler_failures, 0, "workers={workers}: {st:?}");
        assert_eq!(st.deferred, 6, "workers={workers}: {st:?}");
        assert_eq!(st.responses[4], 1, "one 503: {st:?}");
    }
}

#[test]
fn response_timeout_must_be_positive() {
    let cfg = config(1).response_timeout(Some(Duration::ZERO));
    let err = shoal_core::http::HttpServer::bind(cfg, app).expect_err("refused");
    assert!(err.to_string().contains("response_timeout"), "{err}");
}

#[test]
fn shoal_s_own_answers_to_head_requests_carry_no_body() {
    // A 500 for a failing handler, a 413 for a rejected head, a 503 for a deferred answer
    // given up, and a 408 for a body that stopped coming in either framing: to HEAD, each is
    // a head only (RFC 9110 §9.3.2), or its body would read as the start of the next response.
    let kept = std::sync::Mutex::new(Vec::new());
    let cfg = config(1)
        .max_body_size(1000)
        .body_read_timeout(Duration::from_millis(200))
        .response_timeout(Some(Duration::from_millis(200)));
    let srv = Http::start(
        cfg,
        move |req: &Request<'_>, res: &mut Response<'_, '_>| match req.path() {
            "/panic" => panic!("handler fails on purpose"),
            _ => kept.lock().unwrap().push(res.defer().unwrap()),
        },
    );
    for (raw, status) in [
        (&b"HEAD /panic HTTP/1.1\r\nHost: t\r\n\r\n"[..], 500),
        (
            b"\r\nHEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
            413,
        ),
        (b"HEAD /hold HTTP/1.1\r\nHost: t\r\n\r\n", 503),
        (
            b"HEAD /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
            408,
        ),
        (
            b"HEAD /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            408,
        ),
    ] {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(raw).unwrap();
        let ex = read_all(&mut s, 5 * SEC, &[true]);
        assert_eq!(ex.statuses(), vec![status], "{ex:?}");
        assert!(ex.closed, "{ex:?}");
        assert!(ex.garbage.is_empty(), "a body after the head: {ex:?}");
        assert!(ex.responses[0].body.is_empty());
    }
}

#[test]
fn a_stray_crlf_after_a_request_leaves_the_connection_idle_not_slow() {
    // RFC 9112 §2.2: a client may send an empty line after a request. That begins no new
    // request, so the header timeout must not run (it would answer an unsolicited 408).
    let cfg = config(1)
        .header_read_timeout(Duration::from_millis(300))
        .keepalive_timeout(5 * SEC);
    let srv = Http::start(cfg, app);
    let mut c = Client::connect(srv.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi\r\n");
    assert_eq!(c.read(1, &[false])[0].text(), "hi");
    c.s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(c.s.read(&mut b).is_err(), "an unsolicited answer arrived");
    c.s.set_read_timeout(Some(5 * SEC)).unwrap();
    assert_eq!(c.get("/after").text(), "GET /after");
    // The CRLF in a read of its own, after a plain answer and after a deferred one, and cut
    // between its CR and its LF.
    for (path, expect) in [("/plain", "same"), ("/defer", "deferred")] {
        assert_eq!(c.get(path).text(), expect);
        c.send(b"\r");
        std::thread::sleep(Duration::from_millis(20));
        c.send(b"\n");
        c.s.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        assert!(c.s.read(&mut b).is_err(), "an unsolicited answer arrived");
        c.s.set_read_timeout(Some(5 * SEC)).unwrap();
    }
    assert_eq!(c.get("/after").text(), "GET /after");
    let st = srv.server.http_stats();
    assert_eq!((st.header_timeouts, st.incomplete), (0, 0), "{st:?}");
}

#[test]
fn timeouts_past_what_an_instant_holds_mean_no_deadline() {
    let cfg = config(1)
        .keepalive_timeout(Duration::MAX)
        .header_read_timeout(Duration::MAX)
        .body_read_timeout(Duration::MAX)
        .response_timeout(Some(Duration::MAX));
    let srv = Http::start(cfg, app);
    let mut c = Client::connect(srv.addr);
    for _ in 0..3 {
        assert_eq!(c.get("/x").text(), "GET /x");
    }
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"cd");
    assert_eq!(c.read(1, &[false])[0].text(), "abcd");
    assert_eq!(c.get("/defer").text(), "deferred");
    assert_eq!(srv.server.stats().handler_failures, 0);
}

#[test]
fn engine_read_and_idle_timeouts_stand_still_while_a_deferred_answer_holds_the_input() {
    // A request pipelined behind a deferred one waits, held by the server: the engine's read
    // and idle timeouts must not blame the client for it.
    let mut cfg = config(1);
    cfg.engine = cfg
        .engine
        .read_timeout(Some(Duration::from_millis(300)))
        .idle_timeout(Some(Duration::from_millis(300)));
    let srv = Http::start(cfg, |req: &Request<'_>, res: &mut Response<'_, '_>| {
        if req.path() == "/slow" {
            let mut d = res.defer().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(900));
                d.send(200, &[("X-From", "thread")], b"slow").unwrap();
            });
        } else {
            res.send(200, &[("X-A", "b")], b"quick").unwrap();
        }
    });
    let mut c = Client::connect(srv.addr);
    let mut batch = get("/slow");
    batch.extend_from_slice(&get("/next"));
    c.send(&batch);
    let rs = c.read(2, &[]);
    assert_eq!(rs[0].text(), "slow");
    assert_eq!(rs[1].text(), "quick");
    let st = srv.server.stats();
    assert_eq!(st.closed(shoal_core::CloseReason::ReadTimeout), 0, "{st:?}");
    assert_eq!(st.closed(shoal_core::CloseReason::IdleTimeout), 0, "{st:?}");
    // Idle again: the idle timeout applies as before.
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    c.s.set_read_timeout(Some(5 * SEC)).unwrap();
    assert!(matches!(c.s.read(&mut b), Ok(0) | Err(_)));
    assert!(t0.elapsed() < 3 * SEC);
}

#[test]
fn a_rejected_head_gets_the_same_status_however_it_was_cut() {
    // A target over max_target_len together with a bare LF, or with a head over
    // max_header_bytes: 414 whether the head arrives at once or in two reads.
    let cfg = config(1).max_target_len(64).max_header_bytes(256);
    let srv = Http::start(cfg, app);
    let long = "a".repeat(100);
    let cases = [
        format!("GET /{long} HTTP/1.1\nHost: t\n\n"),
        format!(
            "GET /{long} HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(300)
        ),
    ];
    for raw in &cases {
        let raw = raw.as_bytes();
        for at in (0..raw.len()).step_by(7).chain([raw.len()]) {
            let pieces: Vec<&[u8]> = if at == raw.len() {
                vec![raw]
            } else {
                vec![&raw[..at], &raw[at..]]
            };
            let ex = exchange(srv.addr, &pieces, Duration::from_millis(5), 5 * SEC, false);
            assert_eq!(ex.statuses(), vec![414], "split at {at}: {ex:?}");
        }
    }
}

/// A head arriving in many small reads: until a line ends in the new bytes it is not parsed
/// again, but its limits are still checked on every read, errors still answer once their
/// line ends, and a complete head is served as ever (heads past 64 KiB included).
#[test]
fn a_head_in_many_small_reads_is_served_and_still_checked() {
    fn drip(s: &mut TcpStream, bytes: &[u8], piece: usize) {
        for (i, p) in bytes.chunks(piece).enumerate() {
            s.write_all(p).unwrap();
            if i % 4 == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    }
    let srv = Http::start(config(1).max_header_bytes(4096), app);
    // Served, a byte at a time.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut head = b"GET /drip HTTP/1.1\r\nHost: t\r\nX-Long: ".to_vec();
    head.extend_from_slice(&[b'v'; 600]);
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    drip(&mut s, &head, 1);
    let ex = read_all(&mut s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![200]);
    assert_eq!(ex.responses[0].text(), "GET /drip");
    // A field line growing past max_header_bytes without ever ending: 431 on the read that
    // crosses the limit, not a wait for its line end or the header timeout.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let t0 = Instant::now();
    drip(&mut s, b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ", 1);
    drip(&mut s, &[b'v'; 5000], 64);
    let ex = read_all(&mut s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![431]);
    assert!(t0.elapsed() < 4 * SEC);
    // A NUL inside a field line: 400 once its line ends.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    drip(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Bad: a\0b\r\n\r\n",
        1,
    );
    let ex = read_all(&mut s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![400]);
    // A head past 64 KiB (where the count of bytes seen is not kept) in small reads.
    let big = Http::start(config(1).max_header_bytes(128 << 10), app);
    let mut s = TcpStream::connect(big.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut head = b"GET /big-head HTTP/1.1\r\nHost: t\r\nX-Long: ".to_vec();
    head.extend_from_slice(&vec![b'v'; 70 << 10]);
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    drip(&mut s, &head, 4096);
    let ex = read_all(&mut s, 5 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![200]);
}

/// What a head in pieces must still get at once: a control byte in a line that never ends is
/// a 400 (httparse refuses it wherever it stands), and a head begun after a stray CRLF that
/// came in its own read runs the header timeout (408), not the keep-alive one.
#[test]
fn a_head_in_pieces_is_judged_as_its_bytes_arrive() {
    let cfg = config(1)
        .header_read_timeout(Duration::from_millis(300))
        .keepalive_timeout(10 * SEC);
    let srv = Http::start(cfg, app);
    let pause = || std::thread::sleep(Duration::from_millis(30));
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Bad: a")
        .unwrap();
    pause();
    s.write_all(b"\0b").unwrap();
    let t0 = Instant::now();
    let ex = read_all(&mut s, 2 * SEC, &[]);
    assert_eq!(ex.statuses(), vec![400]);
    assert!(
        t0.elapsed() < 2 * SEC,
        "answered at once, not at the header timeout"
    );

    let mut c = Client::connect(srv.addr);
    assert_eq!(c.get("/first").text(), "GET /first");
    c.send(b"\r\n");
    pause();
    c.send(b"GET /sl");
    pause();
    c.send(b"ow");
    let ex = read_all(&mut c.s, 3 * SEC, &[]);
    assert_eq!(
        ex.statuses(),
        vec![408],
        "the header timeout, from the head's first byte"
    );
}
