//! The command-line convention shared by every example server: `--host`, `--port`,
//! `--threads`, plus named numeric flags; `--help` lists them.

use std::collections::HashMap;
use std::time::Duration;

/// Parsed `--name value` pairs.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `std::env::args`, accepting only the flags in `known` (name, help) plus the
    /// common ones. Exits with status 2 and a message on anything else.
    pub fn parse(program: &str, known: &[(&str, &str)]) -> Args {
        let common = [
            ("host", "address to bind (default 127.0.0.1)"),
            ("port", "port to bind, 0 picks a free one"),
            ("threads", "reactor threads (default: number of CPUs)"),
        ];
        let usage = || {
            let mut s = format!("usage: {program} [flags]\n");
            for (name, help) in common.iter().chain(known) {
                s.push_str(&format!("  --{name:<24} {help}\n"));
            }
            s
        };
        let mut values = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                print!("{}", usage());
                std::process::exit(0);
            }
            let Some(name) = arg.strip_prefix("--") else {
                eprint!("unexpected argument {arg:?}\n{}", usage());
                std::process::exit(2);
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => match it.next() {
                    Some(v) => (name.to_owned(), v),
                    None => {
                        eprintln!("--{name} needs a value");
                        std::process::exit(2);
                    }
                },
            };
            if !common.iter().chain(known).any(|(n, _)| *n == name) {
                eprint!("unknown flag --{name}\n{}", usage());
                std::process::exit(2);
            }
            values.insert(name, value);
        }
        Args { values }
    }

    /// A string flag.
    pub fn str(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// A numeric flag, if given.
    pub fn num(&self, name: &str) -> Option<u64> {
        self.values.get(name).map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("--{name} expects a number, got {v:?}");
                std::process::exit(2);
            })
        })
    }

    /// A millisecond flag as a duration; absent or 0 means disabled.
    pub fn millis(&self, name: &str) -> Option<Duration> {
        self.num(name).filter(|&n| n > 0).map(Duration::from_millis)
    }

    /// The listen address from `--host` and `--port`.
    pub fn addr(&self, default_port: u16) -> std::net::SocketAddr {
        let host = self.str("host", "127.0.0.1");
        let port = self.num("port").unwrap_or(u64::from(default_port));
        let text = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        text.parse().unwrap_or_else(|e| {
            eprintln!("bad --host/--port {text:?}: {e}");
            std::process::exit(2);
        })
    }
}

/// Stops the server on SIGINT or SIGTERM (from a dedicated thread).
pub fn stop_on_signals(handle: shoal_core::ServerHandle) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).expect("install signal handlers");
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                handle.stop();
            }
        })
        .expect("spawn signal thread");
}

/// Prints the convention's `listening on HOST:PORT` line, flushed.
pub fn announce(addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}
