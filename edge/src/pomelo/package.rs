//! Pomelo's package layer (`pomelo-protocol`'s `Package`): `type (1 B) | length (3 B, big
//! endian) | body`. POMELO.md has the byte layout.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest body the 3-byte length can describe.
pub const MAX_BODY: usize = 0xFF_FFFF;
pub const HEADER: usize = 4;

/// Package types (the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Both ways: the client's request (JSON), the server's answer (JSON).
    Handshake = 1,
    /// Client to server: the handshake answer was accepted.
    HandshakeAck = 2,
    /// Both ways, empty body.
    Heartbeat = 3,
    /// Both ways: one message (see `message.rs`).
    Data = 4,
    /// Server to client: `{"reason": …}`, then the connection closes.
    Kick = 5,
}

impl Kind {
    pub fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Handshake,
            2 => Kind::HandshakeAck,
            3 => Kind::Heartbeat,
            4 => Kind::Data,
            5 => Kind::Kick,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub kind: Kind,
    pub body: Bytes,
}

/// Why bytes are not a package; each closes the connection with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageError {
    UnknownType(u8),
    /// The declared body is longer than this listener accepts.
    TooLarge {
        len: usize,
        max: usize,
    },
    /// A WebSocket frame that is not exactly one package (Pomelo sends one per frame).
    Truncated {
        declared: usize,
        got: usize,
    },
    Trailing {
        extra: usize,
    },
}

impl std::fmt::Display for PackageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageError::UnknownType(t) => write!(f, "unknown package type {t}"),
            PackageError::TooLarge { len, max } => {
                write!(f, "package body of {len} bytes exceeds the limit of {max}")
            }
            PackageError::Truncated { declared, got } => write!(
                f,
                "truncated package: header declares {declared} body bytes, frame has {got}"
            ),
            PackageError::Trailing { extra } => write!(
                f,
                "{extra} bytes after the package in one frame (one package per frame)"
            ),
        }
    }
}

/// Appends one package to `out`. `body` must fit [`MAX_BODY`] (the caller's messages do).
pub fn encode(kind: Kind, body: &[u8], out: &mut BytesMut) {
    debug_assert!(body.len() <= MAX_BODY);
    out.reserve(HEADER + body.len());
    out.put_u8(kind as u8);
    let len = body.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_slice(body);
}

pub fn to_bytes(kind: Kind, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + body.len());
    encode(kind, body, &mut out);
    out.freeze()
}

/// Reads the header at the front of `buf`: the type and the body length, checked.
fn header(buf: &[u8], max: usize) -> Result<(Kind, usize), PackageError> {
    let kind = Kind::from_byte(buf[0]).ok_or(PackageError::UnknownType(buf[0]))?;
    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(PackageError::TooLarge { len, max });
    }
    Ok((kind, len))
}

/// Stream reassembly (raw TCP): takes one complete package off the front of `buf`, or
/// `Ok(None)` when more bytes are needed. A bad header is an error as soon as its 4 bytes are
/// in, so an oversize body is never buffered.
pub fn decode_stream(buf: &mut BytesMut, max: usize) -> Result<Option<Package>, PackageError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let (kind, len) = header(buf, max)?;
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    buf.advance(HEADER);
    let body = buf.split_to(len).freeze();
    Ok(Some(Package { kind, body }))
}

/// One WebSocket frame: exactly one package.
pub fn decode_frame(frame: &[u8], max: usize) -> Result<Package, PackageError> {
    if frame.len() < HEADER {
        if let Some(&t) = frame.first() {
            Kind::from_byte(t).ok_or(PackageError::UnknownType(t))?;
        }
        return Err(PackageError::Truncated {
            declared: HEADER,
            got: frame.len(),
        });
    }
    let (kind, len) = header(frame, max)?;
    let got = frame.len() - HEADER;
    if got < len {
        return Err(PackageError::Truncated { declared: len, got });
    }
    if got > len {
        return Err(PackageError::Trailing { extra: got - len });
    }
    Ok(Package {
        kind,
        body: Bytes::copy_from_slice(&frame[HEADER..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_packages_are_four_bytes() {
        assert_eq!(&to_bytes(Kind::HandshakeAck, b"")[..], &[2, 0, 0, 0]);
        assert_eq!(&to_bytes(Kind::Heartbeat, b"")[..], &[3, 0, 0, 0]);
    }

    #[test]
    fn length_is_24_bit_big_endian() {
        let body = vec![7u8; 0x01_02_03];
        let b = to_bytes(Kind::Data, &body);
        assert_eq!(&b[..4], &[4, 0x01, 0x02, 0x03]);
        let p = decode_frame(&b, MAX_BODY).unwrap();
        assert_eq!(p.kind, Kind::Data);
        assert_eq!(p.body.len(), 0x01_02_03);
    }

    #[test]
    fn stream_reassembly_waits_for_whole_packages() {
        let mut all = BytesMut::new();
        encode(Kind::Handshake, b"{}", &mut all);
        encode(Kind::Heartbeat, b"", &mut all);
        let bytes = all.freeze();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes.iter() {
            buf.put_u8(*b);
            while let Some(p) = decode_stream(&mut buf, 1024).unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, Kind::Handshake);
        assert_eq!(&got[0].body[..], b"{}");
        assert_eq!(got[1].kind, Kind::Heartbeat);
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_headers_are_refused_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[9u8, 0, 0, 1][..]);
        assert_eq!(
            decode_stream(&mut buf, 1024),
            Err(PackageError::UnknownType(9))
        );
        let mut buf = BytesMut::from(&[4u8, 0xFF, 0xFF, 0xFF][..]);
        assert_eq!(
            decode_stream(&mut buf, 1024),
            Err(PackageError::TooLarge {
                len: MAX_BODY,
                max: 1024
            })
        );
    }

    #[test]
    fn a_frame_is_exactly_one_package() {
        assert_eq!(
            decode_frame(&[4, 0, 0, 5, b'a'], 1024),
            Err(PackageError::Truncated {
                declared: 5,
                got: 1
            })
        );
        assert_eq!(
            decode_frame(&[3, 0, 0, 0, 3, 0, 0, 0], 1024),
            Err(PackageError::Trailing { extra: 4 })
        );
        assert_eq!(
            decode_frame(&[4, 0], 1024),
            Err(PackageError::Truncated {
                declared: 4,
                got: 2
            })
        );
        assert_eq!(decode_frame(&[0], 1024), Err(PackageError::UnknownType(0)));
    }
}
