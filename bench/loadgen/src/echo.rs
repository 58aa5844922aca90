//! `loadgen echo`: closed-loop ping-pong over N connections.
//!
//! Every connection writes `size` bytes, waits until all of them came back
//! (checking the content), and repeats at once. Each thread runs one mio event
//! loop over its share of the connections. The main thread only keeps time:
//! it flips a shared phase (warm-up → measure → done) and prints the
//! `measure start` / `measure end` lines the harness samples CPU time on.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Opts;
use crate::hist::Histogram;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

/// Upper bound on a `--count` run that has no `--duration`.
const DEFAULT_COUNT_DEADLINE: Duration = Duration::from_secs(120);
/// How often a worker looks at the shared phase when no event arrives.
const POLL_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
struct Config {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    warmup: Duration,
    duration: Option<Duration>,
    count: Option<u64>,
    threads: usize,
}

#[derive(Debug)]
struct Shared {
    phase: AtomicU8,
    /// Round trips handed out so far in `--count` mode.
    tickets: AtomicU64,
    finished_threads: AtomicUsize,
}

#[derive(Debug)]
struct ThreadResult {
    hist: Histogram,
    round_trips: u64,
    errors: u64,
    finished_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Running,
    /// No ticket left (`--count` reached): the connection just stays open.
    Idle,
    Dead,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    state: State,
    id: u64,
    seq: u64,
    tx: Vec<u8>,
    sent: usize,
    rcvd: usize,
    started: Instant,
    /// This round was started in the measured window of a `--count` run.
    ticketed: bool,
}

/// Per-thread counters and settings the connection handlers need.
struct Ctx<'a> {
    shared: &'a Shared,
    count: Option<u64>,
    measuring: bool,
    scratch: Vec<u8>,
    hist: Histogram,
    round_trips: u64,
    errors: u64,
    ticketed_inflight: u64,
    alive: usize,
}

fn parse(args: &[String]) -> Result<Config, String> {
    let o = Opts::parse(
        "echo",
        args,
        &[
            "host", "port", "conns", "size", "duration", "warmup", "count", "threads",
        ],
    )?;
    let host: String = o.get_or("host", "127.0.0.1".to_string())?;
    let port: u16 = o.get("port")?;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("echo: bad --host {host:?} (need an IP address)"))?;
    let conns: usize = o.get("conns")?;
    let size: usize = o.get("size")?;
    let threads: usize = o.get_or("threads", 1)?;
    let warmup: f64 = o.get_or("warmup", 0.0)?;
    let duration: Option<f64> = if o.has("duration") {
        Some(o.get("duration")?)
    } else {
        None
    };
    let count: Option<u64> = if o.has("count") {
        Some(o.get("count")?)
    } else {
        None
    };
    if conns == 0 || size == 0 || threads == 0 {
        return Err("echo: --conns, --size and --threads must be at least 1".into());
    }
    if duration.is_none() && count.is_none() {
        return Err("echo: give --duration SECS or --count K".into());
    }
    if count == Some(0) {
        return Err("echo: --count must be at least 1".into());
    }
    let secs = |v: f64, name: &str| {
        if v.is_finite() && v >= 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(format!("echo: bad --{name} {v}"))
        }
    };
    Ok(Config {
        addr,
        conns,
        size,
        warmup: secs(warmup, "warmup")?,
        duration: duration.map(|d| secs(d, "duration")).transpose()?,
        count,
        threads: threads.min(conns),
    })
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `loadgen echo`; returns the process exit code.
pub fn run(args: &[String]) -> Result<i32, String> {
    let cfg = parse(args)?;
    if let Err(e) = crate::sys::raise_nofile_limit() {
        eprintln!("loadgen: could not raise RLIMIT_NOFILE: {e}");
    }
    let shared = Shared {
        phase: AtomicU8::new(WARMUP),
        tickets: AtomicU64::new(0),
        finished_threads: AtomicUsize::new(0),
    };
    let t0 = Instant::now();
    let mut measure_start = None;
    if cfg.warmup.is_zero() {
        shared.phase.store(MEASURE, Ordering::Release);
        measure_start = Some(Instant::now());
        say("measure start");
    }

    let (results, measure_start, measure_end, timed_out) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (cfg, shared) = (&cfg, &shared);
                s.spawn(move || worker(cfg, shared, t))
            })
            .collect();

        let mut timed_out = false;
        loop {
            let now = Instant::now();
            let all_finished = shared.finished_threads.load(Ordering::Acquire) == cfg.threads;
            match measure_start {
                None => {
                    if all_finished {
                        break;
                    }
                    let at = t0 + cfg.warmup;
                    if now >= at {
                        shared.phase.store(MEASURE, Ordering::Release);
                        measure_start = Some(now);
                        say("measure start");
                        continue;
                    }
                    std::thread::sleep((at - now).min(Duration::from_millis(10)));
                }
                Some(ms) => {
                    if all_finished {
                        break;
                    }
                    let limit = match (cfg.duration, cfg.count) {
                        (Some(d), _) => d,
                        (None, _) => DEFAULT_COUNT_DEADLINE,
                    };
                    let at = ms + limit;
                    if now >= at {
                        timed_out = cfg.count.is_some();
                        break;
                    }
                    let tick = if cfg.count.is_some() {
                        Duration::from_millis(1)
                    } else {
                        Duration::from_millis(10)
                    };
                    std::thread::sleep((at - now).min(tick));
                }
            }
        }
        shared.phase.store(DONE, Ordering::Release);
        let mut measure_end = Instant::now();
        let ms = *measure_start.get_or_insert_with(|| {
            say("measure start");
            measure_end
        });
        let results: Vec<ThreadResult> = handles
            .into_iter()
            .map(|h| h.join().expect("loadgen worker panicked"))
            .collect();
        if cfg.count.is_some() && !timed_out {
            // The window ended when the last ticketed round trip came back.
            measure_end = results
                .iter()
                .map(|r| r.finished_at)
                .max()
                .unwrap_or(measure_end)
                .max(ms);
        }
        say("measure end");
        (results, ms, measure_end, timed_out)
    });

    let mut hist = Histogram::new();
    let (mut round_trips, mut errors) = (0u64, 0u64);
    for r in &results {
        hist.merge(&r.hist);
        round_trips += r.round_trips;
        errors += r.errors;
    }
    let seconds = (measure_end - measure_start).as_secs_f64();
    let rps = if seconds > 0.0 {
        round_trips as f64 / seconds
    } else {
        0.0
    };
    let us = |q: f64| hist.quantile(q) as f64 / 1000.0;
    say(&format!(
        "{{\"mode\":\"echo\",\"conns\":{},\"size\":{},\"seconds\":{:.3},\"round_trips\":{},\"rps\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"errors\":{}}}",
        cfg.conns,
        cfg.size,
        seconds,
        round_trips,
        rps,
        us(0.50),
        us(0.90),
        us(0.99),
        errors
    ));
    if timed_out {
        eprintln!(
            "loadgen: --count {} not reached before the deadline; did {round_trips}",
            cfg.count.unwrap_or(0)
        );
    }
    Ok(if round_trips == 0 || timed_out { 1 } else { 0 })
}

fn worker(cfg: &Config, shared: &Shared, thread: usize) -> ThreadResult {
    let mut ctx = Ctx {
        shared,
        count: cfg.count,
        measuring: false,
        scratch: vec![0; cfg.size.min(64 * 1024)],
        hist: Histogram::new(),
        round_trips: 0,
        errors: 0,
        ticketed_inflight: 0,
        alive: 0,
    };
    let conns = run_loop(cfg, &mut ctx, thread);
    let finished_at = Instant::now();
    drop(conns);
    shared.finished_threads.fetch_add(1, Ordering::AcqRel);
    ThreadResult {
        hist: ctx.hist,
        round_trips: ctx.round_trips,
        errors: ctx.errors,
        finished_at,
    }
}

/// The event loop of one worker; returns its connections so they are closed
/// only after the finish time was taken.
fn run_loop(cfg: &Config, ctx: &mut Ctx<'_>, thread: usize) -> Vec<Conn> {
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
    for id in (thread..cfg.conns).step_by(cfg.threads) {
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
            id: id as u64,
            seq: 0,
            tx: vec![0; cfg.size],
            sent: 0,
            rcvd: 0,
            started: Instant::now(),
            ticketed: false,
        });
        ctx.alive += 1;
    }

    loop {
        let phase = ctx.shared.phase.load(Ordering::Acquire);
        if phase == DONE || ctx.alive == 0 {
            break;
        }
        ctx.measuring = phase == MEASURE;
        if let Some(k) = ctx.count
            && ctx.measuring
            && ctx.ticketed_inflight == 0
            && ctx.shared.tickets.load(Ordering::Relaxed) >= k
        {
            break;
        }
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
                    if ev.is_writable() && c.sent < c.tx.len() {
                        r = flush(c);
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
    }
    conns
}

fn note_error(ctx: &mut Ctx<'_>, e: &io::Error) {
    ctx.errors += 1;
    if ctx.errors <= 5 {
        eprintln!("loadgen: connection error: {e}");
    }
}

fn kill(ctx: &mut Ctx<'_>, poll: &Poll, c: &mut Conn) {
    if c.state == State::Running && c.ticketed {
        ctx.ticketed_inflight -= 1;
    }
    if c.state != State::Dead {
        ctx.alive -= 1;
    }
    c.state = State::Dead;
    let _ = poll.registry().deregister(&mut c.stream);
    let _ = c.stream.shutdown(Shutdown::Both);
}

fn on_connect_event(ctx: &mut Ctx<'_>, c: &mut Conn) -> io::Result<()> {
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
    c.state = State::Running;
    start_round(ctx, c)
}

/// Starts the next round trip on `c`, unless `--count` tickets ran out.
fn start_round(ctx: &mut Ctx<'_>, c: &mut Conn) -> io::Result<()> {
    c.ticketed = false;
    if let Some(k) = ctx.count
        && ctx.measuring
    {
        if ctx.shared.tickets.fetch_add(1, Ordering::Relaxed) >= k {
            c.state = State::Idle;
            return Ok(());
        }
        c.ticketed = true;
        ctx.ticketed_inflight += 1;
    }
    c.seq += 1;
    let base =
        c.id.wrapping_mul(7919)
            .wrapping_add(c.seq.wrapping_mul(131));
    for (j, b) in c.tx.iter_mut().enumerate() {
        *b = base.wrapping_add(j as u64) as u8;
    }
    c.sent = 0;
    c.rcvd = 0;
    c.started = Instant::now();
    flush(c)
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while c.sent < c.tx.len() {
        match c.stream.write(&c.tx[c.sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn on_readable(ctx: &mut Ctx<'_>, c: &mut Conn) -> io::Result<()> {
    loop {
        let want = (c.tx.len() - c.rcvd).min(ctx.scratch.len());
        match c.stream.read(&mut ctx.scratch[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            Ok(n) => {
                if ctx.scratch[..n] != c.tx[c.rcvd..c.rcvd + n] {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "echoed bytes differ from the bytes sent",
                    ));
                }
                c.rcvd += n;
                if c.rcvd == c.tx.len() {
                    complete_round(ctx, c);
                    // The next echo cannot be here yet; its arrival raises a
                    // new edge, so no read that would only say EAGAIN.
                    return start_round(ctx, c);
                }
                if n < want {
                    return Ok(()); // short read: the socket is drained
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn complete_round(ctx: &mut Ctx<'_>, c: &Conn) {
    let counted = match ctx.count {
        Some(_) => c.ticketed,
        None => ctx.measuring,
    };
    if c.ticketed {
        ctx.ticketed_inflight -= 1;
    }
    if counted {
        let ns = c.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        ctx.hist.record(ns);
        ctx.round_trips += 1;
    }
}
