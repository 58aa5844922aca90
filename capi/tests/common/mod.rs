//! Helpers shared by the tests that compile C against libshoal (c.rs, examples.rs,
//! install.rs): where the repository and the freshly built library are, and running C
//! programs with the sanitizers' settings. Each test crate uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("capi/ has a parent")
        .to_path_buf()
}

/// The directory holding libshoal.so and libshoal.a for this build. `cargo test` builds the
/// library as an rlib only, so the shared library is brought up to date here (a no-op when it
/// already is).
pub fn lib_dir() -> &'static Path {
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

/// The warnings every C file here must compile without.
pub const C_WARNINGS: [&str; 5] = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror"];

/// The sanitizer flags of the test builds.
pub const SANITIZE: [&str; 2] = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"];

/// Compiles `src` into `exe` against include/shoal.h and this build's libshoal.so (found
/// through an rpath), with [`C_WARNINGS`], `-g -O1` and `extra` flags; panics with the
/// compiler's output on failure.
pub fn compile_c(src: &Path, exe: &Path, extra: &[&str]) {
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let mut cmd = Command::new("cc");
    cmd.args(C_WARNINGS)
        .args(["-g", "-O1"])
        .args(extra)
        .arg("-I")
        .arg(root().join("include"))
        .arg(src)
        .arg("-o")
        .arg(exe)
        .arg("-L")
        .arg(lib_dir())
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
        .args(["-lshoal", "-lpthread"]);
    let out = cmd.output().expect("cc runs");
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets the sanitizers' options on `cmd`: leak checking on, UBSan reports fatal.
pub fn sanitizer_env(cmd: &mut Command) -> &mut Command {
    cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
}

/// The first sanitizer report in a program's stderr, if any.
pub fn sanitizer_report(stderr: &str) -> Option<&str> {
    [
        "ERROR: AddressSanitizer",
        "ERROR: LeakSanitizer",
        "runtime error:",
        "SUMMARY: ",
    ]
    .iter()
    .find_map(|marker| stderr.find(marker).map(|i| &stderr[i..]))
}
