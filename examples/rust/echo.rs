//! Echo server: every byte received is sent back.
//!
//! ```text
//! cargo run --release -p shoal-core --example echo -- --host 127.0.0.1 --port 9000 --threads 2
//! ```

#[path = "common/cli.rs"]
mod cli;

use std::time::Duration;

use shoal_core::{Config, Conn, Handler, Server};

struct Echo {
    /// Sleep this long in every `on_data` first (a stand-in for a blocking call), so the
    /// worker pool can be seen bounding concurrency.
    delay: Option<Duration>,
}

impl Handler for Echo {
    type State = ();

    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        // An overflowing write, or one after handler_timeout, closes the connection.
        let _ = conn.write(data);
        data.len()
    }
}

fn main() {
    let args = cli::Args::parse(
        "echo",
        &[
            (
                "idle-timeout-ms",
                "close connections idle this long (0 = never)",
            ),
            (
                "read-timeout-ms",
                "close when a partial message waits this long",
            ),
            (
                "write-timeout-ms",
                "close when output makes no progress this long",
            ),
            (
                "max-connections",
                "pause accepting at this many connections",
            ),
            (
                "reuse-port",
                "1 = one listener per reactor (default), 0 = one shared",
            ),
            (
                "workers",
                "run callbacks on N worker threads (0 = inline, default)",
            ),
            ("queue", "worker queue capacity (default 1024)"),
            (
                "handler-delay-ms",
                "sleep this long in each on_data before echoing",
            ),
            (
                "handler-timeout-ms",
                "close connections whose callback runs longer (pool mode)",
            ),
        ],
    );
    let mut config = Config::new(args.addr(9000))
        .idle_timeout(args.millis("idle-timeout-ms"))
        .read_timeout(args.millis("read-timeout-ms"))
        .write_timeout(args.millis("write-timeout-ms"));
    if let Some(n) = args.num("threads") {
        config = config.threads(n as usize);
    }
    if let Some(n) = args.num("max-connections") {
        config = config.max_connections(n as usize);
    }
    if let Some(n) = args.num("reuse-port") {
        config = config.reuse_port(n != 0);
    }
    if let Some(n) = args.num("workers").filter(|&n| n > 0) {
        let queue = args.num("queue").unwrap_or(1024) as usize;
        config = config
            .workers(n as usize, queue)
            .handler_timeout(args.millis("handler-timeout-ms"));
    }
    let echo = Echo {
        delay: args.millis("handler-delay-ms"),
    };
    let server = Server::bind(config, echo).unwrap_or_else(|e| {
        eprintln!("echo: {e}");
        std::process::exit(1);
    });
    cli::stop_on_signals(server.handle());
    cli::announce(server.local_addr());
    if let Err(e) = server.run() {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
