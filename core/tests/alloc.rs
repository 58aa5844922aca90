//! Steady-state echo makes no heap allocation per message, on the server or anywhere else in
//! the process: a counting global allocator watches every thread while 10,000 messages are
//! echoed over loopback, after a warm-up that fills the buffer pool.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use shoal_core::{Config, Conn, Handler, Server};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every operation to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Echo;

impl Handler for Echo {
    type State = ();
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let _ = conn.write(data);
        data.len()
    }
}

/// Echoes `n` messages of `size` bytes on each client, one round trip at a time.
fn run(clients: &mut [std::net::TcpStream], n: usize, msg: &[u8], buf: &mut [u8]) {
    for _ in 0..n {
        for c in clients.iter_mut() {
            c.write_all(msg).unwrap();
            c.read_exact(buf).unwrap();
        }
    }
}

#[test]
fn echo_allocates_nothing_per_message() {
    let config = Config::new("127.0.0.1:0".parse().unwrap())
        .threads(2)
        .idle_timeout(Some(std::time::Duration::from_secs(60)));
    let mut server = Server::bind(config, Echo).unwrap();
    server.start().unwrap();
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for c in &clients {
        c.set_nodelay(true).unwrap();
    }
    for size in [64usize, 4096, 100_000] {
        let msg = vec![7u8; size];
        let mut buf = vec![0u8; size];
        run(&mut clients, 200, &msg, &mut buf);
        ALLOCS.store(0, Relaxed);
        COUNTING.store(true, Relaxed);
        let rounds = 10_000 / clients.len();
        run(&mut clients, rounds, &msg, &mut buf);
        COUNTING.store(false, Relaxed);
        let allocs = ALLOCS.load(Relaxed);
        assert_eq!(
            allocs, 0,
            "{allocs} heap allocations while echoing 10,000 messages of {size} bytes"
        );
        assert_eq!(buf, msg);
    }
    let st = server.handle().stats();
    assert!(st.pool_hits > 0);
    server.stop();
    server.wait().unwrap();
}
