//! The committed header is what cbindgen makes of the sources, compiles on its own as C11 and
//! as C++17 with every warning an error, and states the same version as the crate and
//! `shoal_version()`.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn header_path() -> PathBuf {
    root().join("include").join("shoal.h")
}

fn generate() -> Vec<u8> {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml"))
        .expect("read capi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn header_matches_the_sources() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("SHOAL_WRITE_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write include/shoal.h");
        return;
    }
    let committed = std::fs::read(&path).expect("include/shoal.h exists (run `make header`)");
    assert!(
        committed == fresh,
        "include/shoal.h differs from what capi/src generates: run `make header` and commit it"
    );
}

#[test]
fn header_compiles_alone_as_c_and_cpp() {
    for (compiler, lang, std) in [("cc", "c", "-std=c11"), ("c++", "c++", "-std=c++17")] {
        let out = Command::new(compiler)
            .args(["-x", lang, std, "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg("-fsyntax-only")
            .arg(header_path())
            .output()
            .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
        assert!(
            out.status.success(),
            "{compiler} rejects include/shoal.h:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn define(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("{name} defined in the header"))
        .trim()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn version_agrees_in_header_library_and_crate() {
    let header = std::fs::read_to_string(header_path()).unwrap();
    assert_eq!(
        define(&header, "SHOAL_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert_eq!(
        define(&header, "SHOAL_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    assert_eq!(
        define(&header, "SHOAL_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    assert_eq!(
        define(&header, "SHOAL_VERSION_STRING"),
        env!("CARGO_PKG_VERSION")
    );
    // SAFETY: shoal_version returns a static NUL-terminated string.
    let lib = unsafe { std::ffi::CStr::from_ptr(shoal::shoal_version()) };
    assert_eq!(lib.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_exported_function_is_documented_in_the_header() {
    let header = std::fs::read_to_string(header_path()).unwrap();
    let lines: Vec<&str> = header.lines().collect();
    let mut undocumented = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("shoal_").filter(|_| l.contains('(')))
        else {
            continue;
        };
        if l.starts_with(' ') || l.starts_with('#') || l.starts_with('*') || l.starts_with("/") {
            continue;
        }
        // Walk back over the declaration's first line to its comment.
        let prev = lines[..i].iter().rev().find(|p| !p.trim().is_empty());
        if !prev.is_some_and(|p| p.trim_end().ends_with("*/")) {
            undocumented.push(name.split('(').next().unwrap_or(name).to_owned());
        }
    }
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
}
