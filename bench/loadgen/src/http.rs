//! `loadgen http`: exactly K HTTP/1.1 requests over N keep-alive connections.
//!
//! Each connection writes a batch of `--pipeline D` copies of
//! `GET / HTTP/1.1\r\nHost: x\r\n\r\n` in one write, waits until all D
//! responses came back (framed by their Content-Length), and repeats at once.
//! Requests are handed out as tickets from one pool, so exactly K are sent
//! and the run stops after exactly K responses; a connection that dies gives
//! its unanswered tickets back for the others to send. One mio event loop
//! runs all connections: this mode exists to drive a fixed amount of work
//! through a server under `strace -c` (wrk can only run for a fixed time).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Opts;
use crate::hist::Histogram;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// Default deadline of a run.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the loop looks at the deadline when no event arrives.
const POLL_TICK: Duration = Duration::from_millis(10);
/// A response head longer than this is taken as garbage.
const MAX_HEAD: usize = 64 * 1024;
const READ_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct Config {
    addr: SocketAddr,
    conns: usize,
    requests: u64,
    pipeline: usize,
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    /// Writing a batch or waiting for its responses.
    Running,
    /// No ticket left: the connection just stays open.
    Idle,
    Dead,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    state: State,
    /// Bytes of the current batch (`outstanding` requests) and how many went out.
    tx_len: usize,
    sent: usize,
    /// Requests of the current batch still waiting for their response.
    outstanding: u64,
    rx: Vec<u8>,
    started: Instant,
}

/// Counters and settings the connection handlers share.
#[derive(Debug)]
struct Ctx {
    pipeline: u64,
    /// `pipeline` requests back to back: every batch is a prefix of it.
    batch: Vec<u8>,
    tickets_left: u64,
    scratch: Vec<u8>,
    hist: Histogram,
    responses: u64,
    non2xx: u64,
    errors: u64,
    alive: usize,
}

/// One complete response at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Framed {
    /// Bytes it takes: head, blank line and body.
    len: usize,
    status: u16,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Frames the response at the start of `buf`: `Ok(None)` while it is
/// incomplete. Only Content-Length framing is understood.
fn frame(buf: &[u8]) -> io::Result<Option<Framed>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(invalid("response head too long"));
        }
        return Ok(None);
    };
    let head = &buf[..head_end];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().unwrap_or_default();
    // "HTTP/1.x NNN ..."
    if status_line.len() < 12 || !status_line.starts_with(b"HTTP/1.") || status_line[8] != b' ' {
        return Err(invalid("malformed status line"));
    }
    let status = std::str::from_utf8(&status_line[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("malformed status code"))?;
    let mut body_len = None;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(invalid("malformed header line"));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("malformed Content-Length"))?;
            body_len = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(invalid("Transfer-Encoding is not supported"));
        }
    }
    let body_len = match body_len {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err(invalid("response without Content-Length")),
    };
    let len = head_end + 4 + body_len;
    Ok((buf.len() >= len).then_some(Framed { len, status }))
}

fn parse(args: &[String]) -> Result<Config, String> {
    let o = Opts::parse(
        "http",
        args,
        &["host", "port", "conns", "requests", "pipeline", "timeout"],
    )?;
    let host: String = o.get_or("host", "127.0.0.1".to_string())?;
    let port: u16 = o.get("port")?;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("http: bad --host {host:?} (need an IP address)"))?;
    let conns: usize = o.get("conns")?;
    let requests: u64 = o.get("requests")?;
    let pipeline: usize = o.get_or("pipeline", 1)?;
    let timeout: f64 = o.get_or("timeout", DEFAULT_TIMEOUT.as_secs_f64())?;
    if conns == 0 || requests == 0 || pipeline == 0 {
        return Err("http: --conns, --requests and --pipeline must be at least 1".into());
    }
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(format!("http: bad --timeout {timeout}"));
    }
    Ok(Config {
        addr,
        conns,
        requests,
        pipeline,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// Runs `loadgen http`; returns the process exit code.
pub fn run(args: &[String]) -> Result<i32, String> {
    let cfg = parse(args)?;
    if let Err(e) = crate::sys::raise_nofile_limit() {
        eprintln!("loadgen: could not raise RLIMIT_NOFILE: {e}");
    }
    let mut ctx = Ctx {
        pipeline: cfg.pipeline as u64,
        batch: REQUEST.repeat(cfg.pipeline),
        tickets_left: cfg.requests,
        scratch: vec![0; READ_SIZE],
        hist: Histogram::new(),
        responses: 0,
        non2xx: 0,
        errors: 0,
        alive: 0,
    };
    let start = Instant::now();
    let conns = run_loop(&cfg, &mut ctx, start + cfg.timeout);
    let seconds = start.elapsed().as_secs_f64();
    drop(conns);

    let rps = if seconds > 0.0 {
        ctx.responses as f64 / seconds
    } else {
        0.0
    };
    let us = |q: f64| ctx.hist.quantile(q) as f64 / 1000.0;
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "{{\"mode\":\"http\",\"conns\":{},\"pipeline\":{},\"requests\":{},\"responses\":{},\"seconds\":{:.3},\"rps\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"non2xx\":{},\"errors\":{}}}",
        cfg.conns,
        cfg.pipeline,
        cfg.requests,
        ctx.responses,
        seconds,
        rps,
        us(0.50),
        us(0.90),
        us(0.99),
        ctx.non2xx,
        ctx.errors
    );
    let _ = out.flush();
    if ctx.responses < cfg.requests {
        eprintln!(
            "loadgen: got {} of {} responses before giving up",
            ctx.responses, cfg.requests
        );
        return Ok(1);
    }
    Ok(0)
}

/// The event loop; returns the connections so they are closed only after
/// the finish time was taken.
fn run_loop(cfg: &Config, ctx: &mut Ctx, deadline: Instant) -> Vec<Conn> {
    let mut conns = Vec::new();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadgen: epoll: {e}");
            ctx.errors += 1;
            return conns;
        }
    };
    let mut events = Events::with_capacity(1024);
    for _ in 0..cfg.conns {
        let mut stream = match TcpStream::connect(cfg.addr) {
            Ok(s) => s,
            Err(e) => {
                note_error(ctx, &e);
                continue;
            }
        };
        let token = Token(conns.len());
        if let Err(e) =
            poll.registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            note_error(ctx, &e);
            continue;
        }
        conns.push(Conn {
            stream,
            state: State::Connecting,
            tx_len: 0,
            sent: 0,
            outstanding: 0,
            rx: Vec::with_capacity(4096),
            started: Instant::now(),
        });
        ctx.alive += 1;
    }

    while ctx.responses < cfg.requests && ctx.alive > 0 && Instant::now() < deadline {
        if let Err(e) = poll.poll(&mut events, Some(POLL_TICK)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("loadgen: epoll_wait: {e}");
            ctx.errors += 1;
            break;
        }
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            let res = match c.state {
                State::Dead | State::Idle => Ok(()),
                State::Connecting => on_connect_event(ctx, c),
                State::Running => {
                    let mut r = Ok(());
                    if ev.is_writable() && c.sent < c.tx_len {
                        r = flush(ctx, c);
                    }
                    if r.is_ok() && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                        r = on_readable(ctx, c);
                    }
                    r
                }
            };
            if let Err(e) = res {
                note_error(ctx, &e);
                kill(ctx, &poll, c);
            }
        }
        if ctx.tickets_left > 0 {
            // Tickets a dead connection gave back: idle ones take them up.
            for c in conns.iter_mut().filter(|c| c.state == State::Idle) {
                if let Err(e) = start_batch(ctx, c) {
                    note_error(ctx, &e);
                    kill(ctx, &poll, c);
                }
                if ctx.tickets_left == 0 {
                    break;
                }
            }
        }
    }
    conns
}

fn note_error(ctx: &mut Ctx, e: &io::Error) {
    ctx.errors += 1;
    if ctx.errors <= 5 {
        eprintln!("loadgen: connection error: {e}");
    }
}

fn kill(ctx: &mut Ctx, poll: &Poll, c: &mut Conn) {
    if c.state != State::Dead {
        ctx.alive -= 1;
    }
    // Unanswered requests go back to the pool for the other connections.
    ctx.tickets_left += c.outstanding;
    c.outstanding = 0;
    c.state = State::Dead;
    let _ = poll.registry().deregister(&mut c.stream);
    let _ = c.stream.shutdown(Shutdown::Both);
}

fn on_connect_event(ctx: &mut Ctx, c: &mut Conn) -> io::Result<()> {
    match c.stream.take_error() {
        Ok(Some(e)) | Err(e) => return Err(e),
        Ok(None) => {}
    }
    match c.stream.peer_addr() {
        Ok(_) => {}
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            return Ok(()); // not yet: wait for the next event
        }
        Err(e) => return Err(e),
    }
    c.stream.set_nodelay(true)?;
    start_batch(ctx, c)
}

/// Writes the next batch on `c`, or parks it when the tickets ran out.
fn start_batch(ctx: &mut Ctx, c: &mut Conn) -> io::Result<()> {
    let n = ctx.pipeline.min(ctx.tickets_left);
    if n == 0 {
        c.state = State::Idle;
        return Ok(());
    }
    ctx.tickets_left -= n;
    c.state = State::Running;
    c.outstanding = n;
    c.tx_len = n as usize * REQUEST.len();
    c.sent = 0;
    c.started = Instant::now();
    flush(ctx, c)
}

fn flush(ctx: &Ctx, c: &mut Conn) -> io::Result<()> {
    while c.sent < c.tx_len {
        match c.stream.write(&ctx.batch[c.sent..c.tx_len]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn on_readable(ctx: &mut Ctx, c: &mut Conn) -> io::Result<()> {
    loop {
        match c.stream.read(&mut ctx.scratch) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            Ok(n) => {
                c.rx.extend_from_slice(&ctx.scratch[..n]);
                let batch_done = take_responses(ctx, c)?;
                if batch_done {
                    if !c.rx.is_empty() {
                        return Err(invalid("more responses than requests"));
                    }
                    // The next responses cannot be here yet; their arrival
                    // raises a new edge, so no read that would only say EAGAIN.
                    return start_batch(ctx, c);
                }
                if n < ctx.scratch.len() {
                    return Ok(()); // short read: the socket is drained
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Counts the complete responses in `c.rx`; true once the batch is answered.
fn take_responses(ctx: &mut Ctx, c: &mut Conn) -> io::Result<bool> {
    let mut pos = 0;
    while c.outstanding > 0 {
        let Some(f) = frame(&c.rx[pos..])? else {
            break;
        };
        pos += f.len;
        c.outstanding -= 1;
        ctx.responses += 1;
        if !(200..300).contains(&f.status) {
            ctx.non2xx += 1;
        }
        let ns = c.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        ctx.hist.record(ns);
    }
    c.rx.drain(..pos);
    Ok(c.outstanding == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 13\r\n\r\nHello, World!";

    #[test]
    fn frames_a_complete_response() {
        let f = frame(OK).unwrap().unwrap();
        assert_eq!(
            f,
            Framed {
                len: OK.len(),
                status: 200
            }
        );
    }

    #[test]
    fn waits_for_the_rest() {
        for cut in 0..OK.len() {
            assert_eq!(frame(&OK[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn frames_pipelined_responses_one_at_a_time() {
        let two = [OK, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"].concat();
        let first = frame(&two).unwrap().unwrap();
        assert_eq!(first.len, OK.len());
        let second = frame(&two[first.len..]).unwrap().unwrap();
        assert_eq!(
            second,
            Framed {
                len: two.len() - OK.len(),
                status: 404
            }
        );
    }

    #[test]
    fn rejects_what_it_cannot_frame() {
        assert!(frame(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(frame(b"garbage\r\n\r\n").is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert_eq!(
            frame(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            Some(Framed {
                len: 27,
                status: 204
            })
        );
    }
}
