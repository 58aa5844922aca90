//! Pool dispatch through real sockets: callbacks on workers, per-connection order, blocking
//! handlers bounded by the pool, backpressure that keeps memory flat, handler deadlines and
//! shutdown with jobs in flight.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use shoal_core::{CloseReason, Config, Conn, ConnId, Handler};
use util::*;

const SEC: Duration = Duration::from_secs(1);

fn pool_config(threads: usize, workers: usize, queue: usize) -> Config {
    config(threads, true).workers(workers, queue)
}

/// Echo on workers, optionally sleeping first; records which threads ran callbacks.
struct SlowEcho {
    delay: Duration,
    rec: Recorder,
    threads: Arc<Mutex<HashSet<String>>>,
}

impl SlowEcho {
    fn note_thread(&self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.threads.lock().unwrap().insert(name);
    }
}

impl Handler for SlowEcho {
    type State = ();

    fn on_open(&self, conn: &mut Conn<'_>, _: &mut ()) {
        self.note_thread();
        self.rec.send(Event::Open(conn.id()));
    }

    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        self.note_thread();
        if data == b"boom" {
            panic!("boom on a worker");
        }
        if data == b"order" {
            // Written from the callback's own thread while it runs: must follow the
            // callback's output, not overtake it.
            let _ = conn.write(b"A");
            conn.handle().write(conn.id(), b"B").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let _ = conn.write(b"C");
            return data.len();
        }
        if data == b"timer" {
            conn.set_timer(Duration::from_millis(20), 5);
            return data.len();
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let _ = conn.write(data);
        data.len()
    }

    fn on_timer(&self, conn: &mut Conn<'_>, _: &mut (), tag: u64) {
        self.note_thread();
        self.rec.send(Event::Timer(conn.id(), tag));
        let _ = conn.write(b"tick");
    }

    fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
        self.note_thread();
        self.rec.send(Event::Close(id, reason));
    }
}

fn slow_echo(
    cfg: Config,
    delay: Duration,
) -> (Running<SlowEcho>, Events, Arc<Mutex<HashSet<String>>>) {
    let (rec, events) = recorder();
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let h = SlowEcho {
        delay,
        rec,
        threads: threads.clone(),
    };
    (Running::start(cfg, h), events, threads)
}

#[test]
fn every_callback_runs_on_a_worker() {
    let (srv, events, threads) = slow_echo(pool_config(1, 2, 16), Duration::ZERO);
    let mut c = client(srv.addr);
    let id = events.open();
    assert_eq!(roundtrip(&mut c, b"hello"), b"hello");
    c.write_all(b"timer").unwrap();
    let mut t = [0u8; 4];
    c.read_exact(&mut t).unwrap();
    assert_eq!(&t, b"tick");
    drop(c);
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::PeerClosed);
    let names = threads.lock().unwrap().clone();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.starts_with("shoal-worker-")),
        "{names:?}"
    );
    // The worker counts a job as completed just after its last callback returns.
    assert!(
        eventually(SEC, || srv.handle.stats().jobs_completed >= 4),
        "{:?}",
        srv.handle.stats()
    );
    srv.stop_within(5 * SEC);
}

#[test]
fn per_connection_order_with_200_connections_and_4_workers() {
    let (srv, _events, _) = slow_echo(pool_config(2, 4, 256), Duration::ZERO);
    let addr = srv.addr;
    let clients: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conns: Vec<_> = (0..25).map(|_| client(addr)).collect();
                // 1,000 numbered messages per connection, ten in flight at a time.
                for window in 0..100u64 {
                    for (ci, c) in conns.iter_mut().enumerate() {
                        let mut batch = Vec::with_capacity(160);
                        for k in 0..10u64 {
                            let n = window * 10 + k;
                            batch.extend_from_slice(&(t as u64).to_le_bytes());
                            batch.extend_from_slice(&((ci as u64) << 32 | n).to_le_bytes());
                        }
                        c.write_all(&batch).unwrap();
                    }
                    for (ci, c) in conns.iter_mut().enumerate() {
                        let mut got = [0u8; 160];
                        c.read_exact(&mut got).unwrap();
                        for k in 0..10u64 {
                            let off = k as usize * 16;
                            let n = u64::from_le_bytes(got[off + 8..off + 16].try_into().unwrap());
                            assert_eq!(n, (ci as u64) << 32 | (window * 10 + k), "out of order");
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let counted = eventually(SEC, || {
        let st = srv.handle.stats();
        st.accepted == 200 && st.bytes_out == 200 * 1000 * 16
    });
    assert!(counted, "{:?}", srv.handle.stats());
    srv.stop_within(5 * SEC);
}

#[test]
fn blocking_handlers_are_bounded_by_the_pool_and_reactors_stay_responsive() {
    // 2 workers, 50 ms per message, 100 connections: about 2.5 s of work.
    let (srv, _events, _) = slow_echo(pool_config(1, 2, 1024), Duration::from_millis(50));
    let (inline_srv, _inline_events) = probe(config(1, true));
    let addr = srv.addr;
    let t0 = Instant::now();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = client(addr);
                c.set_read_timeout(Some(20 * SEC)).unwrap();
                let msg = format!("message {i:03}");
                assert_eq!(roundtrip(&mut c, msg.as_bytes()), msg.as_bytes());
            })
        })
        .collect();
    // Meanwhile, a reactor in this process answers at once.
    let mut ping = client(inline_srv.addr);
    let mut worst = Duration::ZERO;
    while t0.elapsed() < 2 * SEC {
        let p0 = Instant::now();
        assert_eq!(roundtrip(&mut ping, b"ping"), b"ping");
        worst = worst.max(p0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new connection to the busy pool server is accepted at once as well.
    let a0 = Instant::now();
    let _late = client(addr);
    assert!(a0.elapsed() < Duration::from_millis(50));
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = t0.elapsed();
    assert!(
        worst < Duration::from_millis(50),
        "inline ping took {worst:?}"
    );
    // Throughput is workers / delay = 40 messages/s: 100 messages take about 2.5 s.
    assert!(
        elapsed >= Duration::from_millis(2400) && elapsed < Duration::from_secs(6),
        "100 messages took {elapsed:?}"
    );
    assert!(srv.handle.stats().queue_high_water >= 10);
    srv.stop_within(5 * SEC);
    inline_srv.stop_within(5 * SEC);
}

/// Blocks every callback until the test opens the gate.
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut g = self.open.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

struct GatedEcho(Arc<Gate>);

impl Handler for GatedEcho {
    type State = ();
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        self.0.wait();
        let _ = conn.write(data);
        data.len()
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn backpressure_keeps_memory_bounded_and_loses_nothing() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 200 << 20;
    let gate = Arc::new(Gate {
        open: Mutex::new(false),
        cv: Condvar::new(),
    });
    let cfg = pool_config(1, 1, 64).max_pending_input(1 << 20);
    let srv = Running::start(cfg, GatedEcho(gate.clone()));
    let mut pattern = Rng(5).bytes(CHUNK);
    let rss0 = rss_bytes();
    let c = client(srv.addr);
    let mut w = c.try_clone().unwrap();
    let mut chunk = pattern.clone();
    let writer = std::thread::spawn(move || {
        let mut sent = 0usize;
        while sent < TOTAL {
            chunk[..8].copy_from_slice(&(sent as u64).to_le_bytes());
            w.write_all(&chunk).unwrap();
            sent += CHUNK;
        }
    });
    // The worker is blocked: the client fills every buffer and stalls; the server holds at
    // most about max_pending_input for the connection.
    std::thread::sleep(Duration::from_millis(1500));
    let peak = rss_bytes().saturating_sub(rss0);
    assert!(
        peak < 64 << 20,
        "RSS grew by {} MiB while blocked",
        peak >> 20
    );
    assert!(srv.handle.stats().backpressure_pauses >= 1);
    assert!(
        !writer.is_finished(),
        "the client should be blocked by flow control"
    );
    gate.release();
    let mut r = c;
    r.set_read_timeout(Some(30 * SEC)).unwrap();
    let mut got = vec![0u8; CHUNK];
    let mut received = 0usize;
    let mut max_growth = peak;
    while received < TOTAL {
        r.read_exact(&mut got).unwrap();
        pattern[..8].copy_from_slice(&(received as u64).to_le_bytes());
        assert!(got == pattern, "echoed chunk at offset {received} differs");
        received += CHUNK;
        if received.is_multiple_of(16 << 20) {
            max_growth = max_growth.max(rss_bytes().saturating_sub(rss0));
        }
    }
    writer.join().unwrap();
    assert!(
        max_growth < 64 << 20,
        "RSS grew by {} MiB",
        max_growth >> 20
    );
    srv.stop_within(5 * SEC);
}

/// Whether the late write failed, and what `remaining` said after it.
type LateWrite = Arc<Mutex<Option<(bool, Option<Duration>)>>>;

/// Sleeps on `slow`, then tries to write and reports whether that failed.
struct Deadline {
    rec: Recorder,
    write_after_timeout: LateWrite,
}

impl Handler for Deadline {
    type State = ();
    fn on_open(&self, conn: &mut Conn<'_>, _: &mut ()) {
        self.rec.send(Event::Open(conn.id()));
    }
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if data == b"slow" {
            let before = conn.remaining();
            assert!(before.is_some_and(|d| d <= Duration::from_millis(150)));
            std::thread::sleep(Duration::from_millis(400));
            let failed = matches!(conn.write(b"late"), Err(shoal_core::Error::Closed));
            *self.write_after_timeout.lock().unwrap() = Some((failed, conn.remaining()));
        } else {
            let _ = conn.write(data);
        }
        data.len()
    }
    fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
        self.rec.send(Event::Close(id, reason));
    }
}

#[test]
fn handler_timeout_closes_the_connection_and_later_writes_fail() {
    let (rec, events) = recorder();
    let flag = Arc::new(Mutex::new(None));
    let cfg = pool_config(1, 2, 16).handler_timeout(Some(Duration::from_millis(150)));
    let srv = Running::start(
        cfg,
        Deadline {
            rec,
            write_after_timeout: flag.clone(),
        },
    );
    let mut slow = client(srv.addr);
    let slow_id = events.open();
    let mut fast = client(srv.addr);
    events.open();
    let t0 = Instant::now();
    slow.write_all(b"slow").unwrap();
    let (got, end) = read_to_end(&mut slow, 5 * SEC);
    let closed_after = t0.elapsed();
    assert!(got.is_empty());
    assert_ne!(end, ReadEnd::TimedOut);
    assert!(
        closed_after >= Duration::from_millis(140) && closed_after < Duration::from_millis(390),
        "closed after {closed_after:?}, before the handler returned"
    );
    // The other worker keeps serving.
    assert_eq!(roundtrip(&mut fast, b"fast"), b"fast");
    assert_eq!(
        events.close_of(slow_id, 5 * SEC),
        CloseReason::HandlerTimeout
    );
    let (failed, remaining) = flag.lock().unwrap().expect("slow handler finished");
    assert!(failed, "a write after the deadline fails with Closed");
    assert_eq!(remaining, Some(Duration::ZERO));
    assert_eq!(srv.handle.stats().closed(CloseReason::HandlerTimeout), 1);
    srv.stop_within(5 * SEC);
}

#[test]
fn stop_waits_for_jobs_in_flight_and_delivers_their_output() {
    let (srv, events, _) = slow_echo(pool_config(1, 2, 16), Duration::from_millis(300));
    let mut c = client(srv.addr);
    let id = events.open();
    c.write_all(b"in flight").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    srv.handle.stop();
    let (got, end) = read_to_end(&mut c, 5 * SEC);
    assert_eq!(got, b"in flight");
    assert_eq!(end, ReadEnd::Eof);
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::Shutdown);
    srv.stop_within(5 * SEC);
    assert!(t0.elapsed() < 2 * SEC);
}

#[test]
fn a_full_queue_holds_jobs_back_without_losing_any() {
    let (srv, _events, _) = slow_echo(pool_config(1, 1, 1), Duration::from_millis(10));
    let addr = srv.addr;
    let clients: Vec<_> = (0..30)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = client(addr);
                let msg = format!("held {i}");
                assert_eq!(roundtrip(&mut c, msg.as_bytes()), msg.as_bytes());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let st = srv.handle.stats();
    assert!(st.backpressure_pauses >= 1, "{st:?}");
    assert!(st.queue_high_water <= 1);
    srv.stop_within(5 * SEC);
}

#[test]
fn a_panic_on_a_worker_closes_only_its_connection() {
    let (srv, events, _) = slow_echo(pool_config(2, 2, 16), Duration::ZERO);
    let mut good = client(srv.addr);
    events.open();
    let mut bad = client(srv.addr);
    let bad_id = events.open();
    bad.write_all(b"boom").unwrap();
    let (_, end) = read_to_end(&mut bad, 5 * SEC);
    assert_ne!(end, ReadEnd::TimedOut);
    assert_eq!(events.close_of(bad_id, 5 * SEC), CloseReason::HandlerFailed);
    assert_eq!(roundtrip(&mut good, b"fine"), b"fine");
    assert_eq!(srv.handle.stats().handler_failures, 1);
    srv.stop_within(5 * SEC);
}

#[test]
fn pool_mode_echo_integrity_under_load() {
    let (srv, _events, _) = slow_echo(pool_config(2, 4, 64), Duration::ZERO);
    let bytes = echo_many(srv.addr, 300, 2, 256 << 10, 11, Duration::from_secs(120));
    assert!(eventually(SEC, || srv.handle.stats().bytes_out == bytes));
    srv.stop_within(10 * SEC);
}

#[test]
fn cross_thread_writes_during_a_job_follow_its_output() {
    let (srv, _events, _) = slow_echo(pool_config(1, 2, 16), Duration::ZERO);
    let mut c = client(srv.addr);
    c.write_all(b"order").unwrap();
    let mut got = [0u8; 3];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ACB");
    srv.stop_within(5 * SEC);
}

#[test]
fn end_of_stream_during_backpressure_is_not_lost() {
    // A slow worker and a small max_pending_input: reading pauses while the peer's data and
    // FIN arrive; both must be seen when reading resumes.
    let cfg = pool_config(1, 1, 16).max_pending_input(1024);
    let (srv, events, _) = slow_echo(cfg, Duration::from_millis(30));
    let mut c = client(srv.addr);
    let id = events.open();
    let msg = Rng(3).bytes(200_000);
    let mut w = c.try_clone().unwrap();
    let m = msg.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&m).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (got, end) = read_to_end(&mut c, 20 * SEC);
    writer.join().unwrap();
    assert_eq!(end, ReadEnd::Eof);
    assert!(
        got == msg,
        "echo differs ({} of {} bytes)",
        got.len(),
        msg.len()
    );
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::PeerClosed);
    srv.stop_within(5 * SEC);
}

/// Consumes only whole messages framed by a 4-byte big-endian length, echoing each.
struct Framed;

impl Handler for Framed {
    type State = ();
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let mut at = 0;
        while data.len() - at >= 4 {
            let n = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            if data.len() - at - 4 < n {
                break;
            }
            let _ = conn.write(&data[at..at + 4 + n]);
            at += 4 + n;
        }
        at
    }
}

#[test]
fn a_partial_message_larger_than_max_pending_input_completes() {
    let cfg = pool_config(1, 1, 16).max_pending_input(64 << 10);
    let srv = Running::start(cfg, Framed);
    let mut c = client(srv.addr);
    let body = Rng(8).bytes(150_000);
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    c.write_all(&msg[..100_000]).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    c.write_all(&msg[100_000..]).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert!(got == msg);
    srv.stop_within(5 * SEC);
}

#[test]
fn huge_durations_do_not_overflow() {
    let cfg = pool_config(1, 1, 16)
        .handler_timeout(Some(Duration::MAX))
        .shutdown_grace(Duration::MAX)
        .accept_backoff(Duration::MAX)
        .idle_timeout(Some(Duration::MAX));
    let (srv, _events, _) = slow_echo(cfg, Duration::ZERO);
    let mut c = client(srv.addr);
    assert_eq!(roundtrip(&mut c, b"fine"), b"fine");
    drop(c);
    srv.stop_within(5 * SEC);
}

/// Pauses on `hold`, echoes otherwise; reports resumes.
struct Holder(Recorder);

impl Handler for Holder {
    type State = ();
    fn on_open(&self, conn: &mut Conn<'_>, _: &mut ()) {
        self.0.send(Event::Open(conn.id()));
    }
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if data.starts_with(b"hold") {
            let _ = conn.write(b"held\n");
            conn.pause_input();
            return 4;
        }
        let _ = conn.write(data);
        data.len()
    }
    fn on_resume(&self, conn: &mut Conn<'_>, s: &mut (), data: &[u8]) -> usize {
        self.0.send(Event::Resume(conn.id(), data.len()));
        self.on_data(conn, s, data)
    }
}

#[test]
fn pause_and_resume_input_on_workers() {
    let (rec, events) = recorder();
    let srv = Running::start(pool_config(1, 2, 16), Holder(rec));
    let mut c = client(srv.addr);
    let id = events.open();
    // "hold" and what follows arrive together: the tail waits for the resume.
    c.write_all(b"holdpending").unwrap();
    let mut l = [0u8; 5];
    c.read_exact(&mut l).unwrap();
    assert_eq!(&l, b"held\n");
    assert!(silent_for(&mut c, Duration::from_millis(200)));
    srv.handle.resume_input(id).unwrap();
    let mut got = [0u8; 7];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pending");
    assert_eq!(
        events.wait(5 * SEC, |e| match e {
            Event::Resume(i, n) if *i == id => Some(*n),
            _ => None,
        }),
        7
    );
    assert_eq!(roundtrip(&mut c, b"after"), b"after");
    srv.stop_within(5 * SEC);
}

/// Echo whose callbacks must run inside `worker_scope`, counting scopes and jobs.
#[derive(Default)]
struct ScopeCounts {
    scopes: std::sync::atomic::AtomicUsize,
    callbacks: std::sync::atomic::AtomicUsize,
    outside: std::sync::atomic::AtomicUsize,
    max_per_scope: std::sync::atomic::AtomicUsize,
}

struct Scoped(Arc<ScopeCounts>);

thread_local! {
    static IN_SCOPE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Scoped {
    fn enter(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.0;
        c.callbacks.fetch_add(1, Relaxed);
        match IN_SCOPE.get() {
            Some(n) => {
                IN_SCOPE.set(Some(n + 1));
                c.max_per_scope.fetch_max(n + 1, Relaxed);
            }
            None => {
                c.outside.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Handler for Scoped {
    type State = ();

    fn on_open(&self, _: &mut Conn<'_>, _: &mut ()) {
        self.enter();
    }

    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        self.enter();
        let _ = conn.write(data);
        data.len()
    }

    fn on_close(&self, _: ConnId, _: (), _: CloseReason) {
        self.enter();
    }

    fn worker_batch(&self) -> usize {
        4
    }

    fn worker_scope(&self, run: &mut dyn FnMut()) {
        assert!(IN_SCOPE.get().is_none(), "scopes must not nest");
        self.0
            .scopes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        IN_SCOPE.set(Some(0));
        run();
        IN_SCOPE.set(None);
    }
}

#[test]
fn worker_scope_wraps_every_callback_and_batches_at_most_worker_batch_jobs() {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = Arc::new(ScopeCounts::default());
    let h = Scoped(counts.clone());
    // One worker and many connections: jobs queue up behind it, so batches form.
    let srv = Running::start(pool_config(1, 1, 1024), h);
    let addr = srv.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conns: Vec<_> = (0..16).map(|_| client(addr)).collect();
                for round in 0..50u8 {
                    for c in conns.iter_mut() {
                        c.write_all(&[round; 8]).unwrap();
                    }
                    for c in conns.iter_mut() {
                        let mut got = [0u8; 8];
                        c.read_exact(&mut got).unwrap();
                        assert_eq!(got, [round; 8]);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    srv.stop_within(5 * SEC);
    let h = &counts;
    assert_eq!(
        h.outside.load(Relaxed),
        0,
        "a callback ran outside worker_scope"
    );
    let (scopes, jobs) = (h.scopes.load(Relaxed), h.callbacks.load(Relaxed));
    assert!(jobs >= 64 * 51, "{jobs} jobs");
    // A job runs at most three callbacks (open, data, close), a scope at most four jobs.
    assert!(
        h.max_per_scope.load(Relaxed) <= 4 * 3,
        "batch bound exceeded"
    );
    assert!(
        scopes < jobs,
        "no batching happened: {scopes} scopes for {jobs} callbacks"
    );
}

/// Echo that naps on `slow`; counts its `on_data` calls and records opens and closes.
struct Straggler {
    rec: Recorder,
    data_calls: Arc<AtomicUsize>,
    nap: Duration,
}

impl Handler for Straggler {
    type State = ();
    fn on_open(&self, conn: &mut Conn<'_>, _: &mut ()) {
        self.rec.send(Event::Open(conn.id()));
    }
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        self.data_calls.fetch_add(1, Ordering::SeqCst);
        if data == b"slow" {
            std::thread::sleep(self.nap);
        }
        let _ = conn.write(data);
        data.len()
    }
    fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
        self.rec.send(Event::Close(id, reason));
    }
}

#[test]
fn jobs_that_outlive_the_shutdown_grace_still_get_on_close_exactly_once() {
    // One worker: `slow` naps far past twice the grace period (and its handler timeout), and
    // the job of `queued` waits in the queue behind it. `wait` must not wait for them, and
    // each connection must still get its `on_close`, once, with the reason it was closed for,
    // after the reactor has gone: the first when its callback returns, the second without its
    // data ever reaching a callback (the connection closed).
    let cfg = pool_config(1, 1, 16)
        .shutdown_grace(Duration::from_millis(20))
        .handler_timeout(Some(Duration::from_millis(30)));
    let (rec, events) = recorder();
    let data_calls = Arc::new(AtomicUsize::new(0));
    let h = Straggler {
        rec,
        data_calls: data_calls.clone(),
        nap: Duration::from_millis(500),
    };
    let mut srv = Running::start(cfg, h);
    let mut slow = client(srv.addr);
    let slow_id = events.open();
    let mut queued = client(srv.addr);
    let queued_id = events.open();
    slow.write_all(b"slow").unwrap();
    assert!(eventually(SEC, || data_calls.load(Ordering::SeqCst) == 1));
    queued.write_all(b"queued").unwrap();
    assert!(eventually(SEC, || srv
        .handle
        .stats()
        .closed(CloseReason::HandlerTimeout)
        == 1));
    let t0 = Instant::now();
    srv.handle.stop();
    srv.server.wait().expect("reactors exit cleanly");
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_millis(400),
        "wait should give up after twice the grace, took {waited:?}"
    );
    for c in [&mut slow, &mut queued] {
        let (_, end) = read_to_end(c, 2 * SEC);
        assert_ne!(end, ReadEnd::TimedOut, "the reactor closed every socket");
    }
    let mut closes = Vec::new();
    while closes.len() < 2 {
        match events.next(2 * SEC) {
            Event::Close(id, reason) => closes.push((id, reason)),
            other => panic!("unexpected {other:?}"),
        }
    }
    closes.sort_by_key(|c| c.0);
    let mut want = vec![
        (slow_id, CloseReason::HandlerTimeout),
        (queued_id, CloseReason::Shutdown),
    ];
    want.sort_by_key(|c| c.0);
    assert_eq!(closes, want);
    // Exactly once: nothing more comes, and the queued job's data reached no callback.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(events.drain(), vec![]);
    assert_eq!(data_calls.load(Ordering::SeqCst), 1);
}

/// Echoes complete lines; naps on `slow`.
struct Lines;

impl Handler for Lines {
    type State = ();
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        if data[..end].ends_with(b"slow") {
            std::thread::sleep(Duration::from_millis(700));
        }
        let _ = conn.write(&data[..=end]);
        end + 1
    }
}

#[test]
fn a_running_job_is_not_cut_by_the_read_or_idle_timeout() {
    // The server, not the client, is what the connection waits for while its job runs: a
    // job longer than `read_timeout` (started by a message that had been arriving in parts)
    // or than `idle_timeout` must be let finish and answer.
    let t = Some(Duration::from_millis(400));
    for (cfg, reason) in [
        (
            pool_config(1, 1, 16).read_timeout(t),
            CloseReason::ReadTimeout,
        ),
        (
            pool_config(1, 1, 16).idle_timeout(t),
            CloseReason::IdleTimeout,
        ),
    ] {
        let srv = Running::start(cfg.clone(), Lines);
        let mut c = client(srv.addr);
        c.write_all(b"sl").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.write_all(b"ow\n").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"slow\n", "{cfg:?}");
        // The timeouts still apply once the job is done (a partial line, then silence).
        c.write_all(b"x").unwrap();
        let (_, end) = read_to_end(&mut c, 5 * SEC);
        assert_ne!(end, ReadEnd::TimedOut, "{cfg:?}");
        assert!(
            eventually(SEC, || srv.handle.stats().closed(reason) == 1),
            "{cfg:?}"
        );
        srv.stop_within(5 * SEC);
    }
}

/// Re-arms a 50 ms timer forever; records opens and closes.
struct Heartbeat(Recorder);

impl Handler for Heartbeat {
    type State = ();
    fn on_open(&self, conn: &mut Conn<'_>, _: &mut ()) {
        self.0.send(Event::Open(conn.id()));
        conn.set_timer(Duration::from_millis(50), 1);
    }
    fn on_data(&self, _: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
    fn on_timer(&self, conn: &mut Conn<'_>, _: &mut (), _: u64) {
        conn.set_timer(Duration::from_millis(50), 1);
    }
    fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
        self.0.send(Event::Close(id, reason));
    }
}

#[test]
fn a_periodic_timer_does_not_keep_a_silent_connection_from_its_idle_timeout() {
    // A timer's job is not traffic: on workers as inline, a connection that only ticks is
    // closed when idle_timeout passes without traffic.
    for workers in [0, 1] {
        let mut cfg = config(1, true).idle_timeout(Some(Duration::from_millis(300)));
        if workers > 0 {
            cfg = cfg.workers(workers, 16);
        }
        let (rec, events) = recorder();
        let srv = Running::start(cfg, Heartbeat(rec));
        let _c = client(srv.addr);
        let id = events.open();
        assert_eq!(
            events.close_of(id, 3 * SEC),
            CloseReason::IdleTimeout,
            "workers {workers}"
        );
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn a_job_queued_for_a_connection_closed_meanwhile_reaches_no_callback_but_on_close() {
    // One worker, busy with `slow`; the data of `queued` waits in the queue behind it, and the
    // application aborts `queued` meanwhile. When the worker gets to that job the connection
    // is gone: its data must reach no callback (a callback would see an open connection that
    // is closed), and `on_close` follows once, with the reason it was closed for.
    let cfg = pool_config(1, 1, 16);
    let (rec, events) = recorder();
    let data_calls = Arc::new(AtomicUsize::new(0));
    let h = Straggler {
        rec,
        data_calls: data_calls.clone(),
        nap: Duration::from_millis(1000),
    };
    let srv = Running::start(cfg, h);
    let mut slow = client(srv.addr);
    let _slow_id = events.open();
    let mut queued = client(srv.addr);
    let queued_id = events.open();
    slow.write_all(b"slow").unwrap();
    assert!(eventually(SEC, || data_calls.load(Ordering::SeqCst) == 1));
    let before = srv.handle.stats().jobs_queued;
    queued.write_all(b"queued").unwrap();
    // The reactor reads it and queues its job (the worker naps on `slow`); then the
    // application aborts the connection.
    assert!(eventually(SEC, || srv.handle.stats().jobs_queued > before));
    srv.handle.abort(queued_id).unwrap();
    let (_, end) = read_to_end(&mut queued, 2 * SEC);
    assert_ne!(end, ReadEnd::TimedOut, "the abort closed the socket");
    assert_eq!(
        events.next(2 * SEC),
        Event::Close(queued_id, CloseReason::Aborted)
    );
    let mut echoed = [0u8; 4];
    slow.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"slow");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(events.drain(), vec![]);
    assert_eq!(
        data_calls.load(Ordering::SeqCst),
        1,
        "the queued data reached on_data after its connection closed"
    );
}
