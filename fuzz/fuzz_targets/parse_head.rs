//! The request head parser: prefixes of a complete head are incomplete, the head alone parses
//! the same, incomplete input stays within the head limit (see shoal_core::http::fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoal_core::http::fuzz::parse_head_properties(data);
});
