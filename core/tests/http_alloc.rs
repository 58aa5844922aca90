//! The HTTP inline path allocates nothing per request: a counting global allocator watches
//! every thread while keep-alive and pipelined requests are served (after a warm-up that
//! fills the buffer pool and the per-thread head buffer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use shoal_core::Config;
use shoal_core::http::{HttpConfig, HttpServer, Request, Response};

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

fn hello(req: &Request<'_>, res: &mut Response<'_, '_>) {
    let body: &[u8] = if req.method() == "POST" {
        req.body()
    } else {
        b"Hello, World!"
    };
    let _ = res.send(200, &[("Content-Type", "text/plain")], body);
}

/// Sends `batch` and reads until `responses` complete responses arrived (all with the same
/// known length `each`).
fn round(c: &mut std::net::TcpStream, batch: &[u8], buf: &mut [u8], total: usize) {
    c.write_all(batch).unwrap();
    let mut got = 0;
    while got < total {
        let n = c.read(&mut buf[got..total]).unwrap();
        assert!(n > 0);
        got += n;
    }
}

#[test]
fn serving_requests_allocates_nothing() {
    let engine = Config::new("127.0.0.1:0".parse().unwrap()).threads(1);
    let mut server = HttpServer::bind(HttpConfig::new(engine), hello).unwrap();
    server.start().unwrap();
    let mut c = std::net::TcpStream::connect(server.local_addr()).unwrap();
    c.set_nodelay(true).unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n";
    let post = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\nHello, World!";
    // Every response has the same length: a 29-byte date keeps it fixed.
    let one = {
        c.write_all(get).unwrap();
        let mut b = vec![0u8; 4096];
        c.read(&mut b).unwrap()
    };
    let mut pipelined = Vec::new();
    for i in 0..16 {
        pipelined.extend_from_slice(if i % 2 == 0 { get } else { post });
    }
    let mut buf = vec![0u8; one * 16];
    for (batch, count) in [(&get[..], 1usize), (&post[..], 1), (&pipelined[..], 16)] {
        for _ in 0..200 {
            round(&mut c, batch, &mut buf, one * count);
        }
        ALLOCS.store(0, Relaxed);
        COUNTING.store(true, Relaxed);
        for _ in 0..2000 {
            round(&mut c, batch, &mut buf, one * count);
        }
        COUNTING.store(false, Relaxed);
        let n = ALLOCS.load(Relaxed);
        assert_eq!(n, 0, "{n} allocations for {} requests", 2000 * count);
        assert!(buf[..one].starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    assert!(server.http_stats().requests > 36_000);
    server.stop();
    server.wait().unwrap();
}
