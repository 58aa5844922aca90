//! `loadgen`: the load generator of shoal's echo benchmarks, and the
//! fixed-count HTTP client of its HTTP benchmark.
//!
//! ```text
//! loadgen echo --host H --port P --conns N --size S (--duration SECS | --count K)
//!              [--warmup SECS] [--threads T]
//! loadgen idle --host H --port P --conns N [--sources K] [--probe echo|http|none]
//! loadgen http --host H --port P --conns N --requests K [--pipeline D] [--timeout SECS]
//! ```
//!
//! See `bench/echo.py` and `bench/http.py` for the harnesses that drive it.

mod args;
mod echo;
mod hist;
mod http;
mod idle;
mod sys;

const USAGE: &str = "\
usage:
  loadgen echo --host H --port P --conns N --size S (--duration SECS | --count K)
               [--warmup SECS] [--threads T]
      N closed-loop connections, each writing S bytes and waiting for their echo.
      Prints `measure start` / `measure end` around the measured window, then a
      JSON line with round trips, rps, p50/p90/p99 latency (us) and errors.
      --count K stops after exactly K round trips (all started after warm-up);
      it gives up after --duration SECS (default 120).
  loadgen idle --host H --port P --conns N [--sources K] [--probe echo|http|none]
      Opens N connections from 127.0.0.1..127.0.0.K (round-robin; K defaults
      to 4), uses each once (echo: 64 bytes echoed back, the default; http:
      one `GET /` and its whole response; none: nothing), prints `ready N`,
      and holds them until stdin gives a line or reaches EOF.
  loadgen http --host H --port P --conns N --requests K [--pipeline D] [--timeout SECS]
      N keep-alive connections, each writing D `GET /` requests at a time and
      waiting for their D responses (Content-Length framing). Stops after
      exactly K responses and prints a JSON line with responses, rps,
      p50/p90/p99 latency (us), non-2xx responses and errors; gives up after
      --timeout SECS (default 120).";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("echo") => echo::run(&argv[1..]),
        Some("idle") => idle::run(&argv[1..]),
        Some("http") => http::run(&argv[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(0)
        }
        _ => Err(format!("expected a mode\n{USAGE}")),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            std::process::exit(2);
        }
    }
}
