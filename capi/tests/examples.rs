//! Drives the C example servers in examples/c: each is compiled with
//! `-Wall -Wextra -Werror -fsanitize=address,undefined` against include/shoal.h and this
//! build's libshoal.so, started with `--port 0 --threads 2` (and with `--workers 2`), found
//! through its `listening on HOST:PORT` line, exercised over TCP, then stopped with SIGTERM:
//! it must exit 0 within 3 s with no sanitizer report (leak checking included).

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{SANITIZE, compile_c, lib_dir, root, sanitizer_env, sanitizer_report};

/// How long a server may take to print its `listening on` line (sanitizers start slowly).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Every read and write of a client.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client waits to be sure nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// Compiles examples/c/<name>.c with the sanitizers into c-examples/<exe_name> (each test its
/// own file: tests run in parallel).
fn build(name: &str, exe_name: &str) -> PathBuf {
    let src = root().join("examples/c").join(format!("{name}.c"));
    let exe = lib_dir().join("c-examples").join(exe_name);
    compile_c(&src, &exe, &SANITIZE);
    exe
}

/// A running example server; killed if the test fails before stopping it.
struct Server {
    label: String,
    child: Child,
    port: u16,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `exe --host 127.0.0.1 --port 0 --threads 2 <extra>` and waits for its
    /// `listening on 127.0.0.1:PORT` line. `label` names the run in messages and files.
    fn start(exe: &Path, label: &str, extra: &[&str]) -> Server {
        let stderr_path = exe.with_file_name(format!("{label}.stderr"));
        let stderr = File::create(&stderr_path).expect("create the stderr file");
        let mut cmd = Command::new(exe);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--threads", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        sanitizer_env(&mut cmd);
        let mut child = cmd.spawn().expect("start the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server can never block on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            label: label.to_owned(),
            child,
            port: 0,
            stderr_path,
        };
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{label}: no `listening on` line within {START_TIMEOUT:?}; stderr:\n{}",
                server.stderr()
            )
        });
        let port = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on 127.0.0.1:"))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .unwrap_or_else(|| {
                panic!(
                    "{label}: expected `listening on 127.0.0.1:PORT`, got {line:?}; stderr:\n{}",
                    server.stderr()
                )
            });
        server.port = port;
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A blocking client with timeouts.
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the example");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// SIGTERM; the server must exit 0 within EXIT_TIMEOUT with a clean stderr.
    fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill() only sends a signal; `pid` is our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait for the example") {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running {EXIT_TIMEOUT:?} after SIGTERM; stderr:\n{}",
                self.label,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr();
        assert_eq!(
            status.code(),
            Some(0),
            "{}: exit status {status} after SIGTERM; stderr:\n{stderr}",
            self.label
        );
        if let Some(report) = sanitizer_report(&stderr) {
            panic!("{}: sanitizer report:\n{report}", self.label);
        }
        assert!(
            !stderr.contains(" failed: "),
            "{}: reported an error:\n{stderr}",
            self.label
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// echo

fn echo_scenario(srv: &Server) {
    let mut a = srv.connect();
    let mut b = srv.connect();
    let mut buf = [0u8; 64];
    for i in 0..50 {
        for (who, conn) in [("a", &mut a), ("b", &mut b)] {
            let msg = format!("{who} says {i}");
            conn.write_all(msg.as_bytes()).unwrap();
            conn.read_exact(&mut buf[..msg.len()]).unwrap();
            assert_eq!(&buf[..msg.len()], msg.as_bytes(), "{}", srv.label);
        }
    }

    // 2 MiB written by another thread while this one reads: more than the socket buffers
    // hold, so the server's output backs up and resumes.
    let big: Vec<u8> = (0..2usize << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = a.try_clone().unwrap();
    let data = big.clone();
    let t = std::thread::spawn(move || writer.write_all(&data));
    let mut got = vec![0u8; big.len()];
    a.read_exact(&mut got).unwrap();
    t.join().unwrap().unwrap();
    assert!(got == big, "{}: 2 MiB came back altered", srv.label);

    // One client leaving does not disturb another.
    drop(a);
    b.write_all(b"still here").unwrap();
    b.read_exact(&mut buf[..10]).unwrap();
    assert_eq!(&buf[..10], b"still here");
    // `b` stays connected through the stop: an idle connection must not delay it.
}

#[test]
fn echo_inline_and_with_workers() {
    let exe = build("echo", "echo");
    for (label, extra) in [("echo", &[][..]), ("echo-workers", &["--workers", "2"][..])] {
        let srv = Server::start(&exe, label, extra);
        echo_scenario(&srv);
        srv.stop();
    }
}

// ------------------------------------------------------------------------------------------
// http_hello

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let n = r.read_line(&mut line).expect("read a response line");
    assert!(n > 0, "connection closed in a response head");
    line
}

/// Reads one response (no body for a HEAD request): Content-Length, chunked or until close.
fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> Response {
    let status_line = read_line(r);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line(r);
        let line = line.trim_end_matches("\r\n");
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').expect("a header field");
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let mut res = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head {
        return res;
    }
    if res.header("transfer-encoding") == Some("chunked") {
        loop {
            let size_line = read_line(r);
            let hex = size_line.trim_end().split(';').next().unwrap();
            let size = usize::from_str_radix(hex, 16).expect("a chunk size");
            if size == 0 {
                while read_line(r) != "\r\n" {}
                break;
            }
            let start = res.body.len();
            res.body.resize(start + size, 0);
            r.read_exact(&mut res.body[start..]).unwrap();
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).unwrap();
            assert_eq!(&crlf, b"\r\n");
        }
    } else if let Some(len) = res.header("content-length") {
        res.body = vec![0; len.parse().expect("a Content-Length")];
        r.read_exact(&mut res.body).unwrap();
    } else {
        r.read_to_end(&mut res.body).unwrap();
    }
    res
}

fn exchange(c: &mut BufReader<TcpStream>, request: &[u8]) -> Response {
    c.get_mut().write_all(request).unwrap();
    read_response(c, request.starts_with(b"HEAD "))
}

fn http_scenario(srv: &Server) {
    let label = &srv.label;
    let mut c = BufReader::new(srv.connect());

    let r = exchange(&mut c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{label}");
    assert_eq!(r.body, b"Hello, World!", "{label}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{label}");

    // HEAD: the head of the GET, no body (the next response on the connection proves it).
    let r = exchange(&mut c, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{label}");
    assert_eq!(r.header("content-length"), Some("13"), "{label}");

    let json = br#"{"greeting": ["hello", "world"]}"#;
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        json.len()
    )
    .into_bytes();
    req.extend_from_slice(json);
    let r = exchange(&mut c, &req);
    assert_eq!(r.status, 200, "{label}");
    assert_eq!(r.body, json, "{label}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{label}"
    );

    // Every byte value, and no Content-Type: application/octet-stream.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    )
    .into_bytes();
    req.extend_from_slice(&bytes);
    let r = exchange(&mut c, &req);
    assert_eq!(r.status, 200, "{label}");
    assert!(r.body == bytes, "{label}: /echo altered the body");
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "{label}"
    );

    // Above 1 MiB the body is streamed in chunks.
    let r = exchange(
        &mut c,
        b"GET /big?bytes=3000000 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{label}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{label}");
    assert_eq!(r.body.len(), 3_000_000, "{label}");
    assert!(r.body.iter().all(|&b| b == b'x'), "{label}");

    let r = exchange(
        &mut c,
        b"GET /big?other=1&bytes=1000 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{label}");
    assert_eq!(r.header("content-length"), Some("1000"), "{label}");
    assert!(r.body.len() == 1000 && r.body.iter().all(|&b| b == b'x'));

    let r = exchange(&mut c, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.body.len(), 1 << 20, "{label}: /big defaults to 1 MiB");

    // More than one response may queue (max_write_buffer, 16 MiB by default) is refused
    // with a reason, not cut off by an aborted connection; the connection carries on.
    let r = exchange(
        &mut c,
        b"GET /big?bytes=17000000 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 413, "{label}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("--max-write-buffer"),
        "{label}"
    );

    let r = exchange(&mut c, b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404, "{label}");

    let r = exchange(&mut c, b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405, "{label}");
    assert!(r.header("allow").is_some(), "{label}: 405 without Allow");
    let r = exchange(&mut c, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405, "{label}");

    // Pipelined requests are answered in order.
    c.get_mut()
        .write_all(
            b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nlast\
              GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut c, false).status, 404, "{label}");
    assert_eq!(read_response(&mut c, false).body, b"last", "{label}");
    assert_eq!(
        read_response(&mut c, false).body,
        b"Hello, World!",
        "{label}"
    );

    // --max-body-bytes 4096 is applied: a larger body is refused with 413.
    let mut big = BufReader::new(srv.connect());
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.resize(req.len() + 5000, b'b');
    assert_eq!(exchange(&mut big, &req).status, 413, "{label}");
    // `c` stays open and idle through the stop.
}

#[test]
fn http_hello_inline_and_with_workers() {
    let exe = build("http_hello", "http_hello");
    let limit = ["--max-body-bytes", "4096"];
    let workers = ["--max-body-bytes", "4096", "--workers", "2"];
    for (label, extra) in [
        ("http_hello", &limit[..]),
        ("http_hello-workers", &workers[..]),
    ] {
        let srv = Server::start(&exe, label, extra);
        http_scenario(&srv);
        srv.stop();
    }
}

// ------------------------------------------------------------------------------------------
// chat

struct Client {
    r: BufReader<TcpStream>,
    name: &'static str,
}

impl Client {
    /// Connects and waits for the welcome line: from then on the server lists this client.
    fn join(srv: &Server, name: &'static str) -> Client {
        let mut c = Client {
            r: BufReader::new(srv.connect()),
            name,
        };
        let hello = c.line();
        assert!(hello.starts_with("* welcome: "), "{name} got {hello:?}");
        c
    }

    fn send(&mut self, text: &str) {
        self.r.get_mut().write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{} reads a line: {e}", self.name));
        line
    }

    /// Asserts that nothing arrives for a while.
    fn hears_nothing(&mut self) {
        assert!(
            self.r.buffer().is_empty(),
            "{} has unexpected input buffered: {:?}",
            self.name,
            String::from_utf8_lossy(self.r.buffer())
        );
        self.r.get_ref().set_read_timeout(Some(QUIET)).unwrap();
        let mut b = [0u8; 256];
        match self.r.get_mut().read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(n) => panic!(
                "{} got unexpected {:?}",
                self.name,
                String::from_utf8_lossy(&b[..n])
            ),
            Err(e) => panic!("{}: {e}", self.name),
        }
        self.r.get_ref().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }
}

fn chat_scenario(srv: &Server) {
    let mut a = Client::join(srv, "a");
    let mut b = Client::join(srv, "b");
    let mut c = Client::join(srv, "c");

    a.send("hello from a\n");
    assert_eq!(b.line(), "hello from a\n");
    assert_eq!(c.line(), "hello from a\n");

    // A line arriving in pieces is joined; several lines in one write are all delivered.
    b.send("par");
    std::thread::sleep(Duration::from_millis(50));
    b.send("tial");
    std::thread::sleep(Duration::from_millis(50));
    b.send(" line\nand another\n");
    for who in [&mut a, &mut c] {
        assert_eq!(who.line(), "partial line\n");
        assert_eq!(who.line(), "and another\n");
    }
    a.hears_nothing();
    b.hears_nothing();
    c.hears_nothing();

    // A client leaving (with an unfinished line) does not disturb the others.
    c.send("never finished");
    drop(c);
    a.send("after c left\n");
    assert_eq!(b.line(), "after c left\n");
    b.send("still here\n");
    assert_eq!(a.line(), "still here\n");

    let mut d = Client::join(srv, "d");
    d.send("d arrives\n");
    assert_eq!(a.line(), "d arrives\n");
    assert_eq!(b.line(), "d arrives\n");
    a.hears_nothing();
    b.hears_nothing();
    d.hears_nothing();

    // A line longer than 64 KiB: that client is told and disconnected, the others are not.
    let mut e = Client::join(srv, "e");
    e.send(&"y".repeat(70 * 1024));
    assert_eq!(e.line(), "* line too long\n");
    assert_eq!(e.line(), "", "e is disconnected");
    // The same line finished, in one write: refused too, not broadcast.
    let mut f = Client::join(srv, "f");
    f.send(&format!("{}\n", "z".repeat(70 * 1024)));
    assert_eq!(f.line(), "* line too long\n");
    assert_eq!(f.line(), "", "f is disconnected");
    a.hears_nothing();
    d.send("bye\n");
    assert_eq!(a.line(), "bye\n");
    assert_eq!(b.line(), "bye\n");
    // a, b and d stay connected through the stop.
}

#[test]
fn chat_inline_and_with_workers() {
    let exe = build("chat", "chat");
    for (label, extra) in [("chat", &[][..]), ("chat-workers", &["--workers", "2"][..])] {
        let srv = Server::start(&exe, label, extra);
        chat_scenario(&srv);
        srv.stop();
    }
}

// ------------------------------------------------------------------------------------------
// the command-line convention

#[test]
fn bad_flags_exit_2_and_help_exits_0() {
    let exe = build("echo", "echo-flags");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(&exe);
        sanitizer_env(&mut cmd);
        cmd.args(args).stdin(Stdio::null()).output().unwrap()
    };
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host",
        "--port",
        "--threads",
        "--workers",
        "--idle-timeout-ms",
    ] {
        assert!(
            usage.contains(flag),
            "--help does not list {flag}:\n{usage}"
        );
    }
    for args in [
        &["--nonsense", "1"][..],
        &["--port", "http"][..],
        &["--port", "70000"][..],
        &["--threads"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A value shoal rejects: exit 1 with shoal's own message.
    let out = run(&["--port", "0", "--threads", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHOAL_ERR_"), "{err}");
}

/// The flag names `examples/rust/http_hello.rs` declares: the string literals of its
/// `cli::Args::parse(name, &[(flag, help), ...])` call, every other one after the name.
fn rust_http_hello_flags() -> Vec<String> {
    let src = std::fs::read_to_string(root().join("examples/rust/http_hello.rs")).unwrap();
    let start = src
        .find("cli::Args::parse(")
        .expect("the Rust example parses flags");
    let list = &src[start..];
    let list = &list[..list.find("],").expect("the flag list ends")];
    let literals: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    assert_eq!(literals.first(), Some(&"http_hello"), "{literals:?}");
    literals[1..]
        .iter()
        .step_by(2)
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn c_http_hello_takes_the_flags_of_its_rust_twin() {
    let exe = build("http_hello", "http_hello-flags");
    let mut cmd = Command::new(&exe);
    sanitizer_env(&mut cmd);
    let out = cmd.arg("--help").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&out.stdout);
    let c_flags: Vec<&str> = usage
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let rust_flags = rust_http_hello_flags();
    assert!(rust_flags.len() >= 15, "{rust_flags:?}");
    for flag in &rust_flags {
        assert!(
            c_flags.contains(&flag.as_str()),
            "the C http_hello lacks --{flag}:\n{usage}"
        );
    }
    for flag in &c_flags {
        assert!(
            ["host", "port", "threads"].contains(flag) || rust_flags.iter().any(|f| f == flag),
            "the Rust http_hello lacks --{flag}"
        );
    }
}
