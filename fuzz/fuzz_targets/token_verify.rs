//! Client tokens: arbitrary strings are refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_common::auth::Verifier;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = Verifier::hs256(b"fuzz secret").verify(token);
    }
});
