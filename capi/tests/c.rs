//! Runs the C tests in capi/tests/c: each is compiled against include/shoal.h with
//! `-Wall -Wextra -Werror -fsanitize=address,undefined`, linked to the freshly built
//! libshoal.so, and must exit 0 with no sanitizer report. One scenario also runs under
//! valgrind (no sanitizers) and must show no leak and no memory error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SANITIZE, compile_c, lib_dir, root, sanitizer_env};

fn compile(name: &str, sanitize: bool) -> PathBuf {
    let src = root().join("capi/tests/c").join(format!("{name}.c"));
    let exe = lib_dir().join("c-tests").join(if sanitize {
        name.to_owned()
    } else {
        format!("{name}-plain")
    });
    let tests_dir = root().join("capi/tests/c");
    let mut extra = vec!["-I", tests_dir.to_str().expect("a UTF-8 path")];
    if sanitize {
        extra.extend(SANITIZE);
    }
    compile_c(&src, &exe, &extra);
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
    sanitizer_env(&mut cmd);
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
fn stale_handles_from_every_thread() {
    c_test("stale_test");
}

#[test]
fn misuse_kept_pointers_bad_lengths_and_free_user_data() {
    c_test("misuse_test");
}

#[test]
fn errors_and_stale_ids() {
    c_test("errors_test");
}

#[test]
fn log_callback_that_turns_logging_off_or_is_replaced() {
    c_test("log_test");
}

#[test]
fn free_waits_out_callbacks_that_outlive_the_shutdown_grace() {
    c_test("late_callback_test");
}

#[test]
fn no_leak_under_valgrind_after_a_thousand_connections() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed; skipping (make test installs it)");
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
