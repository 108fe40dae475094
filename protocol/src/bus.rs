//! Messages edges receive through Redis pub/sub.
//!
//! Payload layout (`ARCHITECTURE.md` has it too):
//!
//! ```text
//! 'R'  version:u8 (=1)  seq:u64be  bincode(BusMessage)
//! ```
//!
//! The header is fixed-size so that the Lua script that assigns a room's sequence number can
//! prepend it without understanding bincode: room pushes carry the seq Redis assigned (starting
//! at 1), everything else carries 0.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes before the bincode body.
pub const HEADER_LEN: usize = 10;
const MAGIC: u8 = b'R';
const VERSION: u8 = 1;
/// Largest bus payload an edge decodes; a larger one is dropped with an error log, so a bad
/// publisher cannot make an edge allocate without bound.
pub const MAX_BUS_PAYLOAD: usize = 16 * 1024 * 1024;

/// What a backend (or an edge) asks edges to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BusMessage {
    /// To every local member of `rid` that joined before this message's seq.
    Room {
        rid: String,
        route: String,
        body: Vec<u8>,
    },
    /// To the listed uids on the receiving edge (published on that edge's channel).
    Users {
        uids: Vec<String>,
        route: String,
        body: Vec<u8>,
    },
    /// To every session of every edge.
    Broadcast { route: String, body: Vec<u8> },
    /// The room was destroyed by a backend: edges drop their local members of it.
    RoomDestroyed { rid: String },
    /// Drain the receiving edge (the admin command `roomcast-edge drain`).
    Drain { reason: String },
    /// Close the local session `session` of `uid`: another connection resumed it.
    Kick {
        uid: String,
        session: String,
        reason: String,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus payload shorter than its {HEADER_LEN}-byte header")]
    Short,
    #[error("bus payload with bad magic or version")]
    BadHeader,
    #[error("bus payload of {0} bytes exceeds {MAX_BUS_PAYLOAD}")]
    TooLarge(usize),
    #[error("undecodable bus body: {0}")]
    Body(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BUS_PAYLOAD>()
}

/// The bincode body alone (what Lua scripts prefix with a header carrying the seq).
pub fn encode_body(msg: &BusMessage) -> Vec<u8> {
    bincode::serde::encode_to_vec(msg, config()).expect("bus messages always encode")
}

/// A complete payload with the given seq.
pub fn encode(seq: u64, msg: &BusMessage) -> Vec<u8> {
    let body = encode_body(msg);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a payload into its seq and message.
pub fn decode(payload: &[u8]) -> Result<(u64, BusMessage), BusError> {
    if payload.len() > MAX_BUS_PAYLOAD {
        return Err(BusError::TooLarge(payload.len()));
    }
    if payload.len() < HEADER_LEN {
        return Err(BusError::Short);
    }
    if payload[0] != MAGIC || payload[1] != VERSION {
        return Err(BusError::BadHeader);
    }
    let seq = u64::from_be_bytes(payload[2..10].try_into().expect("8 bytes"));
    let (msg, used) = bincode::serde::decode_from_slice(&payload[HEADER_LEN..], config())
        .map_err(|e| BusError::Body(e.to_string()))?;
    if used != payload.len() - HEADER_LEN {
        return Err(BusError::Body("trailing bytes".into()));
    }
    Ok((seq, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msgs = [
            BusMessage::Room {
                rid: "lobby".into(),
                route: "onChat".into(),
                body: b"{}".to_vec(),
            },
            BusMessage::Users {
                uids: vec!["a".into(), "b".into()],
                route: "onChat".into(),
                body: vec![0, 1, 2],
            },
            BusMessage::Broadcast {
                route: "x".into(),
                body: vec![],
            },
            BusMessage::RoomDestroyed { rid: "r".into() },
        ];
        for (i, m) in msgs.iter().enumerate() {
            let p = encode(i as u64 + 1, m);
            assert_eq!(decode(&p).unwrap(), (i as u64 + 1, m.clone()));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(decode(b"R"), Err(BusError::Short));
        assert_eq!(decode(b"X\x01\0\0\0\0\0\0\0\0\0"), Err(BusError::BadHeader));
        assert!(matches!(
            decode(b"R\x01\0\0\0\0\0\0\0\x01\xff\xff\xff\xff"),
            Err(BusError::Body(_))
        ));
        // A huge declared vector length must not allocate.
        let mut p = b"R\x01\0\0\0\0\0\0\0\x01".to_vec();
        p.extend_from_slice(&[0x02, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode(&p).is_err());
    }
}
