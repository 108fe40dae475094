//! What crosses each hop of the multi-hop probe: the requests on the QUIC streams, the Redis
//! key and channel names, and the one Lua script. One place, so the edge, the backend and the
//! clients cannot disagree.
//!
//! A request is one bidirectional stream, finished by the client: a tag byte, the room (u32,
//! little endian), and for a message the 100-byte frame. Answers: a join gets one byte (1),
//! a message its room's seq (u64, little endian). Same bytes on the client → edge and the
//! edge → backend hops (the edge forwards them unchanged).

use anyhow::{bail, Result};

use super::super::frame::FRAME_BYTES;

const JOIN: u8 = b'J';
const SEND: u8 = b'M';

/// The longest request (a message); reads of a request stop there.
pub const MAX_REQUEST: usize = 1 + 4 + FRAME_BYTES;
/// The longest answer (a seq).
pub const MAX_ANSWER: usize = 8;

/// Where in the frame the room is written (after the stamp and the seq): a member learns its
/// room from its first frame, which is how the probe checks that every member got every
/// message of its room.
const ROOM_AT: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Join { room: usize },
    Send { room: usize, frame: &'a [u8] },
}

pub fn join(room: usize) -> Vec<u8> {
    let mut r = vec![JOIN];
    r.extend_from_slice(&(room as u32).to_le_bytes());
    r
}

/// A message to `room`, its frame stamped `sent_ns` (the seq is written in by the script).
pub fn send(room: usize, sent_ns: u64) -> Vec<u8> {
    let mut f = super::super::frame::encode(0, sent_ns);
    f[ROOM_AT..ROOM_AT + 8].copy_from_slice(&(room as u64).to_le_bytes());
    let mut r = Vec::with_capacity(MAX_REQUEST);
    r.push(SEND);
    r.extend_from_slice(&(room as u32).to_le_bytes());
    r.extend_from_slice(&f);
    r
}

/// Parses a request for a server with `rooms` rooms; anything else is an error (the stream is
/// then reset, nothing panics).
pub fn parse(req: &[u8], rooms: usize) -> Result<Request<'_>> {
    let (Some(&tag), Some(room)) = (req.first(), req.get(1..5)) else {
        bail!("short request ({} bytes)", req.len());
    };
    let room = u32::from_le_bytes(room.try_into()?) as usize;
    if room >= rooms {
        bail!("room {room} out of 0..{rooms}");
    }
    match (tag, &req[5..]) {
        (JOIN, []) => Ok(Request::Join { room }),
        (SEND, frame) if frame.len() == FRAME_BYTES => Ok(Request::Send { room, frame }),
        _ => bail!("bad request (tag {tag}, {} bytes)", req.len()),
    }
}

/// The room a frame says it belongs to.
pub fn room_of(frame: &[u8]) -> Option<usize> {
    let b = frame.get(ROOM_AT..ROOM_AT + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?) as usize)
}

/// The seq in an answer to a message.
pub fn seq_of(answer: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(answer.try_into().ok()?))
}

/// The room's seq counter (the script INCRs it).
pub fn seq_key(room: usize) -> String {
    format!("floor:room:{room}:seq")
}

/// The room's pub/sub channel.
pub fn channel(room: usize) -> String {
    format!("floor:room:{room}")
}

/// The room of a channel named by [`channel`].
pub fn room_of_channel(name: &str) -> Option<usize> {
    name.strip_prefix("floor:room:")?.parse().ok()
}

/// The minimal room push: INCR the room's seq, PUBLISH the frame with the seq in bytes 8..16
/// (little endian, as [`super::super::frame::encode`] writes it) to the room's channel,
/// return the seq. KEYS: seq key, channel; ARGV: the frame. One `EVALSHA`, as roomcast's
/// room push is one.
pub const SCRIPT: &str = "local s = redis.call('INCR', KEYS[1]) \
     redis.call('PUBLISH', KEYS[2], string.sub(ARGV[1], 1, 8) .. struct.pack('<I8', s) .. string.sub(ARGV[1], 17)) \
     return s";

/// Runs [`SCRIPT`] for a message to `room` (EVALSHA; loaded first when Redis answers
/// NOSCRIPT): the room's new seq.
pub async fn push(
    script: &redis::Script,
    conn: &mut redis::aio::ConnectionManager,
    room: usize,
    frame: &[u8],
) -> Result<u64> {
    Ok(script
        .key(seq_key(room))
        .key(channel(room))
        .arg(frame)
        .invoke_async(conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_errors() {
        assert_eq!(parse(&join(3), 10).unwrap(), Request::Join { room: 3 });
        let s = send(7, 42);
        match parse(&s, 10).unwrap() {
            Request::Send { room, frame } => {
                assert_eq!(room, 7);
                assert_eq!(room_of(frame), Some(7));
                assert_eq!(super::super::super::frame::sent_ns(frame), Some(42));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&join(10), 10).is_err());
        assert!(parse(&s[..50], 10).is_err());
        assert!(parse(b"", 10).is_err());
        assert!(parse(b"X\0\0\0\0", 10).is_err());
        assert_eq!(room_of_channel(&channel(4)), Some(4));
    }
}
