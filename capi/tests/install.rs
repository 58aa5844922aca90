//! `make install PREFIX=<temp dir>`, then the installed files as a C user sees them: the
//! versioned shared library with its symlinks and SONAME, the static library, the header and
//! the pkg-config file; examples/c/echo.c built with `pkg-config --cflags --libs shoal` and run
//! against the installed libshoal.so, then linked statically (with `pkg-config --static`) and
//! run with no libshoal.so at all. Skipped, with a message, when `make` or `pkg-config` is
//! missing (`make test` installs pkg-config first: capi/tests/install-test-tools.sh).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{C_WARNINGS, root};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAJOR: &str = env!("CARGO_PKG_VERSION_MAJOR");

fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("shoal-install-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("shoal")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config runs");
    let text = check(out, &format!("pkg-config {args:?} shoal"));
    text.split_whitespace().map(str::to_owned).collect()
}

/// The dynamic section of an ELF file, from readelf (or objdump).
fn dynamic_section(file: &Path) -> String {
    if let Ok(out) = Command::new("readelf").arg("-d").arg(file).output() {
        return check(out, "readelf -d");
    }
    let out = Command::new("objdump")
        .arg("-p")
        .arg(file)
        .output()
        .expect("readelf or objdump is installed (binutils)");
    check(out, "objdump -p")
}

fn cc(args: &[String], what: &str) {
    let out = Command::new("cc").args(args).output().expect("cc runs");
    check(out, what);
}

/// Runs the echo example (`env` added to its environment) and does one round trip; returns
/// the shared objects it had mapped.
fn run_echo(exe: &Path, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(exe);
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = KillOnDrop(cmd.spawn().expect("start echo"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let port: u16 = line
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            let _ = child.0.kill();
            let mut err = String::new();
            let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!(
                "{}: no `listening on` line (got {line:?}):\n{err}",
                exe.display()
            )
        });
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.0.id())).unwrap();

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"installed and linked").unwrap();
    let mut buf = [0u8; 20];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"installed and linked");
    drop(s);

    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill() only sends a signal; `pid` is our own child, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "echo did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "echo exited with {status}");
    maps
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn make_install_then_build_with_pkg_config() {
    for tool in ["make", "pkg-config"] {
        if !available(tool) {
            eprintln!("SKIPPED: `{tool}` is not installed; the install test needs it");
            return;
        }
    }
    let tmp = TempDir::new();
    let prefix = tmp.0.join("prefix");
    let out = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("install")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("CARGO={}", env!("CARGO")))
        // A prefix under a temporary directory: the system's loader cache is none of its
        // business.
        .arg("LDCONFIG=")
        .stdin(Stdio::null())
        .output()
        .expect("make runs");
    check(out, "make install");

    // The files, the symlink chain and the SONAME.
    let lib = prefix.join("lib");
    let real = lib.join(format!("libshoal.so.{VERSION}"));
    assert!(std::fs::symlink_metadata(&real).unwrap().is_file());
    let link = |name: &str| std::fs::read_link(lib.join(name)).unwrap();
    assert_eq!(
        link(&format!("libshoal.so.{MAJOR}")),
        PathBuf::from(format!("libshoal.so.{VERSION}"))
    );
    assert_eq!(
        link("libshoal.so"),
        PathBuf::from(format!("libshoal.so.{MAJOR}"))
    );
    assert!(lib.join("libshoal.a").is_file());
    assert_eq!(
        std::fs::read(prefix.join("include/shoal.h")).unwrap(),
        std::fs::read(root().join("include/shoal.h")).unwrap()
    );
    let pc = std::fs::read_to_string(lib.join("pkgconfig/shoal.pc")).unwrap();
    assert!(
        pc.contains(&format!("prefix={}\n", prefix.display())),
        "{pc}"
    );
    assert!(pc.contains(&format!("Version: {VERSION}\n")), "{pc}");
    let dynamic = dynamic_section(&real);
    let soname = dynamic
        .lines()
        .find(|l| l.contains("SONAME"))
        .unwrap_or_else(|| panic!("no SONAME:\n{dynamic}"));
    assert!(
        soname.contains(&format!("libshoal.so.{MAJOR}")) && !soname.contains(VERSION),
        "{soname}"
    );

    let echo = root().join("examples/c/echo.c");
    let src = echo.to_str().unwrap().to_owned();
    let warnings: Vec<String> = C_WARNINGS.iter().map(|s| s.to_string()).collect();

    // Dynamically linked, found through LD_LIBRARY_PATH.
    let shared = tmp.0.join("echo-shared");
    let mut args = warnings.clone();
    args.extend([
        "-O2".into(),
        src.clone(),
        "-o".into(),
        shared.display().to_string(),
    ]);
    args.extend(pkg_config(&prefix, &["--cflags", "--libs"]));
    cc(&args, "cc with pkg-config --cflags --libs shoal");
    let needed = dynamic_section(&shared);
    assert!(
        needed.contains(&format!("libshoal.so.{MAJOR}")),
        "echo does not need libshoal.so.{MAJOR}:\n{needed}"
    );
    let maps = run_echo(&shared, &[("LD_LIBRARY_PATH", &lib)]);
    assert!(
        maps.contains(&real.display().to_string()),
        "echo did not load the installed library:\n{maps}"
    );

    // Statically linked against libshoal.a, with the libraries `--static` adds.
    let stat = tmp.0.join("echo-static");
    let mut args = warnings;
    args.extend(["-O2".into(), src, "-o".into(), stat.display().to_string()]);
    args.extend(pkg_config(&prefix, &["--cflags"]));
    for flag in pkg_config(&prefix, &["--static", "--libs"]) {
        // Name the archive itself: `-lshoal` would pick the shared library next to it.
        args.push(if flag == "-lshoal" {
            lib.join("libshoal.a").display().to_string()
        } else {
            flag
        });
    }
    cc(
        &args,
        "cc with libshoal.a and pkg-config --static --libs shoal",
    );
    let needed = dynamic_section(&stat);
    assert!(
        !needed.contains("libshoal"),
        "the static build still needs libshoal:\n{needed}"
    );
    let maps = run_echo(&stat, &[]);
    assert!(!maps.contains("libshoal"), "{maps}");
}
