//! Gives the shared library its SONAME (plain cargo sets none), so programs linked against
//! `libshoal.so` record `libshoal.so.0` and keep working across compatible releases.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libshoal.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
