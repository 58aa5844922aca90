//! Helpers for the HTTP tests: a test server, a raw client that parses whatever comes back.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shoal_core::Config;
use shoal_core::http::{HttpConfig, HttpHandler, HttpServer};

#[path = "../util/mod.rs"]
mod engine_util;
#[allow(unused_imports)] // not every test file polls
pub use engine_util::eventually;

/// A started HTTP server, stopped when dropped.
pub struct Http<H: HttpHandler> {
    pub server: HttpServer<H>,
    pub addr: SocketAddr,
}

impl<H: HttpHandler> Http<H> {
    pub fn start(config: HttpConfig, handler: H) -> Self {
        let mut server = HttpServer::bind(config, handler).expect("bind");
        server.start().expect("start");
        let addr = server.local_addr();
        Http { server, addr }
    }
}

impl<H: HttpHandler> Drop for Http<H> {
    fn drop(&mut self) {
        self.server.stop();
        let _ = self.server.wait();
    }
}

pub fn config(threads: usize) -> HttpConfig {
    HttpConfig::new(
        Config::new("127.0.0.1:0".parse().unwrap())
            .threads(threads)
            .shutdown_grace(Duration::from_secs(2))
            .linger_timeout(Duration::from_millis(500)),
    )
}

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Everything read from a connection and how it ended.
#[derive(Debug)]
pub struct Exchange {
    pub responses: Vec<Resp>,
    /// The server closed (end-of-stream or reset) rather than the read timing out.
    pub closed: bool,
    /// The connection was reset (bytes may have been lost).
    pub reset: bool,
    /// Bytes that did not parse as a response.
    pub garbage: Vec<u8>,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

/// Parses as many complete responses as `buf` holds; returns them and the bytes used.
/// `head_requests` tells which responses answer HEAD (no body).
pub fn parse_responses(buf: &[u8], closed: bool, head_requests: &[bool]) -> (Vec<Resp>, usize) {
    parse_some(buf, closed, head_requests, usize::MAX)
}

/// As [`parse_responses`], stopping after `limit` responses.
pub fn parse_some(
    buf: &[u8],
    closed: bool,
    head_requests: &[bool],
    limit: usize,
) -> (Vec<Resp>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while out.len() < limit {
        let rest = &buf[pos..];
        let Some(end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        // Anything in front of a status line (stray bytes) makes it unreadable: status 0.
        let status: u16 = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|v| v.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let hdr = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let body_start = end + 4;
        if status == 100 {
            pos += body_start;
            continue;
        }
        let is_head = head_requests.get(out.len()).copied().unwrap_or(false);
        let no_body = is_head || status == 204 || status == 304;
        let (body, used) = if no_body {
            (Vec::new(), body_start)
        } else if let Some(n) = hdr("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if rest.len() < body_start + n {
                break;
            }
            (rest[body_start..body_start + n].to_vec(), body_start + n)
        } else if hdr("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            let mut p = body_start;
            let complete = loop {
                let Some(le) = find(&rest[p..], b"\r\n") else {
                    break false;
                };
                let size_str = String::from_utf8_lossy(&rest[p..p + le]).into_owned();
                let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                    .unwrap_or(0);
                p += le + 2;
                if size == 0 {
                    if rest.len() < p + 2 {
                        break false;
                    }
                    p += 2;
                    break true;
                }
                if rest.len() < p + size + 2 {
                    break false;
                }
                body.extend_from_slice(&rest[p..p + size]);
                p += size + 2;
            };
            if !complete {
                break;
            }
            (body, p)
        } else if closed {
            (rest[body_start..].to_vec(), rest.len())
        } else {
            break;
        };
        out.push(Resp {
            status,
            headers,
            body,
        });
        pos += used;
    }
    (out, pos)
}

/// Sends `pieces` (pausing `gap` between them), then reads until the server closes or no
/// byte arrives for `quiet`.
pub fn exchange(
    addr: SocketAddr,
    pieces: &[&[u8]],
    gap: Duration,
    quiet: Duration,
    half_close: bool,
) -> Exchange {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            std::thread::sleep(gap);
        }
        if s.write_all(p).is_err() {
            break;
        }
    }
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    read_all(&mut s, quiet, &[])
}

/// Reads until end-of-stream, reset, or `quiet` without data.
pub fn read_all(s: &mut TcpStream, quiet: Duration, heads: &[bool]) -> Exchange {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    let mut reset = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    s.set_read_timeout(Some(quiet)).unwrap();
    loop {
        assert!(Instant::now() < deadline, "read_all ran over 30 s");
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                closed = true;
                reset = true;
                break;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    let (responses, used) = parse_responses(&buf, closed, heads);
    Exchange {
        responses,
        closed,
        reset,
        garbage: buf[used..].to_vec(),
    }
}

/// A keep-alive client for simple request/response tests.
pub struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.s.write_all(raw).unwrap();
    }

    /// Reads exactly `n` responses (`heads[i]`: the i-th answers HEAD).
    pub fn read(&mut self, n: usize, heads: &[bool]) -> Vec<Resp> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let (rs, used) = parse_some(&self.buf, false, heads, n);
            if rs.len() == n {
                self.buf.drain(..used);
                return rs;
            }
            let k = self.s.read(&mut chunk).expect("response");
            assert!(k > 0, "server closed before {n} responses");
            self.buf.extend_from_slice(&chunk[..k]);
        }
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read(1, &[false]).remove(0)
    }
}
