//! The example servers follow the example-server convention: `--host/--port/--threads`, one
//! flushed `listening on HOST:PORT` line, their routes, and exit status 0 after SIGTERM or
//! SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `cargo test` builds examples next to the test binaries' `deps/` folder.
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

/// Starts an example, checks its `listening on` line, returns it and its address.
fn spawn(name: &str, args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(example(name))
        .args(["--host", "127.0.0.1", "--port", "0", "--threads", "2"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("example built by cargo test");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_owned();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    (child, addr)
}

/// Signals the child and checks it exits 0 within 3 s.
fn signal_and_wait(child: &mut std::process::Child, signal: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no exit after signal"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

fn run_and_signal(signal: i32, extra: &[&str]) {
    let mut args = vec!["--idle-timeout-ms", "60000", "--max-connections", "100"];
    args.extend_from_slice(extra);
    let (mut child, addr) = spawn("echo", &args);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"convention").unwrap();
    let mut got = [0u8; 10];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"convention");
    signal_and_wait(&mut child, signal);
    // The open connection was closed by the graceful stop.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn echo_example_exits_zero_on_sigterm() {
    run_and_signal(libc::SIGTERM, &[]);
}

#[test]
fn echo_example_exits_zero_on_sigint() {
    run_and_signal(libc::SIGINT, &[]);
}

#[test]
fn echo_example_in_pool_mode() {
    run_and_signal(
        libc::SIGTERM,
        &[
            "--workers",
            "2",
            "--handler-delay-ms",
            "5",
            "--handler-timeout-ms",
            "1000",
        ],
    );
}

#[test]
fn echo_example_rejects_unknown_flags() {
    let out = Command::new(example("echo"))
        .arg("--no-such-flag")
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag --no-such-flag"));
}

/// One HTTP request over a fresh connection; the raw response.
fn http(addr: &str, req: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http_hello_routes_and_convention() {
    for extra in [&[][..], &["--workers", "2"][..]] {
        let (mut child, addr) = spawn("http_hello", extra);
        let r = http(
            &addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain\r\n"));
        assert!(r.ends_with("\r\n\r\nHello, World!"), "{r}");
        let r = http(
            &addr,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping",
        );
        assert!(r.ends_with("\r\n\r\nping"), "{r}");
        let r = http(
            &addr,
            b"GET /big?bytes=100000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(r.contains("Content-Length: 100000\r\n"));
        let r = http(
            &addr,
            b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        signal_and_wait(&mut child, libc::SIGTERM);
    }
}
