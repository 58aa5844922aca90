//! HTTP hello: `GET /` answers `Hello, World!`, `POST /echo` echoes the body,
//! `GET /big?bytes=N` sends N bytes (for slow-reader tests; 413 above `--max-write-buffer`
//! less 64 KiB, as the body is queued whole), and `GET /fail` fails on purpose
//! (the handler panics): shoal answers 500 and closes only that connection.
//!
//! ```text
//! cargo run --release -p shoal-core --example http_hello -- --host 127.0.0.1 --port 8080
//! ```

#[path = "common/cli.rs"]
mod cli;

use std::sync::OnceLock;
use std::time::Duration;

use shoal_core::Config;
use shoal_core::http::{HttpConfig, HttpServer, PreparedHeaders, Request, Response};

/// A megabyte of filler for `/big`, made once.
fn filler() -> &'static [u8] {
    static BIG: OnceLock<Vec<u8>> = OnceLock::new();
    BIG.get_or_init(|| vec![b'x'; 1 << 20])
}

/// `text` is `Content-Type: text/plain`, checked and serialized once at start-up.
fn handle(
    req: &Request<'_>,
    res: &mut Response<'_, '_>,
    text: &PreparedHeaders,
    delay: Option<Duration>,
    max_big: usize,
) {
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    let result = match (req.method(), req.path()) {
        ("GET" | "HEAD", "/") => res.send_prepared(200, text, b"Hello, World!"),
        ("POST", "/echo") => {
            let ct = req
                .header("content-type")
                .unwrap_or(b"application/octet-stream");
            res.send(200, &[("Content-Type".as_bytes(), ct)], req.body())
        }
        ("GET" | "HEAD", "/big") => {
            let n = req
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("bytes=")))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1 << 20);
            let fill = filler();
            if n > max_big {
                // Written inside the handler, the body is queued whole: past
                // max_write_buffer the connection would be aborted.
                res.send_prepared(
                    413,
                    text,
                    b"bytes is above what one response may queue; raise --max-write-buffer\n",
                )
            } else if n <= fill.len() {
                res.send_prepared(200, text, &fill[..n])
            } else {
                res.start_chunked(200, &[("Content-Type", "text/plain")])
                    .and_then(|()| {
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(fill.len());
                            res.write_chunk(&fill[..k])?;
                            left -= k;
                        }
                        res.finish()
                    })
            }
        }
        ("GET", "/fail") => panic!("GET /fail fails on purpose"),
        (_, "/" | "/echo" | "/big") => res.send(405, &[("Allow", "GET, HEAD, POST")], b""),
        _ => res.send_prepared(404, text, b"Not Found"),
    };
    if let Err(e) = result {
        eprintln!("http_hello: response failed: {e}");
    }
}

fn main() {
    let args = cli::Args::parse(
        "http_hello",
        &[
            (
                "workers",
                "run handlers on N worker threads (0 = inline, default)",
            ),
            ("queue", "worker queue capacity (default 1024)"),
            (
                "max-connections",
                "pause accepting at this many connections",
            ),
            ("max-header-bytes", "largest request head (431 above)"),
            ("max-body-bytes", "largest request body (413 above)"),
            (
                "max-requests-per-conn",
                "close connections after this many requests",
            ),
            (
                "header-timeout-ms",
                "a request head must arrive within this time (default 10000; cannot be off)",
            ),
            (
                "body-timeout-ms",
                "longest wait between reads of a request body (default 30000; cannot be off)",
            ),
            (
                "keepalive-timeout-ms",
                "longest idle time between requests (default 60000; cannot be off)",
            ),
            (
                "write-timeout-ms",
                "close when output makes no progress this long (default 60000, 0 = off)",
            ),
            (
                "write-min-rate",
                "queued output must drain at this many bytes/s after a write timeout of grace",
            ),
            (
                "body-min-rate",
                "bodies must arrive at this many bytes/s (default 500, 0 = off)",
            ),
            (
                "idle-timeout-ms",
                "close connections idle this long (default: off, 0 = off)",
            ),
            ("max-write-buffer", "most queued output per connection"),
            (
                "send-buffer",
                "SO_SNDBUF in bytes (fixed; default: the kernel's autotuning)",
            ),
            ("handler-delay-ms", "sleep this long in each handler call"),
        ],
    );
    let mut engine = Config::new(args.addr(8080));
    if let Some(n) = args.num("threads") {
        engine = engine.threads(n as usize);
    }
    if let Some(n) = args.num("workers").filter(|&n| n > 0) {
        engine = engine.workers(n as usize, args.num("queue").unwrap_or(1024) as usize);
    }
    if let Some(n) = args.num("max-connections") {
        engine = engine.max_connections(n as usize);
    }
    if let Some(n) = args.num("max-write-buffer") {
        engine = engine.max_write_buffer(n as usize);
    }
    if let Some(n) = args.num("send-buffer") {
        engine = engine.send_buffer_size(Some(n as usize));
    }
    if let Some(n) = args.num("write-min-rate").filter(|&n| n > 0) {
        engine = engine.write_min_rate(Some(n));
    }
    engine = engine.idle_timeout(args.millis("idle-timeout-ms"));
    let mut config = HttpConfig::new(engine);
    // After HttpConfig::new, which gives HTTP its 60 s default: given, 0 turns it off.
    if args.num("write-timeout-ms").is_some() {
        config.engine.write_timeout = args.millis("write-timeout-ms");
    }
    if let Some(n) = args.num("max-header-bytes") {
        config = config.max_header_bytes(n as usize);
    }
    if let Some(n) = args.num("max-body-bytes") {
        config = config.max_body_size(n as usize);
    }
    if let Some(n) = args.num("max-requests-per-conn") {
        config = config.max_requests_per_connection(Some(n));
    }
    // These cannot be off: 0 is passed on and refused by validation, as in the C example.
    if let Some(d) = args.num("header-timeout-ms").map(Duration::from_millis) {
        config = config.header_read_timeout(d);
    }
    if let Some(d) = args.num("body-timeout-ms").map(Duration::from_millis) {
        config = config.body_read_timeout(d);
    }
    if let Some(n) = args.num("body-min-rate") {
        config = config.body_min_rate((n > 0).then_some(n));
    }
    if let Some(d) = args.num("keepalive-timeout-ms").map(Duration::from_millis) {
        config = config.keepalive_timeout(d);
    }
    let delay = args.millis("handler-delay-ms");
    let max_big = config.engine.max_write_buffer.saturating_sub(64 << 10);
    let text = PreparedHeaders::new(&[("Content-Type", "text/plain")]).expect("valid headers");
    let server = HttpServer::bind(
        config,
        move |req: &Request<'_>, res: &mut Response<'_, '_>| {
            handle(req, res, &text, delay, max_big)
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("http_hello: {e}");
        std::process::exit(1);
    });
    cli::stop_on_signals(server.handle());
    cli::announce(server.local_addr());
    if let Err(e) = server.run() {
        eprintln!("http_hello: {e}");
        std::process::exit(1);
    }
}
