//! Pub/sub payloads from Redis: decode or fail cleanly, never allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_protocol::bus;

fuzz_target!(|data: &[u8]| {
    if let Ok((seq, msg)) = bus::decode(data) {
        let again = bus::encode(seq, &msg);
        assert_eq!(bus::decode(&again).expect("re-encoded payload decodes"), (seq, msg));
    }
});
