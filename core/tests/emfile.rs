//! Descriptor exhaustion: a server whose process runs out of descriptors must neither spin
//! nor die, and must serve again once descriptors free up.
//!
//! The server runs in a child process (this test binary re-executed with `SHOAL_EMFILE_CHILD`)
//! whose `RLIMIT_NOFILE` is lowered to 64, so the limit cannot disturb the test's own clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_core::{Config, Conn, Handler, Server};

const FD_LIMIT: u64 = 64;

struct Echo;

impl Handler for Echo {
    type State = ();
    fn on_data(&self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let _ = conn.write(data);
        data.len()
    }
}

fn child() {
    let lim = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    // SAFETY: `lim` is a valid, initialized rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit");
    let reuse_port = std::env::var("SHOAL_EMFILE_CHILD").unwrap() == "reuse_port";
    let config = Config::new("127.0.0.1:0".parse().unwrap())
        .threads(2)
        .reuse_port(reuse_port)
        .accept_backoff(Duration::from_millis(100));
    let server = Server::bind(config, Echo).unwrap();
    let handle = server.handle();
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    let stopper = std::thread::spawn(move || {
        // Runs until the parent closes stdin.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let st = handle.stats();
        println!(
            "stats accepted={} paused_emfile={}",
            st.accepted, st.accept_paused_emfile
        );
        handle.stop();
    });
    server.run().unwrap();
    stopper.join().unwrap();
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn echoes(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut b = [0u8; 4];
    s.read_exact(&mut b).is_ok() && &b == b"ping"
}

fn parent(mode: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env("SHOAL_EMFILE_CHILD", mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();

    // Twice as many clients as the child has descriptors: the surplus waits in the backlog.
    let mut clients: Vec<TcpStream> = (0..2 * FD_LIMIT)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let served = clients
        .iter_mut()
        .filter_map(|c| echoes(c, Duration::from_millis(100)).then_some(()))
        .count();
    assert!(
        served > 0 && served < clients.len(),
        "served {served} of {}",
        clients.len()
    );

    // Exhausted: the server must idle, not spin on accept.
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    assert!(
        used < 0.2,
        "server used {:.0}% of a core while out of descriptors",
        used * 100.0
    );

    // Free descriptors: the waiting clients get served.
    clients.truncate(0);
    std::thread::sleep(Duration::from_millis(300));
    let mut fresh: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in &mut fresh {
        assert!(echoes(c, Duration::from_secs(5)), "served after recovery");
    }
    drop(fresh);

    drop(child.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child exited with {status}");
    let paused: u64 = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("paused_emfile="))
        .and_then(|v| v.parse().ok())
        .expect("child printed its stats");
    assert!(paused >= 1, "accept paused on EMFILE: {rest}");
    println!(
        "{mode}: served {served} while exhausted, cpu {:.1}%, {rest}",
        used * 100.0
    );
}

fn main() {
    if std::env::var_os("SHOAL_EMFILE_CHILD").is_some() {
        child();
        return;
    }
    // Honour `cargo test -- --list` and name filters the way libtest does.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("emfile: test");
        return;
    }
    for mode in ["reuse_port", "shared_listener"] {
        parent(mode);
    }
    println!("test result: ok. emfile");
}
