//! may_minihttp_hello: the may_minihttp peer of shoal's HTTP benchmark.
//!
//! may_minihttp's server on the `may` stackful-coroutine runtime, configured
//! for one core (`may::config().set_workers(1)`) and with the small coroutine
//! stacks of may_minihttp's own TechEmpower example: one coroutine per
//! connection, every request read in one go parsed and answered into one
//! output buffer, written once per read (pipelining answered in one write).
//! `GET /` is `200 Hello, World!` as text/plain (may_minihttp adds Server, Date
//! and Content-Length); anything else is 404.
//!
//! ```text
//! may_minihttp_hello --host 127.0.0.1 --port 0 [--threads N (ignored)]
//! ```
//!
//! may_minihttp binds the address it is given and does not say which port it
//! got, so for `--port 0` a free port is picked first (bound, read, released).
//! Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::ExitCode;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if req.method() == "GET" && req.path() == "/" {
            rsp.header("Content-Type: text/plain");
            rsp.body("Hello, World!");
        } else {
            rsp.status_code(404, "Not Found");
            rsp.body("");
        }
        Ok(())
    }
}

fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid, initialised `rlimit` that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            eprintln!(
                "may_minihttp_hello: setrlimit: {}",
                io::Error::last_os_error()
            );
        }
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut host: IpAddr = [127, 0, 0, 1].into();
    let mut port: Option<u16> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host" => host = value.parse().map_err(|_| format!("bad --host {value:?}"))?,
            "--port" => port = Some(value.parse().map_err(|_| format!("bad --port {value:?}"))?),
            "--threads" => {} // one worker by design
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    Ok(SocketAddr::new(host, port))
}

/// SIGINT and SIGTERM, blocked in the calling thread (and so in every thread it
/// starts afterwards, may's workers included) to be taken with `sigwait`.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set; pthread_sigmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() -> ExitCode {
    let mut addr = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "may_minihttp_hello: {e}\nusage: may_minihttp_hello --host IP --port PORT [--threads N]"
            );
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let stop = block_stop_signals();
    if addr.port() == 0 {
        match TcpListener::bind(addr).and_then(|l| l.local_addr()) {
            Ok(a) => addr = a,
            Err(e) => {
                eprintln!("may_minihttp_hello: picking a port on {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    may::config().set_workers(1).set_stack_size(0x1000);
    // `start` binds and listens before it returns.
    let _server = match HttpServer(Hello).start(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("may_minihttp_hello: bind {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: `stop` is an initialised signal set and `sig` a valid out-pointer.
    unsafe { libc::sigwait(&stop, &mut sig) };
    ExitCode::SUCCESS
}
