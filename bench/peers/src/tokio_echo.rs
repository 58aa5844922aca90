//! tokio_echo: the tokio peer of shoal's echo benchmark.
//!
//! The idiomatic tokio echo server: a current-thread runtime, one spawned
//! task per connection that reads into a 64 KiB buffer and `write_all`s it
//! back, TCP_NODELAY on every connection.
//!
//! ```text
//! tokio_echo --host 127.0.0.1 --port 0 [--threads N (ignored)]
//! ```
//!
//! Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

const BUF_SIZE: usize = 1024;

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
            eprintln!("tokio_echo: setrlimit: {}", std::io::Error::last_os_error());
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

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tokio_echo: {e}\nusage: tokio_echo --host IP --port PORT [--threads N]");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tokio_echo: bind {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut sigint, mut sigterm) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tokio_echo: signal handlers: {e}");
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
            eprintln!("tokio_echo: local_addr: {e}");
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
                    eprintln!("tokio_echo: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    ExitCode::SUCCESS
}
