//! The probe's one message format: a fixed-size frame, the same on every transport, so a
//! datagram, a QUIC stream chunk and a roomcast push carry a similar payload (a roomcast push of
//! a short chat line is about 100 bytes).

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes per frame: a reader of a QUIC stream reads exactly this many per delivery.
pub const FRAME_BYTES: usize = 100;

/// Nanoseconds since the Unix epoch: one clock that the server and load processes share (both
/// run on this machine), so a frame's age is its latency.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Frame of message number `seq`, stamped `sent_ns`: the stamp (8 bytes, little endian), the
/// number, then filler.
pub fn encode(seq: u64, sent_ns: u64) -> [u8; FRAME_BYTES] {
    let mut f = [0x5a; FRAME_BYTES];
    f[..8].copy_from_slice(&sent_ns.to_le_bytes());
    f[8..16].copy_from_slice(&seq.to_le_bytes());
    f
}

/// The send stamp of a frame; `None` for anything that is not a frame.
pub fn sent_ns(frame: &[u8]) -> Option<u64> {
    if frame.len() != FRAME_BYTES {
        return None;
    }
    Some(u64::from_le_bytes(frame[..8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_stamp_and_nothing_else_is_a_frame() {
        let f = encode(7, 123_456);
        assert_eq!(sent_ns(&f), Some(123_456));
        assert_eq!(sent_ns(&f[..50]), None);
    }
}
