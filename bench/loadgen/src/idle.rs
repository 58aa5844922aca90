//! `loadgen idle`: open N connections, use each once (`--probe echo`: 64 bytes
//! echoed back; `--probe http`: one `GET /` and its whole response; `--probe
//! none`: nothing), then hold them open until stdin gives a line or reaches EOF.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::args::Opts;

const PROBE: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// A response head longer than this is taken as garbage.
const MAX_HEAD: usize = 16 * 1024;

/// What each connection does once before it idles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Echo,
    Http,
    None,
}

/// Sends one `GET /` and reads its response to the end (Content-Length framing).
fn http_probe(sock: &Socket) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut s: &Socket = sock;
    s.write_all(HTTP_REQUEST)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before a whole response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("response head too long"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 2") && !head.starts_with("http/1.0 2") {
        return Err(bad("non-2xx response"));
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| bad("response without Content-Length"))?;
    let want = end + 4 + len;
    while buf.len() < want {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed inside the body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.len() > want {
        return Err(bad("more bytes than one response"));
    }
    Ok(())
}

fn open_one(src: Ipv4Addr, dst: &SockAddr, id: usize, probe: Probe) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    // Source ports still in TIME_WAIT from earlier runs must not block bind().
    sock.set_reuse_address(true)?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
    sock.connect_timeout(dst, IO_TIMEOUT)?;
    sock.set_tcp_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    match probe {
        Probe::None => return Ok(sock),
        Probe::Http => {
            http_probe(&sock)?;
            return Ok(sock);
        }
        Probe::Echo => {}
    }
    let mut msg = [0u8; PROBE];
    for (j, b) in msg.iter_mut().enumerate() {
        *b = (id.wrapping_mul(31).wrapping_add(j)) as u8;
    }
    (&sock).write_all(&msg)?;
    let mut back = [0u8; PROBE];
    (&sock).read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "echoed bytes differ from the bytes sent",
        ));
    }
    Ok(sock)
}

/// Runs `loadgen idle`; returns the process exit code.
pub fn run(args: &[String]) -> Result<i32, String> {
    let o = Opts::parse("idle", args, &["host", "port", "conns", "sources", "probe"])?;
    let host: Ipv4Addr = o.get_or("host", Ipv4Addr::LOCALHOST)?;
    let port: u16 = o.get("port")?;
    let conns: usize = o.get("conns")?;
    let sources: u8 = o.get_or("sources", 4)?;
    if sources == 0 || sources > 254 {
        return Err("idle: --sources must be within 1..=254".into());
    }
    let probe = match o.get_or("probe", String::from("echo"))?.as_str() {
        "echo" => Probe::Echo,
        "http" => Probe::Http,
        "none" => Probe::None,
        other => {
            return Err(format!(
                "idle: --probe is echo, http or none, not {other:?}"
            ));
        }
    };
    match crate::sys::raise_nofile_limit() {
        Ok(lim) if (lim as u128) < conns as u128 + 16 => {
            eprintln!("loadgen: RLIMIT_NOFILE is {lim}: {conns} connections will not all fit");
        }
        Ok(_) => {}
        Err(e) => eprintln!("loadgen: could not raise RLIMIT_NOFILE: {e}"),
    }
    let dst = SockAddr::from(SocketAddr::from((host, port)));
    let mut open = Vec::with_capacity(conns);
    let mut errors = 0usize;
    for id in 0..conns {
        let src = Ipv4Addr::new(127, 0, 0, 1 + (id % sources as usize) as u8);
        match open_one(src, &dst, id, probe) {
            Ok(s) => open.push(s),
            Err(e) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("loadgen: connection {id} from {src}: {e}");
                }
            }
        }
    }
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "ready {}", open.len());
        let _ = out.flush();
    }
    if errors > 0 {
        eprintln!("loadgen: {errors} of {conns} connections failed");
    }
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    let opened = open.len();
    drop(open);
    Ok(if opened == 0 { 1 } else { 0 })
}
