//! The first frame of a connection, as the edge's handshake reads it: anything but a well-formed
//! `Hello` must be refused without a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{DEFAULT_MAX_FRAME, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(Frame::Hello { version, client })) = Frame::decode(&mut buf, DEFAULT_MAX_FRAME) {
        let _supported = version == PROTOCOL_VERSION;
        assert!(client.len() <= u16::MAX as usize);
    }
});
