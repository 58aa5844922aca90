//! The engine through real sockets on 127.0.0.1: echo integrity, partial consumption,
//! timeouts, limits, stale ids, cross-thread calls, outbound connects, shutdown and handler
//! panics. Every scenario runs with `SO_REUSEPORT` listeners and with one shared listener.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::{CloseReason, Config, Conn, ConnId, Error, Handler, Server};
use util::*;

const SEC: Duration = Duration::from_secs(1);

/// Runs a scenario once per listener mode.
macro_rules! both_modes {
    ($($name:ident($threads:expr, $cfg:ident) $body:block)*) => {
        mod reuse_port {
            use super::*;
            $(#[test] fn $name() { let $cfg = config($threads, true); $body })*
        }
        mod shared_listener {
            use super::*;
            $(#[test] fn $name() { let $cfg = config($threads, false); $body })*
        }
    };
}

both_modes! {
    echo_integrity_1000_connections(2, cfg) {
        let (srv, _events) = probe(cfg);
        let bytes = echo_many(srv.addr, 1000, 2, 1 << 20, 7, Duration::from_secs(120));
        assert!(bytes > 4 << 20);
        // Counters are stored by the reactor just after the system call, so the client may
        // see the bytes a moment before the counter moves.
        let counted = eventually(SEC, || {
            let st = srv.handle.stats();
            st.accepted == 1000 && st.bytes_in == bytes && st.bytes_out == bytes
        });
        assert!(counted, "{:?} vs {bytes} bytes", srv.handle.stats());
        srv.stop_within(10 * SEC);
    }

    connections_spread_over_reactors(2, cfg) {
        let (srv, events) = probe(cfg);
        let clients: Vec<_> = (0..16).map(|_| client(srv.addr)).collect();
        let mut per_reactor = [0; 2];
        for _ in 0..clients.len() {
            per_reactor[events.open().reactor()] += 1;
        }
        // Round-robin hand-off gives an even split; SO_REUSEPORT hashes, so allow skew.
        assert!(per_reactor[0] > 0 && per_reactor[1] > 0, "{per_reactor:?}");
        drop(clients);
        srv.stop_within(5 * SEC);
    }

    idle_timeout_closes_silent_connections_only(2, cfg) {
        let (srv, events) = probe(cfg.idle_timeout(Some(Duration::from_millis(300))));
        let mut idle = client(srv.addr);
        let idle_id = events.open();
        let mut busy = client(srv.addr);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(900) {
            assert_eq!(roundtrip(&mut busy, b"ping"), b"ping");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, end) = read_to_end(&mut idle, SEC);
        assert_ne!(end, ReadEnd::TimedOut);
        assert_eq!(events.close_of(idle_id, SEC), CloseReason::IdleTimeout);
        assert_eq!(roundtrip(&mut busy, b"still here"), b"still here");
        assert_eq!(srv.handle.stats().closed(CloseReason::IdleTimeout), 1);
        srv.stop_within(5 * SEC);
    }

    idle_timeout_resets_a_peer_that_left_output_unread_in_the_kernel(1, cfg) {
        // The kernel takes all of shoal's output (a 256 KiB send buffer for 64 KiB), so no
        // write timeout can run; the client never reads. The idle timeout must reset the
        // connection: a plain close would leave the kernel trickling the output for minutes.
        let cfg = cfg
            .idle_timeout(Some(Duration::from_millis(300)))
            .send_buffer_size(Some(256 << 10));
        let (srv, events) = probe(cfg);
        let lazy = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        lazy.set_recv_buffer_size(4096).unwrap();
        lazy.connect(&srv.addr.into()).unwrap();
        let mut lazy: std::net::TcpStream = lazy.into();
        let id = events.open();
        lazy.write_all(b"flood 65536").unwrap();
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::IdleTimeout);
        let (_, end) = read_to_end(&mut lazy, 5 * SEC);
        assert_eq!(end, ReadEnd::Reset);
        // A connection that read everything is closed normally by the same timeout.
        let mut reader = client(srv.addr);
        let id = events.open();
        assert_eq!(roundtrip(&mut reader, b"hello"), b"hello");
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::IdleTimeout);
        let (_, end) = read_to_end(&mut reader, 5 * SEC);
        assert_eq!(end, ReadEnd::Eof);
        srv.stop_within(5 * SEC);
    }

    stale_ids_fail_with_closed(1, cfg) {
        let (srv, events) = probe(cfg);
        let h = srv.handle.clone();
        let a = client(srv.addr);
        let a_id = events.open();
        assert!(h.is_live(a_id));
        drop(a.shutdown(Shutdown::Both));
        assert_eq!(events.close_of(a_id, 5 * SEC), CloseReason::PeerClosed);
        assert!(!h.is_live(a_id));
        assert!(matches!(h.write(a_id, b"x"), Err(Error::Closed)));
        assert!(matches!(h.close(a_id), Err(Error::Closed)));
        assert!(matches!(h.abort(a_id), Err(Error::Closed)));
        assert!(matches!(h.set_timer(a_id, SEC, 1), Err(Error::Closed)));
        // A new connection takes the same slot; the old id must not reach it.
        let mut b = client(srv.addr);
        let b_id = events.open();
        assert_ne!(a_id, b_id);
        assert_eq!(a_id.as_u64() & 0xFF_FFFF, b_id.as_u64() & 0xFF_FFFF, "slot reused");
        assert!(matches!(h.write(a_id, b"not for b"), Err(Error::Closed)));
        assert!(silent_for(&mut b, Duration::from_millis(200)));
        for bogus in [0, u64::MAX, a_id.as_u64() ^ (1 << 24), 0x00ff_ffff] {
            assert!(matches!(h.write(ConnId::from_u64(bogus), b"x"), Err(Error::Closed)));
        }
        assert_eq!(roundtrip(&mut b, b"b ok"), b"b ok");
        srv.stop_within(5 * SEC);
    }

    writes_and_closes_from_another_thread(2, cfg) {
        let (srv, events) = probe(cfg);
        let mut c = client(srv.addr);
        let id = events.open();
        let h = srv.handle.clone();
        std::thread::spawn(move || {
            h.write(id, b"from ").unwrap();
            h.write_vectored(id, &[std::io::IoSlice::new(b"another "), std::io::IoSlice::new(b"thread")]).unwrap();
            h.write_owned(id, b"!".to_vec()).unwrap();
            h.close(id).unwrap();
        })
        .join()
        .unwrap();
        let (got, end) = read_to_end(&mut c, 5 * SEC);
        assert_eq!(got, b"from another thread!");
        assert_eq!(end, ReadEnd::Eof);
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::Closed);
        // write, write_vectored (one command), write_owned, close; plus hand-offs.
        assert!(srv.handle.stats().commands >= 4);
        srv.stop_within(5 * SEC);
    }

    abort_from_another_thread_discards_output(1, cfg) {
        let (srv, events) = probe(cfg);
        let mut c = client(srv.addr);
        let id = events.open();
        srv.handle.abort(id).unwrap();
        let (_, end) = read_to_end(&mut c, 5 * SEC);
        assert_eq!(end, ReadEnd::Reset);
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::Aborted);
        srv.stop_within(5 * SEC);
    }

    user_timers_fire_and_stop_with_the_connection(1, cfg) {
        let (srv, events) = probe(cfg);
        let mut c = client(srv.addr);
        let id = events.open();
        let t0 = Instant::now();
        srv.handle.set_timer(id, Duration::from_millis(100), 42).unwrap();
        let mut line = [0u8; 9];
        c.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"timer 42\n");
        let dt = t0.elapsed();
        assert!(dt >= Duration::from_millis(100) && dt < SEC, "{dt:?}");
        // Cancelled from another thread: never fires.
        srv.handle.set_timer(id, Duration::from_millis(100), 6).unwrap();
        srv.handle.cancel_timer(id, 6).unwrap();
        // Cancelled from a callback: both timers of tag 9 go, tag 8 stays.
        c.write_all(b"arm").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.write_all(b"disarm").unwrap();
        let mut l = [0u8; 12];
        c.read_exact(&mut l).unwrap();
        assert_eq!(&l, b"cancelled 2\n");
        let mut l = [0u8; 8];
        c.read_exact(&mut l).unwrap();
        assert_eq!(&l, b"timer 8\n");
        assert!(silent_for(&mut c, Duration::from_millis(400)), "cancelled timers stay silent");
        srv.handle.set_timer(id, Duration::from_millis(200), 7).unwrap();
        drop(c);
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::PeerClosed);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!events.drain().iter().any(|e| matches!(e, Event::Timer(..))));
        srv.stop_within(5 * SEC);
    }

    max_connections_holds_and_resumes(2, cfg) {
        let (srv, events) = probe(cfg.max_connections(2));
        let mut a = client(srv.addr);
        let a_id = events.open();
        let mut b = client(srv.addr);
        events.open();
        assert_eq!(roundtrip(&mut a, b"a"), b"a");
        assert_eq!(roundtrip(&mut b, b"b"), b"b");
        // The third connection completes its handshake in the backlog but is not served.
        let mut c = client(srv.addr);
        c.write_all(b"c").unwrap();
        assert!(silent_for(&mut c, Duration::from_millis(400)));
        assert_eq!(srv.handle.stats().active, 2);
        assert!(srv.handle.stats().accept_paused_limit >= 1);
        drop(a);
        assert_eq!(events.close_of(a_id, 5 * SEC), CloseReason::PeerClosed);
        let mut got = [0u8; 1];
        c.read_exact(&mut got).expect("waiting connection served after one closed");
        assert_eq!(&got, b"c");
        assert_eq!(roundtrip(&mut b, b"b2"), b"b2");
        srv.stop_within(5 * SEC);
    }

    graceful_stop_flushes_queued_output(2, cfg) {
        let (srv, events) = probe(cfg);
        let mut c = client(srv.addr);
        // Small receive buffer so most of the output must wait in the server's queue.
        c.write_all(b"flood 8388608").unwrap();
        let id = events.open();
        std::thread::sleep(Duration::from_millis(200));
        let mut srv = srv;
        let h = srv.handle.clone();
        let stopper = std::thread::spawn(move || {
            h.stop();
        });
        let (got, end) = read_to_end(&mut c, 10 * SEC);
        stopper.join().unwrap();
        assert_eq!(got.len(), 8 << 20, "every queued byte arrives");
        assert!(got.iter().all(|&b| b == b'f'));
        assert_eq!(end, ReadEnd::Eof);
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::Shutdown);
        srv.server.wait().unwrap();
        assert!(TcpStreamProbe::refused(srv.addr), "listener closed after stop");
    }

    stop_closes_idle_connections_promptly(2, cfg) {
        let (srv, events) = probe(cfg);
        let mut cs: Vec<_> = (0..10).map(|_| client(srv.addr)).collect();
        for _ in 0..10 {
            events.open();
        }
        srv.stop_within(SEC);
        for c in &mut cs {
            let (_, end) = read_to_end(c, SEC);
            assert_ne!(end, ReadEnd::TimedOut);
        }
        let closes: Vec<_> = events.drain().into_iter().filter(|e| matches!(e, Event::Close(_, CloseReason::Shutdown))).collect();
        assert_eq!(closes.len(), 10);
    }

    handler_panic_closes_only_its_connection(2, cfg) {
        let (srv, events) = probe(cfg);
        let mut good = client(srv.addr);
        let good_id = events.open();
        let mut bad = client(srv.addr);
        let bad_id = events.open();
        assert_eq!(roundtrip(&mut good, b"before"), b"before");
        bad.write_all(b"boom").unwrap();
        let (got, end) = read_to_end(&mut bad, 5 * SEC);
        assert!(got.is_empty());
        assert_ne!(end, ReadEnd::TimedOut);
        assert_eq!(events.close_of(bad_id, 5 * SEC), CloseReason::HandlerFailed);
        assert_eq!(roundtrip(&mut good, b"after"), b"after");
        let st = srv.handle.stats();
        assert_eq!(st.handler_failures, 1);
        assert_eq!(st.closed(CloseReason::HandlerFailed), 1);
        assert!(srv.handle.is_live(good_id));
        srv.stop_within(5 * SEC);
    }

    paused_input_is_presented_again_on_resume(1, cfg) {
        let (srv, events) = probe(cfg);
        let mut c = client(srv.addr);
        let id = events.open();
        c.write_all(b"hold").unwrap();
        let mut l = [0u8; 5];
        c.read_exact(&mut l).unwrap();
        assert_eq!(&l, b"held\n");
        // Sent while input is held: neither read nor delivered.
        c.write_all(b"later").unwrap();
        assert!(silent_for(&mut c, Duration::from_millis(200)));
        srv.handle.resume_input(id).unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"later");
        assert!(events.drain().iter().any(|e| matches!(e, Event::Resume(i, _) if *i == id)));
        assert_eq!(roundtrip(&mut c, b"again"), b"again");
        srv.stop_within(5 * SEC);
    }

    shutdown_lets_the_peer_read_the_answer_while_it_keeps_sending(1, cfg) {
        let (srv, events) = probe(cfg);
        let mut c = client(srv.addr);
        let id = events.open();
        // The request comes with more data behind it, still unread when the server closes:
        // a plain close would make the kernel answer with a reset.
        let mut burst = b"bye".to_vec();
        burst.extend(std::iter::repeat_n(b'j', 512 * 1024));
        let mut w = c.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let _ = w.write_all(&burst);
            for _ in 0..4 {
                if w.write_all(&[b'j'; 64 * 1024]).is_err() {
                    break;
                }
            }
        });
        let (got, end) = read_to_end(&mut c, 5 * SEC);
        assert_eq!(got, b"goodbye\n");
        assert_eq!(end, ReadEnd::Eof, "the answer arrives, then end-of-stream, not a reset");
        sender.join().unwrap();
        drop(c);
        assert_eq!(events.close_of(id, 5 * SEC), CloseReason::Closed);
        srv.stop_within(5 * SEC);
    }

    write_timeout_closes_a_client_that_never_reads(2, cfg) {
        let cfg = cfg
            .write_timeout(Some(Duration::from_millis(300)))
            .send_buffer_size(Some(16 * 1024))
            .max_write_buffer(64 << 20);
        let (srv, events) = probe(cfg);
        let lazy = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        lazy.set_recv_buffer_size(4096).unwrap();
        lazy.connect(&srv.addr.into()).unwrap();
        let mut lazy: std::net::TcpStream = lazy.into();
        let lazy_id = events.open();
        let mut busy = client(srv.addr);
        lazy.write_all(b"flood 33554432").unwrap();
        let t0 = Instant::now();
        // Other clients keep being served while the lazy one stalls.
        while t0.elapsed() < Duration::from_millis(600) {
            assert_eq!(roundtrip(&mut busy, b"ping"), b"ping");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(events.close_of(lazy_id, 5 * SEC), CloseReason::WriteTimeout);
        assert!(t0.elapsed() < 5 * SEC);
        assert_eq!(roundtrip(&mut busy, b"pong"), b"pong");
        // Reset, not closed: the kernel must not go on trickling the abandoned output to a
        // reader that never reads (an orphaned socket would hold it for minutes).
        let (_, end) = read_to_end(&mut lazy, 5 * SEC);
        assert_eq!(end, ReadEnd::Reset);
        drop(lazy);
        srv.stop_within(5 * SEC);
    }

    write_min_rate_closes_a_slow_reader_that_write_timeout_alone_keeps(1, cfg) {
        // A client reading 2 KiB every 50 ms (about 40 KB/s) always makes progress, so
        // write_timeout alone keeps it; a 200 KB/s minimum rate closes it within a second.
        for rate in [None, Some(200_000)] {
            let cfg = cfg
                .clone()
                .write_timeout(Some(Duration::from_millis(500)))
                .write_min_rate(rate)
                .send_buffer_size(Some(16 * 1024))
                .max_write_buffer(64 << 20);
            let (srv, events) = probe(cfg);
            let slow =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            slow.set_recv_buffer_size(4096).unwrap();
            slow.connect(&srv.addr.into()).unwrap();
            let mut slow: std::net::TcpStream = slow.into();
            slow.set_read_timeout(Some(SEC)).unwrap();
            let id = events.open();
            slow.write_all(b"flood 8388608").unwrap();
            let t0 = Instant::now();
            let mut buf = [0u8; 2048];
            let mut ended = None;
            while t0.elapsed() < Duration::from_millis(2000) {
                std::thread::sleep(Duration::from_millis(50));
                match slow.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        ended = Some(t0.elapsed());
                        break;
                    }
                    Ok(_) => {}
                }
            }
            match rate {
                None => {
                    assert_eq!(ended, None, "closed without a minimum rate");
                    assert!(srv.handle.is_live(id));
                }
                Some(_) => {
                    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::WriteTimeout);
                    let at = ended.expect("closed while reading");
                    assert!(at < Duration::from_millis(1500), "closed after {at:?}");
                }
            }
            drop(slow);
            srv.stop_within(5 * SEC);
        }
    }
}

/// Connect attempts that are refused show the listener is gone.
struct TcpStreamProbe;

impl TcpStreamProbe {
    fn refused(addr: std::net::SocketAddr) -> bool {
        matches!(std::net::TcpStream::connect_timeout(&addr, SEC), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Every slice `Lines` was shown, in order.
type Seen = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// Consumes only whole lines, echoing each; records every slice it was shown.
struct Lines {
    seen: Seen,
    rec: Recorder,
}

impl Handler for Lines {
    type State = ();

    fn on_open(&self, conn: &mut Conn<'_>, _: &mut ()) {
        self.rec.send(Event::Open(conn.id()));
    }

    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        self.seen.lock().unwrap().push(data.to_vec());
        let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        conn.write(&data[..end]).unwrap();
        end
    }

    fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
        self.rec.send(Event::Close(id, reason));
    }
}

fn lines(cfg: Config) -> (Running<Lines>, Events, Seen) {
    let (rec, events) = recorder();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = Lines {
        seen: seen.clone(),
        rec,
    };
    (Running::start(cfg, h), events, seen)
}

#[test]
fn unconsumed_input_is_presented_again_with_new_bytes() {
    for reuse in [true, false] {
        let (srv, _events, seen) = lines(config(1, reuse));
        let mut c = client(srv.addr);
        for piece in [&b"hel"[..], b"lo\nwor", b"ld\n"] {
            c.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        let mut got = [0u8; 12];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\nworld\n");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![b"hel".to_vec(), b"hello\nwor".to_vec(), b"world\n".to_vec()]
        );
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn read_timeout_closes_a_partial_message_even_while_bytes_trickle() {
    for reuse in [true, false] {
        let cfg = config(1, reuse).read_timeout(Some(Duration::from_millis(300)));
        let (srv, events, _) = lines(cfg);
        let mut slow = client(srv.addr);
        let slow_id = events.wait(5 * SEC, |e| match e {
            Event::Open(id) => Some(*id),
            _ => None,
        });
        let mut fast = client(srv.addr);
        let t0 = Instant::now();
        slow.write_all(b"GET").unwrap();
        let mut closed_at = None;
        while t0.elapsed() < 3 * SEC {
            // One byte every 50 ms never completes a line: idle never fires, read does.
            if slow.write_all(b"x").is_err() {
                closed_at.get_or_insert(t0.elapsed());
                break;
            }
            fast.write_all(b"line\n").unwrap();
            let mut l = [0u8; 5];
            fast.read_exact(&mut l).unwrap();
            if let Some(Event::Close(id, r)) = events
                .drain()
                .into_iter()
                .find(|e| matches!(e, Event::Close(..)))
            {
                assert_eq!((id, r), (slow_id, CloseReason::ReadTimeout));
                closed_at = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let at = closed_at.expect("slow client closed");
        assert!(
            at >= Duration::from_millis(250) && at < 2 * SEC,
            "closed after {at:?}"
        );
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn read_overflow_closes_when_unconsumed_input_exceeds_the_cap() {
    struct Hoard;
    impl Handler for Hoard {
        type State = ();
        fn on_data(&self, _: &mut Conn<'_>, _: &mut (), _: &[u8]) -> usize {
            0
        }
    }
    let srv = Running::start(config(1, true).max_read_buffer(64 * 1024), Hoard);
    let mut c = client(srv.addr);
    let _ = c.write_all(&vec![1u8; 256 * 1024]);
    let (_, end) = read_to_end(&mut c, 5 * SEC);
    assert_ne!(end, ReadEnd::TimedOut);
    assert!(eventually(5 * SEC, || srv
        .handle
        .stats()
        .closed(CloseReason::ReadOverflow)
        == 1));
    srv.stop_within(5 * SEC);
}

#[test]
fn write_overflow_fails_the_write_and_closes() {
    let (srv, events) = probe(
        config(1, true)
            .max_write_buffer(1 << 20)
            .write_high_watermark(512 << 10)
            .write_low_watermark(128 << 10),
    );
    let lazy = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    lazy.set_recv_buffer_size(4096).unwrap();
    lazy.connect(&srv.addr.into()).unwrap();
    let mut lazy: std::net::TcpStream = lazy.into();
    let id = events.open();
    lazy.write_all(b"flood 16777216").unwrap();
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::WriteOverflow);
    srv.stop_within(5 * SEC);
}

#[test]
fn a_cross_thread_write_larger_than_max_write_buffer_fails_at_once() {
    // It could never be queued: the caller hears WriteOverflow from the call itself (not
    // just a reset later), and the connection closes with that reason.
    let (srv, events) = probe(
        config(1, true)
            .max_write_buffer(64 << 10)
            .write_high_watermark(32 << 10)
            .write_low_watermark(8 << 10),
    );
    let _c = client(srv.addr);
    let id = events.open();
    let r = srv.handle.write(id, &vec![b'x'; 128 << 10]);
    assert!(matches!(r, Err(Error::WriteOverflow)), "{r:?}");
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::WriteOverflow);
    // At the limit it is queued as usual.
    let mut c = client(srv.addr);
    let id = events.open();
    srv.handle.write(id, &vec![b'y'; 64 << 10]).unwrap();
    let mut got = vec![0u8; 64 << 10];
    c.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == b'y'));
    srv.stop_within(5 * SEC);
}

#[test]
fn high_watermark_pauses_reading_and_drain_resumes_it() {
    let cfg = config(1, true)
        .write_high_watermark(256 << 10)
        .write_low_watermark(64 << 10)
        .max_write_buffer(64 << 20)
        // A fixed socket buffer: autotuned loopback buffers can absorb megabytes, so the
        // queue would never pass the high watermark on some kernels.
        .send_buffer_size(Some(64 << 10));
    let (srv, events) = probe(cfg);
    let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    c.set_recv_buffer_size(64 << 10).unwrap();
    c.connect(&srv.addr.into()).unwrap();
    let mut c: std::net::TcpStream = c.into();
    c.set_read_timeout(Some(5 * SEC)).unwrap();
    let id = events.open();
    c.write_all(b"flood 4194304").unwrap();
    assert!(eventually(5 * SEC, || srv.handle.stats().read_pauses >= 1));
    let mut got = vec![0u8; 4 << 20];
    c.read_exact(&mut got).unwrap();
    assert_eq!(
        events.wait(5 * SEC, |e| match e {
            Event::Drain(i) => Some(*i),
            _ => None,
        }),
        id
    );
    assert_eq!(roundtrip(&mut c, b"resumed"), b"resumed");
    srv.stop_within(5 * SEC);
}

#[test]
fn outbound_connect_to_a_listener_and_to_a_closed_port() {
    let (srv, events) = probe(config(2, true));
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = srv.handle.connect(upstream.local_addr().unwrap()).unwrap();
    let (mut peer, _) = upstream.accept().unwrap();
    peer.set_read_timeout(Some(5 * SEC)).unwrap();
    assert_eq!(events.open(), id);
    // The probe echoes whatever the upstream sends.
    assert_eq!(
        roundtrip(&mut peer, b"over the outbound connection"),
        b"over the outbound connection"
    );
    srv.handle.write(id, b"+").unwrap();
    let mut b = [0u8; 1];
    peer.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"+");
    drop(peer);
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::PeerClosed);
    assert_eq!(srv.handle.stats().connected, 1);

    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let id = srv.handle.connect(closed_port).unwrap();
    let reason = events.close_of(id, 5 * SEC);
    assert_eq!(reason, CloseReason::ConnectFailed(libc::ECONNREFUSED));
    assert!(
        !events.drain().contains(&Event::Open(id)),
        "no on_open for a failed connect"
    );
    srv.stop_within(5 * SEC);
}

#[test]
fn outbound_connect_times_out_when_the_peer_never_answers() {
    // A listener that never accepts, with a full accept queue, drops further SYNs: a connect
    // to it stays pending until connect_timeout.
    let (_full, addr, fillers) = saturated_listener();
    let cfg = config(1, true).connect_timeout(Duration::from_millis(300));
    let (srv, events) = probe(cfg);
    let t0 = Instant::now();
    let id = srv.handle.connect(addr).unwrap();
    let reason = events.close_of(id, 5 * SEC);
    let took = t0.elapsed();
    assert_eq!(reason, CloseReason::ConnectTimeout);
    assert!(
        took >= Duration::from_millis(290) && took < 2 * SEC,
        "{took:?}"
    );
    assert!(!events.drain().contains(&Event::Open(id)));
    srv.stop_within(5 * SEC);
    drop(fillers);
}

#[test]
fn a_burst_of_cross_thread_writes_larger_than_one_drain_is_delivered() {
    // More commands than one inbox drain takes: the reactor must come back for the rest
    // without any other event to wake it.
    let (srv, events) = probe(config(1, true));
    let mut c = client(srv.addr);
    let id = events.open();
    // While the reactor naps in a callback, queue far more commands than one drain takes.
    c.write_all(b"nap").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..10_000 {
        srv.handle.write(id, b"x").unwrap();
    }
    let mut got = vec![0u8; 10_000];
    c.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == b'x'));
    srv.stop_within(5 * SEC);
}

/// A listener whose accept queue is full, so the kernel drops further SYNs until the queue
/// drains (the dropped SYN is retried about a second later).
fn saturated_listener() -> (socket2::Socket, std::net::SocketAddr, Vec<socket2::Socket>) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    (l, addr, fillers)
}

/// Makes room in a [`saturated_listener`]'s queue (accepting the fillers) until the retried
/// SYN of the connection under test completes; returns it, and the fillers accepted.
fn accept_past_fillers(
    upstream: &socket2::Socket,
    fillers: &[socket2::Socket],
) -> (socket2::Socket, Vec<socket2::Socket>) {
    let mut accepted = Vec::new();
    upstream.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < 10 * SEC, "connection never arrived");
        match upstream.accept() {
            Ok((s, from)) => {
                if fillers.iter().any(|f| f.local_addr().unwrap() == from) {
                    accepted.push(s);
                    continue;
                }
                s.set_nonblocking(false).unwrap();
                return (s, accepted);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `config(1, true)`, with `workers` worker threads when not 0.
fn one_reactor(workers: usize) -> Config {
    let cfg = config(1, true);
    if workers > 0 {
        cfg.workers(workers, 16)
    } else {
        cfg
    }
}

#[test]
fn writes_made_before_an_outbound_connect_completes_are_sent() {
    let (srv, events) = probe(config(1, true));
    let (upstream, addr, fillers) = saturated_listener();
    // The handshake cannot complete yet, so this write meets a socket still connecting.
    let id = srv.handle.connect(addr).unwrap();
    srv.handle.write(id, b"early request").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (peer, _accepted) = accept_past_fillers(&upstream, &fillers);
    let mut peer = std::net::TcpStream::from(peer);
    assert_eq!(events.open(), id);
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(5 * SEC)).unwrap();
    let mut got = [0u8; 13];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early request");
    srv.stop_within(5 * SEC);
}

#[test]
fn timers_due_while_an_outbound_connect_is_pending_follow_on_open() {
    // A timer that comes due before the handshake completes is delivered right after
    // `on_open`, not lost; one cancelled meanwhile is not delivered. Inline and on workers.
    for workers in [0, 2] {
        let (srv, events) = probe(one_reactor(workers));
        let (upstream, addr, fillers) = saturated_listener();
        let id = srv.handle.connect(addr).unwrap();
        srv.handle
            .set_timer(id, Duration::from_millis(50), 77)
            .unwrap();
        srv.handle
            .set_timer(id, Duration::from_millis(60), 78)
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        srv.handle.cancel_timer(id, 78).unwrap();
        let (_peer, _accepted) = accept_past_fillers(&upstream, &fillers);
        assert_eq!(events.next(5 * SEC), Event::Open(id), "workers {workers}");
        assert_eq!(
            events.next(5 * SEC),
            Event::Timer(id, 77),
            "workers {workers}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(events.drain(), vec![], "workers {workers}");
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn a_peer_reset_while_input_is_held_closes_the_connection_at_once() {
    // The handler holds input back (as for a deferred answer): nothing reads the socket,
    // yet a reset from the peer must still close the connection and call on_close, not
    // leave it open until some write fails. Inline and on workers.
    for workers in [0, 2] {
        let (srv, events) = probe(one_reactor(workers));
        let mut c = client(srv.addr);
        let id = events.open();
        c.write_all(b"hold").unwrap();
        let mut held = [0u8; 5];
        c.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"held\n");
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
        let reason = events.close_of(id, 2 * SEC);
        assert_eq!(
            reason.errno(),
            Some(libc::ECONNRESET),
            "workers {workers}: {reason:?}"
        );
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn a_timer_cancelled_by_a_callback_of_the_same_tick_is_not_delivered() {
    let (srv, events) = probe(config(1, true));
    let mut c = client(srv.addr);
    let id = events.open();
    c.write_all(b"race").unwrap();
    let first = events.wait(5 * SEC, |e| match e {
        Event::Timer(i, t) if *i == id => Some(*t),
        _ => None,
    });
    assert!(first == 20 || first == 21);
    std::thread::sleep(Duration::from_millis(200));
    let later: Vec<_> = events
        .drain()
        .into_iter()
        .filter(|e| matches!(e, Event::Timer(..)))
        .collect();
    assert!(later.is_empty(), "cancelled timer delivered: {later:?}");
    srv.stop_within(5 * SEC);
}

#[test]
fn a_panicking_state_default_drops_only_that_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static MADE: AtomicUsize = AtomicUsize::new(0);
    struct Fragile;
    impl Default for Fragile {
        fn default() -> Self {
            if MADE.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("second state fails");
            }
            Fragile
        }
    }
    struct H;
    impl Handler for H {
        type State = Fragile;
        fn on_data(&self, conn: &mut Conn<'_>, _: &mut Fragile, d: &[u8]) -> usize {
            let _ = conn.write(d);
            d.len()
        }
    }
    let srv = Running::start(config(1, true), H);
    let mut a = client(srv.addr);
    assert_eq!(roundtrip(&mut a, b"a"), b"a");
    let mut b = client(srv.addr);
    let (_, end) = read_to_end(&mut b, 5 * SEC);
    assert_ne!(end, ReadEnd::TimedOut);
    let mut c = client(srv.addr);
    assert_eq!(roundtrip(&mut c, b"c"), b"c");
    assert_eq!(roundtrip(&mut a, b"a2"), b"a2");
    let st = srv.handle.stats();
    assert_eq!(st.handler_failures, 1);
    // The dropped connection never opened: it counts as an accept error, not as accepted,
    // so `accepted - closed == active` holds.
    assert_eq!(
        (st.accepted, st.accept_errors, st.active),
        (2, 1, 2),
        "{st:?}"
    );
    assert_eq!(st.accepted - st.closed_total(), st.active);
    srv.stop_within(5 * SEC);
}

#[test]
fn a_failure_reported_twice_then_panicking_counts_once() {
    // A binding reports the error (`fail()`), reports it again, then the callback panics:
    // one failed callback, one count, inline and on a worker.
    struct FailsHard;
    impl Handler for FailsHard {
        type State = ();
        fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            if d == b"ok" {
                let _ = conn.write(d);
                return d.len();
            }
            conn.fail();
            conn.fail();
            panic!("and then it panics");
        }
    }
    for workers in [0, 1] {
        let mut cfg = config(1, true);
        if workers > 0 {
            cfg = cfg.workers(workers, 16);
        }
        let srv = Running::start(cfg, FailsHard);
        let mut ok = client(srv.addr);
        let mut bad = client(srv.addr);
        bad.write_all(b"boom").unwrap();
        let (_, end) = read_to_end(&mut bad, 5 * SEC);
        assert_ne!(end, ReadEnd::TimedOut);
        assert_eq!(roundtrip(&mut ok, b"ok"), b"ok");
        let st = srv.handle.stats();
        assert_eq!(st.handler_failures, 1, "workers {workers}: {st:?}");
        assert_eq!(st.closed(CloseReason::HandlerFailed), 1);
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn an_id_of_another_server_is_refused() {
    // Two servers of one process, one connection each: the same reactor and slot, but the
    // ids differ, and one server's handle refuses the other's id instead of writing to its
    // own connection.
    let (a, a_events) = probe(config(1, true));
    let (b, b_events) = probe(config(1, true));
    let mut ca = client(a.addr);
    let mut cb = client(b.addr);
    let ida = a_events.open();
    let idb = b_events.open();
    assert_ne!(ida, idb);
    assert!(matches!(
        b.handle.write(ida, b"foreign"),
        Err(Error::Closed)
    ));
    assert!(matches!(a.handle.close(idb), Err(Error::Closed)));
    b.handle.write(idb, b"own").unwrap();
    let mut got = [0u8; 3];
    cb.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"own");
    cb.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        cb.read(&mut got).is_err(),
        "nothing more reaches b's client"
    );
    assert_eq!(roundtrip(&mut ca, b"ping"), b"ping");
    a.stop_within(5 * SEC);
    b.stop_within(5 * SEC);
}

#[test]
fn connect_after_stop_is_refused() {
    let (srv, _events) = probe(config(1, true));
    srv.handle.stop();
    assert!(matches!(srv.handle.connect(srv.addr), Err(Error::Stopped)));
    srv.stop_within(5 * SEC);
}

#[test]
fn panic_in_on_open_still_gets_on_close() {
    struct OpenPanics(Recorder);
    impl Handler for OpenPanics {
        type State = ();
        fn on_open(&self, _: &mut Conn<'_>, _: &mut ()) {
            panic!("on_open fails");
        }
        fn on_data(&self, _: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            d.len()
        }
        fn on_close(&self, id: ConnId, _: (), r: CloseReason) {
            self.0.send(Event::Close(id, r));
        }
    }
    let (rec, events) = recorder();
    let srv = Running::start(config(1, true), OpenPanics(rec));
    let mut c = client(srv.addr);
    let (_, r) = events.any_close(5 * SEC);
    assert_eq!(r, CloseReason::HandlerFailed);
    let (_, end) = read_to_end(&mut c, 5 * SEC);
    assert_ne!(end, ReadEnd::TimedOut);
    srv.stop_within(5 * SEC);
}

#[test]
fn consuming_more_than_given_is_a_handler_failure() {
    struct Liar;
    impl Handler for Liar {
        type State = ();
        fn on_data(&self, _: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            d.len() + 1
        }
    }
    let srv = Running::start(config(1, true), Liar);
    let mut c = client(srv.addr);
    c.write_all(b"x").unwrap();
    let (_, end) = read_to_end(&mut c, 5 * SEC);
    assert_ne!(end, ReadEnd::TimedOut);
    assert_eq!(srv.handle.stats().handler_failures, 1);
    srv.stop_within(5 * SEC);
}

#[test]
fn half_close_gets_every_echoed_byte_then_eof() {
    let (srv, events) = probe(config(1, true));
    let mut c = client(srv.addr);
    let id = events.open();
    let msg = Rng(99).bytes(300_000);
    let writer = {
        let mut c = c.try_clone().unwrap();
        let msg = msg.clone();
        std::thread::spawn(move || {
            c.write_all(&msg).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let (got, end) = read_to_end(&mut c, 10 * SEC);
    writer.join().unwrap();
    assert_eq!(end, ReadEnd::Eof);
    assert!(got == msg, "echo after half-close differs");
    assert_eq!(events.close_of(id, 5 * SEC), CloseReason::PeerClosed);
    srv.stop_within(5 * SEC);
}

#[test]
fn ipv6_loopback() {
    let Ok(probe_listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    drop(probe_listener);
    let cfg = Config::new("[::1]:0".parse().unwrap()).threads(2);
    let (srv, _events) = probe(cfg);
    assert!(srv.addr.is_ipv6());
    let mut c = client(srv.addr);
    assert_eq!(roundtrip(&mut c, b"v6"), b"v6");
    srv.stop_within(5 * SEC);
}

#[test]
fn invalid_config_is_rejected_before_binding() {
    struct Nop;
    impl Handler for Nop {
        type State = ();
        fn on_data(&self, _: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            d.len()
        }
    }
    let err = Server::bind(config(0, true), Nop).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("threads")),
        "{err}"
    );
    let mut s = Server::bind(config(1, true), Nop).unwrap();
    s.start().unwrap();
    assert!(matches!(s.start(), Err(Error::AlreadyStarted)));
}

/// `Conn::write_in_place` hands the closure a zeroed slice of `max` bytes, keeps what it
/// says it wrote (at most `max`), and queues the pieces in order across pooled chunks: on the
/// reactor and on a worker.
#[test]
fn write_in_place_queues_what_the_closure_wrote_in_order() {
    struct Upper;
    impl Handler for Upper {
        type State = ();
        fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            // Ask for more room than needed; claim one byte too many when the piece is odd,
            // which must be cut back to `max`.
            let max = d.len();
            let claimed = if d.len() % 2 == 1 { max + 1 } else { max };
            let n = conn
                .write_in_place(max, |buf| {
                    assert_eq!(buf.len(), max);
                    assert!(buf.iter().all(|&b| b == 0), "the slice is zero-filled");
                    for (o, i) in buf.iter_mut().zip(d) {
                        *o = i.to_ascii_uppercase();
                    }
                    claimed
                })
                .expect("write_in_place");
            assert_eq!(n, max);
            d.len()
        }
    }
    for cfg in [config(1, true), config(1, true).workers(1, 16)] {
        let srv = Running::start(cfg, Upper);
        let mut c = client(srv.addr);
        // 300 KB in pieces of 1..=3000 bytes: many appends, several pooled chunks.
        let msg: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut sent = 0;
        let mut size = 1;
        while sent < msg.len() {
            let end = (sent + size).min(msg.len());
            c.write_all(&msg[sent..end]).unwrap();
            sent = end;
            size = size % 3000 + 7;
        }
        let mut got = vec![0; msg.len()];
        c.read_exact(&mut got).expect("all of it back");
        assert!(got == msg.to_ascii_uppercase(), "bytes differ");
        srv.stop_within(5 * SEC);
    }
}

/// Consumes one line per call and yields (pause, then resume) while more input follows:
/// the rest is presented again through `on_resume`. Keeps the default `on_eof`.
struct OneLineAtATime;

impl OneLineAtATime {
    fn serve(conn: &mut Conn<'_>, data: &[u8]) -> usize {
        let Some(end) = data.iter().position(|&b| b == b'\n').map(|i| i + 1) else {
            return 0;
        };
        conn.write(&data[..end]).unwrap();
        if end < data.len() {
            conn.pause_input();
            conn.resume_input();
        }
        end
    }
}

impl Handler for OneLineAtATime {
    type State = ();

    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        Self::serve(conn, data)
    }

    fn on_resume(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        Self::serve(conn, data)
    }
}

fn numbered_lines(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| format!("{i}\n").into_bytes()).collect()
}

#[test]
fn yielded_input_is_presented_before_end_of_stream() {
    // The client sends many lines and half-closes at once: every line is answered before
    // the connection closes, inline and on workers.
    for cfg in [config(1, true), config(1, true).workers(1, 16)] {
        let srv = Running::start(cfg, OneLineAtATime);
        let mut c = client(srv.addr);
        let sent = numbered_lines(1000);
        c.write_all(&sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let (got, end) = read_to_end(&mut c, 10 * SEC);
        assert_eq!(end, ReadEnd::Eof);
        assert_eq!(got.len(), sent.len(), "{:?}", srv.handle.stats());
        assert_eq!(got, sent);
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn a_handler_that_yields_after_each_message_is_not_overrun() {
    // While yielded input waits to be presented again, nothing more is read: the kernel
    // pushes back on the client, and the input shoal holds stays under a small cap (inline,
    // `max_read_buffer` checks it; on workers, where input waiting for a job is bounded by
    // `max_pending_input` instead, the run checks delivery and order).
    for cfg in [config(1, true), config(1, true).workers(1, 16)] {
        let srv = Running::start(cfg.max_read_buffer(64 << 10), OneLineAtATime);
        let mut c = client(srv.addr);
        let sent = numbered_lines(50_000);
        let mut writer = c.try_clone().unwrap();
        let data = sent.clone();
        let w = std::thread::spawn(move || {
            writer.write_all(&data).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let (got, end) = read_to_end(&mut c, 60 * SEC);
        w.join().unwrap();
        assert_eq!(end, ReadEnd::Eof, "{:?}", srv.handle.stats());
        assert_eq!(got.len(), sent.len(), "{:?}", srv.handle.stats());
        assert_eq!(got, sent);
        assert_eq!(srv.handle.stats().closed(CloseReason::ReadOverflow), 0);
        srv.stop_within(5 * SEC);
    }
}

#[test]
fn writes_queued_before_stop_are_delivered() {
    // The reactor is busy (a callback naps), so the write waits in its inbox when `stop()`
    // arrives: it must still reach the client before the connection closes.
    let (srv, events) = probe(config(1, true));
    let mut a = client(srv.addr);
    let a_id = events.open();
    let mut b = client(srv.addr);
    let _ = events.open();
    b.write_all(b"nap").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    srv.handle.write(a_id, b"last words").unwrap();
    srv.handle.stop();
    let (got, end) = read_to_end(&mut a, 5 * SEC);
    assert_eq!(end, ReadEnd::Eof);
    assert_eq!(got, b"last words");
    srv.stop_within(5 * SEC);
}

#[test]
fn paced_writers_on_two_threads_stream_past_max_write_buffer_to_a_slow_reader() {
    // 40 MiB from two producer threads against a 16 MiB max_write_buffer, to a client that
    // reads nothing for half a second: each producer waits for room between its 1 MiB pieces.
    const PIECE: usize = 1 << 20;
    let mut cfg = config(1, true);
    cfg.max_write_buffer = 16 << 20;
    let (srv, events) = probe(cfg);
    let mut c = client(srv.addr);
    let id = events.open();
    let producers: Vec<_> = [b'a', b'b']
        .into_iter()
        .map(|fill| {
            let w = srv.handle.paced_writer(id).unwrap();
            std::thread::spawn(move || {
                let mut most = 0;
                for _ in 0..20 {
                    assert!(matches!(w.wait_writable(Some(10 * SEC)), Ok(true)));
                    most = most.max(w.queued());
                    w.write_owned(vec![fill; PIECE]).unwrap();
                }
                most
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut got = vec![0u8; 40 * PIECE];
    c.set_read_timeout(Some(20 * SEC)).unwrap();
    c.read_exact(&mut got).expect("the whole 40 MiB");
    for p in producers {
        let most = p.join().unwrap();
        // What was queued when a producer went on: at most the low watermark, plus the other
        // producer's piece on its way.
        assert!(most <= cfg_low_watermark() + PIECE, "{most}");
    }
    // Each piece arrived whole, in its producer's order.
    for (i, block) in got.chunks(PIECE).enumerate() {
        assert!(
            block.iter().all(|&b| b == block[0]),
            "piece {i} is not one producer's"
        );
    }
    assert_eq!(got.iter().filter(|&&b| b == b'a').count(), 20 * PIECE);
    assert_eq!(srv.handle.stats().closed(CloseReason::WriteOverflow), 0);

    // The client leaves: a waiting writer hears of it.
    let w = srv.handle.paced_writer(id).unwrap();
    drop(c);
    let gone = eventually(5 * SEC, || {
        matches!(w.wait_writable(Some(SEC)), Err(Error::Closed))
    });
    assert!(gone);
    // The wait ends as the close begins; the id is stale once it is done.
    assert!(eventually(5 * SEC, || matches!(
        srv.handle.paced_writer(id),
        Err(Error::Closed)
    )));
    assert!(matches!(w.write(b"late"), Err(Error::Closed)));
    srv.stop_within(5 * SEC);
}

/// The default `write_low_watermark`.
fn cfg_low_watermark() -> usize {
    config(1, true).write_low_watermark
}

#[test]
fn a_paced_writer_waiting_on_a_connection_that_begins_to_close_stops_at_once() {
    // The client reads nothing, so the writer ends up waiting for room; a graceful close then
    // leaves its output to flush (which never happens), and no write could land any more:
    // the wait ends with `Closed` at once instead of running to its own timeout.
    // Small kernel buffers on both sides: nothing drains once the client stops reading.
    let (srv, events) = probe(config(1, true).send_buffer_size(Some(16 << 10)));
    let lazy = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    lazy.set_recv_buffer_size(4096).unwrap();
    lazy.connect(&srv.addr.into()).unwrap();
    let id = events.open();
    let w = srv.handle.paced_writer(id).unwrap();
    let writer = std::thread::spawn(move || {
        loop {
            match w.wait_writable(Some(10 * SEC)) {
                Ok(true) => {
                    if w.write(&[b'x'; 1 << 20]).is_err() {
                        return Err(Error::Closed);
                    }
                }
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    // Until the writer blocks: the kernel's buffers and the low watermark are full.
    assert!(eventually(10 * SEC, || srv.handle.stats().bytes_out > 0));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    srv.handle.close(id).unwrap();
    let end = writer.join().unwrap();
    assert!(matches!(end, Err(Error::Closed)), "{end:?}");
    assert!(t0.elapsed() < 3 * SEC, "{:?}", t0.elapsed());
    assert!(
        srv.handle.is_live(id),
        "still flushing: the close had only begun"
    );
    drop(lazy);
    srv.stop_within(10 * SEC);
}

/// A start that cannot spawn its threads leaves nothing half running: what was spawned is
/// stopped and joined, the reactors never started are finished, so every id from `connect`
/// gets its `on_close`, and the server is finished (`wait` returns, a second start is
/// refused). Run in a child process whose threads cannot get a stack (`RUST_MIN_STACK`).
#[test]
fn a_start_that_cannot_spawn_its_threads_leaves_nothing_running() {
    const NAME: &str = "a_start_that_cannot_spawn_its_threads_leaves_nothing_running";
    const CHILD: &str = "SHOAL_TEST_NO_THREADS";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .env("RUST_MIN_STACK", (1u64 << 46).to_string())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("every connect closed"), "{text}");
        return;
    }
    type Closes = Arc<std::sync::Mutex<Vec<(ConnId, CloseReason)>>>;
    struct Record(Closes);
    impl Handler for Record {
        type State = ();
        fn on_data(&self, _: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            d.len()
        }
        fn on_close(&self, id: ConnId, _: (), reason: CloseReason) {
            self.0.lock().unwrap().push((id, reason));
        }
    }
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    for workers in [0, 1] {
        let mut cfg = config(2, true);
        if workers > 0 {
            cfg = cfg.workers(workers, 16);
        }
        let closes = Closes::default();
        let mut srv = Server::bind(cfg, Record(closes.clone())).unwrap();
        let h = srv.handle();
        // One on each reactor.
        let ids = [
            h.connect(upstream.local_addr().unwrap()).unwrap(),
            h.connect(upstream.local_addr().unwrap()).unwrap(),
        ];
        assert_ne!(ids[0].reactor(), ids[1].reactor());
        let err = srv.start().unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err}");
        let mut got = closes.lock().unwrap().clone();
        got.sort_by_key(|(id, _)| id.as_u64());
        let mut want: Vec<_> = ids.iter().map(|&id| (id, CloseReason::Shutdown)).collect();
        want.sort_by_key(|(id, _)| id.as_u64());
        assert_eq!(got, want, "workers {workers}");
        assert!(srv.is_finished());
        srv.wait().unwrap();
        assert!(matches!(srv.start(), Err(Error::AlreadyStarted)));
        assert!(matches!(
            h.connect(upstream.local_addr().unwrap()),
            Err(Error::Stopped)
        ));
    }
    println!("every connect closed");
}

/// The space `write_in_place` lends is taken back when its closure panics: a handler that
/// catches the panic and writes on sends its own bytes, not zeros in front of them.
#[test]
fn a_panic_inside_write_in_place_leaves_no_bytes_behind() {
    struct Lender;
    impl Handler for Lender {
        type State = ();
        fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
            let lent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                conn.write_in_place(64, |_| panic!("serializer fails on purpose"))
            }));
            assert!(lent.is_err());
            conn.write(d).unwrap();
            d.len()
        }
    }
    for workers in [0, 1] {
        let mut cfg = config(1, true);
        if workers > 0 {
            cfg = cfg.workers(workers, 16);
        }
        let srv = Running::start(cfg, Lender);
        let mut c = client(srv.addr);
        assert_eq!(roundtrip(&mut c, b"after"), b"after", "workers {workers}");
        assert_eq!(roundtrip(&mut c, b"again"), b"again", "workers {workers}");
        srv.stop_within(5 * SEC);
    }
}
