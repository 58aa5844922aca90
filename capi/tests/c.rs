//! Runs the C tests in capi/tests/c: each is compiled against include/shoal.h with
//! `-Wall -Wextra -Werror -fsanitize=address,undefined`, linked to the freshly built
//! libshoal.so, and must exit 0 with no sanitizer report. One scenario also runs under
//! valgrind (no sanitizers) and must show no leak and no memory error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding libshoal.so and libshoal.a for this build. `cargo test` builds the
/// library as an rlib only, so the shared library is brought up to date here (a no-op when it
/// already is).
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/c-xxxx -> target/<profile>
        let mut dir = std::env::current_exe().unwrap();
        dir.pop();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "shoal-capi", "--lib"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo builds libshoal");
        assert!(st.success());
        assert!(
            dir.join("libshoal.so").exists(),
            "no libshoal.so in {dir:?}"
        );
        // Programs linked to it record its SONAME, libshoal.so.<major>: provide that name.
        let soname = dir.join(format!("libshoal.so.{}", env!("CARGO_PKG_VERSION_MAJOR")));
        let _ = std::fs::remove_file(&soname);
        std::os::unix::fs::symlink("libshoal.so", &soname).expect("symlink the SONAME");
        dir
    })
}

fn compile(name: &str, sanitize: bool) -> PathBuf {
    let src = root().join("capi/tests/c").join(format!("{name}.c"));
    let out_dir = lib_dir().join("c-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(if sanitize {
        name.to_owned()
    } else {
        format!("{name}-plain")
    });
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
        "-O1",
    ]);
    if sanitize {
        cmd.args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]);
    }
    cmd.arg("-I")
        .arg(root().join("include"))
        .arg("-I")
        .arg(root().join("capi/tests/c"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir())
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
        .args(["-lshoal", "-lpthread"]);
    let out = cmd.output().expect("cc runs");
    assert!(
        out.status.success(),
        "compiling {name}.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(exe: &Path, wrapper: &[&str]) {
    let mut cmd = if wrapper.is_empty() {
        Command::new(exe)
    } else {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(exe);
        c
    };
    // Leak checking on; UBSan reports are fatal.
    cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    let out = cmd.output().expect("test runs");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn c_test(name: &str) {
    let exe = compile(name, true);
    run(&exe, &[]);
}

#[test]
fn stream_server() {
    c_test("stream_test");
}

#[test]
fn http_server() {
    c_test("http_test");
}

#[test]
fn errors_and_stale_ids() {
    c_test("errors_test");
}

#[test]
fn no_leak_under_valgrind_after_a_thousand_connections() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed; skipping (it is on the CI machines)");
        return;
    }
    let exe = compile("leak_test", false);
    run(
        &exe,
        &[
            "valgrind",
            "--quiet",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=1",
        ],
    );
}
