//! Helpers shared by the integration tests: servers on 127.0.0.1 port 0, recording handlers,
//! and bounded blocking clients.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_core::{CloseReason, Config, ConnId, Handler, Server, ServerHandle};

/// What a recording handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Open(ConnId),
    Close(ConnId, CloseReason),
    Timer(ConnId, u64),
    Drain(ConnId),
    Resume(ConnId, usize),
}

/// A channel of [`Event`]s shared by a handler and the test.
#[derive(Clone)]
pub struct Recorder {
    tx: Arc<Mutex<Sender<Event>>>,
}

pub struct Events {
    rx: Receiver<Event>,
}

pub fn recorder() -> (Recorder, Events) {
    let (tx, rx) = channel();
    (
        Recorder {
            tx: Arc::new(Mutex::new(tx)),
        },
        Events { rx },
    )
}

impl Recorder {
    pub fn send(&self, e: Event) {
        let _ = self.tx.lock().unwrap().send(e);
    }
}

impl Events {
    /// The next event, failing the test after `timeout`.
    pub fn next(&self, timeout: Duration) -> Event {
        match self.rx.recv_timeout(timeout) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => panic!("no event within {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("handler dropped"),
        }
    }

    /// Waits for the next event matching `f`, skipping others.
    pub fn wait<T>(&self, timeout: Duration, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => {
                    if let Some(v) = f(&e) {
                        return v;
                    }
                }
                Err(_) => panic!("expected event did not arrive within {timeout:?}"),
            }
        }
    }

    pub fn open(&self) -> ConnId {
        self.wait(Duration::from_secs(5), |e| match e {
            Event::Open(id) => Some(*id),
            _ => None,
        })
    }

    pub fn close_of(&self, id: ConnId, timeout: Duration) -> CloseReason {
        self.wait(timeout, |e| match e {
            Event::Close(i, r) if *i == id => Some(*r),
            _ => None,
        })
    }

    pub fn any_close(&self, timeout: Duration) -> (ConnId, CloseReason) {
        self.wait(timeout, |e| match e {
            Event::Close(i, r) => Some((*i, *r)),
            _ => None,
        })
    }

    /// Everything received so far, without waiting.
    pub fn drain(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }
}

/// Echoes and records; `boom` in the input panics, `flood N` queues N bytes.
pub struct Probe {
    pub rec: Recorder,
}

impl Handler for Probe {
    type State = ();

    fn on_open(&self, conn: &mut shoal_core::Conn<'_>, _: &mut ()) {
        self.rec.send(Event::Open(conn.id()));
    }

    fn on_data(&self, conn: &mut shoal_core::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if data.windows(4).any(|w| w == b"boom") {
            panic!("boom requested by the test");
        }
        if data == b"arm" {
            conn.set_timer(Duration::from_millis(150), 9);
            conn.set_timer(Duration::from_millis(300), 9);
            conn.set_timer(Duration::from_millis(100), 8);
            return data.len();
        }
        if data.starts_with(b"hold") {
            // Echo this, then take no more input until resumed from outside.
            let _ = conn.write(b"held\n");
            conn.pause_input();
            return 4;
        }
        if data.starts_with(b"bye") {
            // Answer, then close lingering: the peer reads the answer even if it keeps
            // sending.
            let _ = conn.write(b"goodbye\n");
            conn.shutdown();
            return data.len();
        }
        if data == b"nap" {
            // Blocks the reactor so that commands pile up in its inbox.
            std::thread::sleep(Duration::from_millis(300));
            return data.len();
        }
        if data == b"race" {
            // Two timers due in the same tick; whichever fires first cancels the other.
            conn.set_timer(Duration::from_millis(50), 20);
            conn.set_timer(Duration::from_millis(50), 21);
            return data.len();
        }
        if data == b"disarm" {
            let n = conn.cancel_timer(9);
            let _ = conn.write(format!("cancelled {n}\n").as_bytes());
            return data.len();
        }
        if let Some(rest) = data.strip_prefix(b"flood ") {
            let n: usize = std::str::from_utf8(rest).unwrap().trim().parse().unwrap();
            let chunk = vec![b'f'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                if conn.write(&chunk[..k]).is_err() {
                    break;
                }
                left -= k;
            }
            return data.len();
        }
        let _ = conn.write(data);
        data.len()
    }

    fn on_resume(&self, conn: &mut shoal_core::Conn<'_>, s: &mut (), data: &[u8]) -> usize {
        self.rec.send(Event::Resume(conn.id(), data.len()));
        if data.is_empty() {
            0
        } else {
            self.on_data(conn, s, data)
        }
    }

    fn on_drain(&self, conn: &mut shoal_core::Conn<'_>, _: &mut ()) {
        self.rec.send(Event::Drain(conn.id()));
    }

    fn on_timer(&self, conn: &mut shoal_core::Conn<'_>, _: &mut (), tag: u64) {
        self.rec.send(Event::Timer(conn.id(), tag));
        if tag == 20 || tag == 21 {
            conn.cancel_timer(41 - tag);
        }
        let _ = conn.write(format!("timer {tag}\n").as_bytes());
    }

    fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
        self.rec.send(Event::Close(id, reason));
    }
}

/// A config for tests: loopback, port 0, small thread count.
pub fn config(threads: usize, reuse_port: bool) -> Config {
    Config::new("127.0.0.1:0".parse().unwrap())
        .threads(threads)
        .reuse_port(reuse_port)
        .shutdown_grace(Duration::from_secs(5))
}

/// A started server that is stopped and joined when dropped.
pub struct Running<H: Handler> {
    pub server: Server<H>,
    pub handle: ServerHandle,
    pub addr: SocketAddr,
}

impl<H: Handler> Running<H> {
    pub fn start(config: Config, handler: H) -> Self {
        let mut server = Server::bind(config, handler).expect("bind");
        server.start().expect("start");
        let handle = server.handle();
        let addr = server.local_addr();
        Running {
            server,
            handle,
            addr,
        }
    }

    /// Stops and waits at most `limit` for the reactors to finish.
    pub fn stop_within(mut self, limit: Duration) {
        let started = Instant::now();
        self.handle.stop();
        self.server.wait().expect("reactors exit cleanly");
        assert!(
            started.elapsed() < limit,
            "stop took {:?}",
            started.elapsed()
        );
    }
}

pub fn probe(config: Config) -> (Running<Probe>, Events) {
    let (rec, events) = recorder();
    (Running::start(config, Probe { rec }), events)
}

/// A blocking client with a 5 s read timeout.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Writes `msg` and reads exactly as many bytes back.
pub fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("echo");
    got
}

/// How a read attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    Eof,
    Reset,
    TimedOut,
}

/// Reads until end of stream, reset or `timeout`; returns the bytes and how it ended.
pub fn read_to_end(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, ReadEnd) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, ReadEnd::TimedOut);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, ReadEnd::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, ReadEnd::Reset),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, ReadEnd::TimedOut);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether any byte arrives within `timeout` (the connection stays silent otherwise).
pub fn silent_for(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    matches!(r, Err(ref e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// Deterministic pseudo-random numbers (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Drives `conns` concurrent echo connections with mio, each sending `per_conn` messages of
/// pseudo-random content and log-uniform size up to `max_size` (the first few exactly
/// `max_size`), verifying every echoed byte. Returns the bytes echoed.
pub fn echo_many(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    max_size: usize,
    seed: u64,
    timeout: Duration,
) -> u64 {
    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};

    let mut rng = Rng(seed | 1);
    let pattern = Arc::new(rng.bytes(2 * max_size.max(1024)));
    struct C {
        s: MioStream,
        msgs: Vec<(usize, usize)>,
        idx: usize,
        sent: usize,
        recvd: usize,
        done: bool,
    }
    let max_bits = (usize::BITS - max_size.leading_zeros()) as u64;
    let mut poll = Poll::new().unwrap();
    let mut cs = Vec::with_capacity(conns);
    for i in 0..conns {
        let msgs = (0..per_conn)
            .map(|j| {
                let len = if i < 4 && j == 0 {
                    max_size
                } else {
                    let bits = rng.below(max_bits + 1);
                    (1usize << bits).min(max_size).max(1) + rng.below(1 << bits.min(16)) as usize
                }
                .min(max_size);
                let off = rng.below((pattern.len() - len) as u64) as usize;
                (off, len)
            })
            .collect();
        let mut s = MioStream::connect(addr).unwrap();
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        cs.push(C {
            s,
            msgs,
            idx: 0,
            sent: 0,
            recvd: 0,
            done: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut remaining = conns;
    let mut total = 0u64;
    let deadline = Instant::now() + timeout;
    while remaining > 0 {
        assert!(
            Instant::now() < deadline,
            "echo_many: {remaining} of {conns} connections unfinished after {timeout:?}"
        );
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for ev in events.iter() {
            let c = &mut cs[ev.token().0];
            'progress: while !c.done {
                let (off, len) = c.msgs[c.idx];
                while c.sent < len {
                    match c.s.write(&pattern[off + c.sent..off + len]) {
                        Ok(n) => c.sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::NotConnected => break 'progress,
                        Err(e) => panic!("client write: {e}"),
                    }
                }
                loop {
                    match c.s.read(&mut buf) {
                        Ok(0) => panic!("server closed a connection mid-echo"),
                        Ok(n) => {
                            assert!(c.recvd + n <= len, "more bytes echoed than sent");
                            assert!(
                                buf[..n] == pattern[off + c.recvd..off + c.recvd + n],
                                "echoed bytes differ"
                            );
                            c.recvd += n;
                            total += n as u64;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::NotConnected => break 'progress,
                        Err(e) => panic!("client read: {e}"),
                    }
                }
                if c.recvd < len {
                    break;
                }
                c.idx += 1;
                c.sent = 0;
                c.recvd = 0;
                if c.idx == c.msgs.len() {
                    c.done = true;
                    remaining -= 1;
                }
            }
        }
    }
    total
}
