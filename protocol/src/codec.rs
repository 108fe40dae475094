//! The frame format spoken on every roomcast QUIC stream (client ↔ edge and edge ↔ backend).
//!
//! Plain code without IO: [`Frame::encode`] appends bytes to a buffer, [`Frame::decode`] takes
//! complete frames off the front of a buffer and leaves partial ones for later. `PROTOCOL.md`
//! specifies the layout byte by byte:
//!
//! ```text
//! frame  = length:u32be  type:u8  payload      (length counts type + payload)
//! str    = len:u16be  utf8-bytes
//! body   = the rest of the frame (opaque bytes)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::protocol::code;

/// Frame type bytes. Values are part of the wire protocol; never reuse one.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const REQUEST: u8 = 0x03;
    pub const RESPONSE: u8 = 0x04;
    pub const NOTIFY: u8 = 0x05;
    pub const PUSH: u8 = 0x06;
    pub const ERROR: u8 = 0x07;
    pub const BACKEND_REQUEST: u8 = 0x10;
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a connection, on the client's first bidirectional stream.
    Hello { version: u16, client: String },
    /// The edge's answer to `Hello`; the stream stays open as the control stream.
    Welcome {
        version: u16,
        edge: String,
        session: String,
        max_frame: u32,
    },
    /// A request expecting exactly one `Response` on the same stream.
    Request { id: u32, route: String, body: Bytes },
    /// The answer to a `Request` (or to a `BackendRequest`). `message` is empty on success.
    Response {
        id: u32,
        code: u16,
        message: String,
        body: Bytes,
    },
    /// A one-way message from the client; nothing is answered.
    Notify { route: String, body: Bytes },
    /// A server push. `rid` is empty and `seq` is 0 for pushes that are not room messages.
    Push {
        route: String,
        rid: String,
        seq: u64,
        body: Bytes,
    },
    /// A fatal error for the stream it arrives on (or the connection, on the control stream).
    Error { code: u16, message: String },
    /// A client request forwarded by an edge to a backend, with the session it came from.
    BackendRequest {
        id: u32,
        route: String,
        uid: String,
        edge: String,
        session: String,
        /// Unique per client request; backends use it to make retries idempotent.
        request_key: String,
        body: Bytes,
    },
}

/// Why bytes could not be decoded. Each maps to a status code a client understands.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame (length 0)")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("truncated frame: field `{0}` runs past the end of the frame")]
    Truncated(&'static str),
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("field `{0}` is longer than 65535 bytes")]
    FieldTooLong(&'static str),
    #[error("{0} bytes after the last field of a {1} frame")]
    TrailingBytes(usize, &'static str),
}

impl CodecError {
    /// The status code to report this error with.
    pub fn status(&self) -> u16 {
        match self {
            CodecError::TooLarge { .. } => code::FRAME_TOO_LARGE,
            CodecError::FieldTooLong(_) => code::FRAME_TOO_LARGE,
            _ => code::MALFORMED_FRAME,
        }
    }
}

impl Frame {
    /// Appends the encoded frame to `out`. Fails only when a string field exceeds 65535 bytes.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        let start = out.len();
        out.put_u32(0); // patched below
        match self {
            Frame::Hello { version, client } => {
                out.put_u8(kind::HELLO);
                out.put_u16(*version);
                put_str(out, client, "client")?;
            }
            Frame::Welcome {
                version,
                edge,
                session,
                max_frame,
            } => {
                out.put_u8(kind::WELCOME);
                out.put_u16(*version);
                put_str(out, edge, "edge")?;
                put_str(out, session, "session")?;
                out.put_u32(*max_frame);
            }
            Frame::Request { id, route, body } => {
                out.put_u8(kind::REQUEST);
                out.put_u32(*id);
                put_str(out, route, "route")?;
                out.put_slice(body);
            }
            Frame::Response {
                id,
                code,
                message,
                body,
            } => {
                out.put_u8(kind::RESPONSE);
                out.put_u32(*id);
                out.put_u16(*code);
                put_str(out, message, "message")?;
                out.put_slice(body);
            }
            Frame::Notify { route, body } => {
                out.put_u8(kind::NOTIFY);
                put_str(out, route, "route")?;
                out.put_slice(body);
            }
            Frame::Push {
                route,
                rid,
                seq,
                body,
            } => {
                out.put_u8(kind::PUSH);
                put_str(out, route, "route")?;
                put_str(out, rid, "rid")?;
                out.put_u64(*seq);
                out.put_slice(body);
            }
            Frame::Error { code, message } => {
                out.put_u8(kind::ERROR);
                out.put_u16(*code);
                put_str(out, message, "message")?;
            }
            Frame::BackendRequest {
                id,
                route,
                uid,
                edge,
                session,
                request_key,
                body,
            } => {
                out.put_u8(kind::BACKEND_REQUEST);
                out.put_u32(*id);
                put_str(out, route, "route")?;
                put_str(out, uid, "uid")?;
                put_str(out, edge, "edge")?;
                put_str(out, session, "session")?;
                put_str(out, request_key, "request_key")?;
                out.put_slice(body);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Encodes into a fresh, shareable buffer (the edge encodes a push once and hands the same
    /// `Bytes` to every local recipient).
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Takes one complete frame off the front of `buf`. `Ok(None)` means more bytes are needed.
    /// A length above `max` fails at once, before the frame's bytes arrive, so a peer cannot
    /// make us buffer more than `max + 4` bytes.
    pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, CodecError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        check_len(len, max)?;
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let payload = buf.split_to(len).freeze();
        Frame::decode_payload(payload).map(Some)
    }

    /// Decodes a frame from its payload (type byte onwards), the length prefix already removed.
    pub fn decode_payload(mut p: Bytes) -> Result<Frame, CodecError> {
        if p.is_empty() {
            return Err(CodecError::Empty);
        }
        let ty = p.get_u8();
        let frame = match ty {
            kind::HELLO => Frame::Hello {
                version: get_u16(&mut p, "version")?,
                client: get_str(&mut p, "client")?,
            },
            kind::WELCOME => Frame::Welcome {
                version: get_u16(&mut p, "version")?,
                edge: get_str(&mut p, "edge")?,
                session: get_str(&mut p, "session")?,
                max_frame: get_u32(&mut p, "max_frame")?,
            },
            kind::REQUEST => Frame::Request {
                id: get_u32(&mut p, "id")?,
                route: get_str(&mut p, "route")?,
                body: p.split_off(0),
            },
            kind::RESPONSE => Frame::Response {
                id: get_u32(&mut p, "id")?,
                code: get_u16(&mut p, "code")?,
                message: get_str(&mut p, "message")?,
                body: p.split_off(0),
            },
            kind::NOTIFY => Frame::Notify {
                route: get_str(&mut p, "route")?,
                body: p.split_off(0),
            },
            kind::PUSH => Frame::Push {
                route: get_str(&mut p, "route")?,
                rid: get_str(&mut p, "rid")?,
                seq: get_u64(&mut p, "seq")?,
                body: p.split_off(0),
            },
            kind::ERROR => Frame::Error {
                code: get_u16(&mut p, "code")?,
                message: get_str(&mut p, "message")?,
            },
            kind::BACKEND_REQUEST => Frame::BackendRequest {
                id: get_u32(&mut p, "id")?,
                route: get_str(&mut p, "route")?,
                uid: get_str(&mut p, "uid")?,
                edge: get_str(&mut p, "edge")?,
                session: get_str(&mut p, "session")?,
                request_key: get_str(&mut p, "request_key")?,
                body: p.split_off(0),
            },
            other => return Err(CodecError::UnknownType(other)),
        };
        // Frames without a body end with their last field: anything after it is an error, so
        // that every accepted frame has exactly one encoding.
        if !p.is_empty() {
            return Err(CodecError::TrailingBytes(p.len(), frame.name()));
        }
        Ok(frame)
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Request { .. } => "Request",
            Frame::Response { .. } => "Response",
            Frame::Notify { .. } => "Notify",
            Frame::Push { .. } => "Push",
            Frame::Error { .. } => "Error",
            Frame::BackendRequest { .. } => "BackendRequest",
        }
    }

    /// A response frame carrying an error.
    pub fn error_response(id: u32, code: u16, message: impl Into<String>) -> Frame {
        Frame::Response {
            id,
            code,
            message: message.into(),
            body: Bytes::new(),
        }
    }
}

/// Validates a length prefix against the limit.
pub fn check_len(len: usize, max: usize) -> Result<(), CodecError> {
    if len == 0 {
        return Err(CodecError::Empty);
    }
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    Ok(())
}

fn put_str(out: &mut BytesMut, s: &str, field: &'static str) -> Result<(), CodecError> {
    let len = u16::try_from(s.len()).map_err(|_| CodecError::FieldTooLong(field))?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn get_u16(p: &mut Bytes, field: &'static str) -> Result<u16, CodecError> {
    p.try_get_u16().map_err(|_| CodecError::Truncated(field))
}

fn get_u32(p: &mut Bytes, field: &'static str) -> Result<u32, CodecError> {
    p.try_get_u32().map_err(|_| CodecError::Truncated(field))
}

fn get_u64(p: &mut Bytes, field: &'static str) -> Result<u64, CodecError> {
    p.try_get_u64().map_err(|_| CodecError::Truncated(field))
}

fn get_str(p: &mut Bytes, field: &'static str) -> Result<String, CodecError> {
    let len = get_u16(p, field)? as usize;
    if p.len() < len {
        return Err(CodecError::Truncated(field));
    }
    let raw = p.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| CodecError::InvalidUtf8(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: 1,
                client: "sdk/0.1".into(),
            },
            Frame::Welcome {
                version: 1,
                edge: "edge-1".into(),
                session: "s1".into(),
                max_frame: 65536,
            },
            Frame::Request {
                id: 7,
                route: "chat.send".into(),
                body: Bytes::from_static(b"{\"rid\":\"lobby\"}"),
            },
            Frame::Response {
                id: 7,
                code: 200,
                message: String::new(),
                body: Bytes::new(),
            },
            Frame::Notify {
                route: "x.y".into(),
                body: Bytes::from_static(b"\x00\xff"),
            },
            Frame::Push {
                route: "onChat".into(),
                rid: "lobby {1}: *".into(),
                seq: u64::MAX,
                body: Bytes::from_static(b"hi"),
            },
            Frame::Error {
                code: 413,
                message: "too big".into(),
            },
            Frame::BackendRequest {
                id: 1,
                route: "chat.send".into(),
                uid: "alice".into(),
                edge: "e1".into(),
                session: "s".into(),
                request_key: "e1/s/1".into(),
                body: Bytes::from_static(b"{}"),
            },
        ]
    }

    #[test]
    fn round_trip_every_frame() {
        for f in samples() {
            let mut buf = BytesMut::new();
            f.encode(&mut buf).unwrap();
            let got = Frame::decode(&mut buf, DEFAULT_MAX).unwrap().unwrap();
            assert_eq!(got, f);
            assert!(buf.is_empty());
        }
    }

    const DEFAULT_MAX: usize = crate::protocol::DEFAULT_MAX_FRAME;

    #[test]
    fn decodes_byte_by_byte_and_back_to_back() {
        let mut wire = BytesMut::new();
        for f in samples() {
            f.encode(&mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = Frame::decode(&mut buf, DEFAULT_MAX).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, samples());
    }

    #[test]
    fn exact_wire_layout_of_a_request() {
        let f = Frame::Request {
            id: 0x01020304,
            route: "a.b".into(),
            body: Bytes::from_static(b"{}"),
        };
        let bytes = f.to_bytes().unwrap();
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 12, 0x03, 1, 2, 3, 4, 0, 3, b'a', b'.', b'b', b'{', b'}']
        );
    }

    #[test]
    fn oversize_length_fails_before_the_bytes_arrive() {
        let mut buf = BytesMut::from(&[0u8, 0x10, 0, 1][..]); // 1 MiB + 1
        let err = Frame::decode(&mut buf, DEFAULT_MAX).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooLarge {
                len: 0x100001,
                max: DEFAULT_MAX
            }
        );
        assert_eq!(err.status(), code::FRAME_TOO_LARGE);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: Vec<(&[u8], CodecError)> = vec![
            (&[0, 0, 0, 0], CodecError::Empty),
            (&[0, 0, 0, 1, 0x7f], CodecError::UnknownType(0x7f)),
            (&[0, 0, 0, 2, 0x03, 1], CodecError::Truncated("id")),
            (
                &[0, 0, 0, 7, 0x03, 0, 0, 0, 1, 0, 9],
                CodecError::Truncated("route"),
            ),
            (
                &[0, 0, 0, 9, 0x05, 0, 2, 0xff, 0xfe, 0, 0, 0, 0],
                CodecError::InvalidUtf8("route"),
            ),
        ];
        for (bytes, want) in cases {
            let mut buf = BytesMut::from(bytes);
            assert_eq!(Frame::decode(&mut buf, DEFAULT_MAX).unwrap_err(), want);
        }
    }

    #[test]
    fn every_truncation_of_every_frame_is_handled() {
        for f in samples() {
            let bytes = f.to_bytes().unwrap();
            for cut in 0..bytes.len() {
                // A short buffer waits for more bytes...
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(Frame::decode(&mut buf, DEFAULT_MAX), Ok(None));
                // ...and a payload cut short is an error or a shorter body, never a panic.
                if cut > 4 {
                    let _ = Frame::decode_payload(bytes.slice(4..cut));
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_after_a_fixed_frame_are_refused() {
        // Found by fuzzing: a Hello with 5 extra bytes used to be accepted.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 10, 1, 0, 0, 0, 0, 123, 200, 129, 34, 115][..]);
        assert_eq!(
            Frame::decode(&mut buf, DEFAULT_MAX),
            Err(CodecError::TrailingBytes(5, "Hello"))
        );
    }

    #[test]
    fn too_long_string_field_is_refused_on_encode() {
        let f = Frame::Notify {
            route: "x".repeat(70_000),
            body: Bytes::new(),
        };
        assert_eq!(f.to_bytes().unwrap_err(), CodecError::FieldTooLong("route"));
    }
}
