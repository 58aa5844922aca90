//! hyper_hello: the hyper peer of shoal's HTTP benchmark.
//!
//! hyper 1.x's HTTP/1.1 server on a tokio current-thread runtime, one task per
//! connection, TCP_NODELAY, keep-alive, and `pipeline_flush(true)` so that
//! pipelined requests read together are answered in one write. `GET /` is
//! `200 Hello, World!` as text/plain (hyper adds Date and Content-Length);
//! anything else is 404.
//!
//! ```text
//! hyper_hello --host 127.0.0.1 --port 0 [--threads N (ignored)]
//! ```
//!
//! Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

const HELLO: &[u8] = b"Hello, World!";

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
                "hyper_hello: setrlimit: {}",
                std::io::Error::last_os_error()
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
            "--threads" => {} // single-threaded by design
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    Ok(SocketAddr::new(host, port))
}

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = if req.method() == Method::GET && req.uri().path() == "/" {
        let mut r = Response::new(Full::new(Bytes::from_static(HELLO)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    resp.headers_mut()
        .insert(SERVER, HeaderValue::from_static("hyper"));
    Ok(resp)
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = http1::Builder::new()
        .keep_alive(true)
        .pipeline_flush(true)
        .serve_connection(TokioIo::new(stream), service_fn(hello))
        .await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hyper_hello: {e}\nusage: hyper_hello --host IP --port PORT [--threads N]");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hyper_hello: bind {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut sigint, mut sigterm) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("hyper_hello: signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(local) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {local}");
            let _ = out.flush();
        }
        Err(e) => {
            eprintln!("hyper_hello: local_addr: {e}");
            return ExitCode::from(1);
        }
    }
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    // EMFILE and the like: report, back off briefly, go on.
                    eprintln!("hyper_hello: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    ExitCode::SUCCESS
}
