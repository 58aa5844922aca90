//! The chunked body decoder: the first two bytes choose where the rest is cut; cutting
//! changes nothing (see shoal_core::http::fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoal_core::http::fuzz::chunked_properties(data);
});
