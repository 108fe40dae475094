//! Property tests: every frame and bus message survives an encode/decode round trip, in any
//! chunking; arbitrary bytes never panic the decoders.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use roomcast_protocol::bus::{self, BusMessage};
use roomcast_protocol::codec::Frame;

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("(?s).{0,40}").unwrap()
}

fn body() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), text()).prop_map(|(version, client)| Frame::Hello { version, client }),
        (any::<u16>(), text(), text(), any::<u32>()).prop_map(
            |(version, edge, session, max_frame)| {
                Frame::Welcome {
                    version,
                    edge,
                    session,
                    max_frame,
                }
            }
        ),
        (any::<u32>(), text(), body()).prop_map(|(id, route, body)| Frame::Request {
            id,
            route,
            body
        }),
        (any::<u32>(), any::<u16>(), text(), body()).prop_map(|(id, code, message, body)| {
            Frame::Response {
                id,
                code,
                message,
                body,
            }
        }),
        (text(), body()).prop_map(|(route, body)| Frame::Notify { route, body }),
        (text(), text(), any::<u64>(), body()).prop_map(|(route, rid, seq, body)| Frame::Push {
            route,
            rid,
            seq,
            body
        }),
        (any::<u16>(), text()).prop_map(|(code, message)| Frame::Error { code, message }),
        (any::<u32>(), text(), text(), text(), text(), text(), body()).prop_map(
            |(id, route, uid, edge, session, request_key, body)| Frame::BackendRequest {
                id,
                route,
                uid,
                edge,
                session,
                request_key,
                body
            }
        ),
    ]
}

fn bus_message() -> impl Strategy<Value = BusMessage> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..100);
    prop_oneof![
        (text(), text(), bytes.clone()).prop_map(|(rid, route, body)| BusMessage::Room {
            rid,
            route,
            body
        }),
        (
            proptest::collection::vec(text(), 0..5),
            text(),
            bytes.clone()
        )
            .prop_map(|(uids, route, body)| BusMessage::Users { uids, route, body }),
        (text(), bytes).prop_map(|(route, body)| BusMessage::Broadcast { route, body }),
        text().prop_map(|rid| BusMessage::RoomDestroyed { rid }),
        text().prop_map(|reason| BusMessage::Drain { reason }),
        (text(), text(), text()).prop_map(|(uid, session, reason)| BusMessage::Kick {
            uid,
            session,
            reason
        }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_in_any_chunking(frames in proptest::collection::vec(frame(), 1..6), chunk in 1usize..64) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.put_slice(piece);
            while let Some(f) = Frame::decode(&mut buf, 1 << 20).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = Frame::decode(&mut buf, 256) {}
    }

    #[test]
    fn bus_messages_round_trip(seq in any::<u64>(), msg in bus_message()) {
        prop_assert_eq!(bus::decode(&bus::encode(seq, &msg)).unwrap(), (seq, msg));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_bus_decoder(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = bus::decode(&data);
    }
}
