//! Client and backend frames: arbitrary bytes, fed in arbitrary chunks, must decode or fail
//! cleanly; whatever decodes must re-encode to the same bytes.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use roomcast_protocol::codec::Frame;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, the rest is the stream.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let max = 4096;
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in stream.chunks(chunk) {
        buf.put_slice(piece);
        loop {
            let before = buf.len();
            match Frame::decode(&mut buf, max) {
                Ok(Some(frame)) => {
                    let used = before - buf.len();
                    let again = frame.to_bytes().expect("decoded frames re-encode");
                    assert_eq!(&again[..], &stream[consumed..consumed + used]);
                    consumed += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= max + 4 + chunk, "decoder buffered past the frame limit");
    }
});
