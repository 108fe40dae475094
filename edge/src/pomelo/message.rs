//! Pomelo's message layer, inside a DATA package (`pomelo-protocol`'s `Message`):
//! `flag (1 B) | id (varint; request/response) | route (request/notify/push) | body`.
//! Flag bit 0: route compressed to a 2-byte dictionary code; bits 1-3: the type; bit 4: gzip
//! (never set by Pomelo's server and refused here). POMELO.md has the byte layout.

use bytes::{BufMut, Bytes, BytesMut};

/// Message types (flag bits 1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Request = 0,
    Notify = 1,
    Response = 2,
    Push = 3,
}

/// How a request or notify named its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Name(String),
    /// A dictionary code (the handshake's `sys.dict`).
    Code(u16),
}

/// A message from a client: a request (id > 0) or a notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub kind: Type,
    /// 0 for a notify.
    pub id: u32,
    pub route: Route,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    Empty,
    /// Clients send only requests and notifies.
    WrongType(u8),
    Gzip,
    BadId,
    Truncated(&'static str),
    BadRoute,
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::Empty => write!(f, "empty data package"),
            MessageError::WrongType(t) => write!(
                f,
                "message type {t} from a client (only request 0 and notify 1 are accepted)"
            ),
            MessageError::Gzip => write!(f, "gzip-compressed messages are not supported"),
            MessageError::BadId => write!(f, "message id is not a varint below 2^31"),
            MessageError::Truncated(what) => write!(f, "message truncated in its {what}"),
            MessageError::BadRoute => write!(f, "route is not UTF-8"),
        }
    }
}

const COMPRESSED: u8 = 0x01;
const GZIP: u8 = 0x10;

/// Decodes a client's message.
pub fn decode(data: &Bytes) -> Result<Incoming, MessageError> {
    let (&flag, mut rest) = data.split_first().ok_or(MessageError::Empty)?;
    if flag & GZIP != 0 {
        return Err(MessageError::Gzip);
    }
    let t = (flag >> 1) & 0x07;
    let kind = match t {
        0 => Type::Request,
        1 => Type::Notify,
        other => return Err(MessageError::WrongType(other)),
    };
    let mut id = 0u32;
    if kind == Type::Request {
        let mut shift = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or(MessageError::Truncated("id"))?;
            rest = r;
            if shift > 28 {
                return Err(MessageError::BadId);
            }
            id |= u32::from(b & 0x7F) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        if id >= 1 << 31 {
            return Err(MessageError::BadId);
        }
    }
    let route = if flag & COMPRESSED != 0 {
        if rest.len() < 2 {
            return Err(MessageError::Truncated("route code"));
        }
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        Route::Code(code)
    } else {
        let (&len, r) = rest.split_first().ok_or(MessageError::Truncated("route"))?;
        let len = len as usize;
        if r.len() < len {
            return Err(MessageError::Truncated("route"));
        }
        let name = std::str::from_utf8(&r[..len]).map_err(|_| MessageError::BadRoute)?;
        rest = &r[len..];
        Route::Name(name.to_string())
    };
    let body = data.slice(data.len() - rest.len()..);
    Ok(Incoming {
        kind,
        id,
        route,
        body,
    })
}

fn put_varint(out: &mut BytesMut, mut v: u32) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(b);
            return;
        }
        out.put_u8(b | 0x80);
    }
}

/// A response to request `id` (responses carry no route).
pub fn response(id: u32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(6 + body.len());
    out.put_u8((Type::Response as u8) << 1);
    put_varint(&mut out, id);
    out.put_slice(body);
    out.freeze()
}

/// A push on `route`: compressed to `code` when the route is in the dictionary.
pub fn push(route: &str, code: Option<u16>, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(3 + route.len() + body.len());
    match code {
        Some(c) => {
            out.put_u8((Type::Push as u8) << 1 | COMPRESSED);
            out.put_u16(c);
        }
        None => {
            out.put_u8((Type::Push as u8) << 1);
            // Route names of pushes are ours (onChat, onAdd…) or a backend's: cut at 255 bytes
            // on a character boundary rather than fail (Pomelo's encoder throws).
            let mut n = route.len().min(255);
            while !route.is_char_boundary(n) {
                n -= 1;
            }
            out.put_u8(n as u8);
            out.put_slice(&route.as_bytes()[..n]);
        }
    }
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from the capture in pomelo-protocol.md §9.
    #[test]
    fn decodes_a_plain_route_request() {
        let mut m = vec![0x00, 0x01, 0x1b];
        m.extend_from_slice(b"gate.gateHandler.queryEntry");
        m.extend_from_slice(br#"{"uid":"alice"}"#);
        let msg = decode(&Bytes::from(m)).unwrap();
        assert_eq!(msg.kind, Type::Request);
        assert_eq!(msg.id, 1);
        assert_eq!(msg.route, Route::Name("gate.gateHandler.queryEntry".into()));
        assert_eq!(&msg.body[..], br#"{"uid":"alice"}"#);
    }

    #[test]
    fn decodes_a_compressed_route_request_and_a_notify() {
        let mut m = vec![0x01, 0x01, 0x00, 0x02];
        m.extend_from_slice(br#"{"username":"alice","rid":"room1"}"#);
        let msg = decode(&Bytes::from(m)).unwrap();
        assert_eq!((msg.id, msg.route), (1, Route::Code(2)));
        let n = decode(&Bytes::from_static(b"\x02\x03a.bX")).unwrap();
        assert_eq!(n.kind, Type::Notify);
        assert_eq!((n.id, n.route), (0, Route::Name("a.b".into())));
        assert_eq!(&n.body[..], b"X");
    }

    #[test]
    fn multi_byte_ids() {
        let mut out = BytesMut::new();
        put_varint(&mut out, 300);
        assert_eq!(&out[..], &[0xAC, 0x02]);
        let r = response(300, b"{}");
        assert_eq!(&r[..], &[0x04, 0xAC, 0x02, b'{', b'}']);
        let mut m = vec![0x00];
        m.extend_from_slice(&out);
        m.extend_from_slice(b"\x01r");
        assert_eq!(decode(&Bytes::from(m)).unwrap().id, 300);
    }

    #[test]
    fn encodes_responses_and_pushes_as_captured() {
        assert_eq!(&response(2, b"{}")[..], b"\x04\x02{}");
        let p = push("onAdd", None, br#"{"user":"bob"}"#);
        assert_eq!(&p[..7], b"\x06\x05onAdd");
        let c = push("onChat", Some(4), b"x");
        assert_eq!(&c[..], &[0x07, 0x00, 0x04, b'x']);
    }

    #[test]
    fn refuses_what_clients_never_send() {
        assert_eq!(decode(&Bytes::new()), Err(MessageError::Empty));
        assert_eq!(
            decode(&Bytes::from_static(b"\x04\x01{}")),
            Err(MessageError::WrongType(2))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x10\x01")),
            Err(MessageError::Gzip)
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x00\x81")),
            Err(MessageError::Truncated("id"))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x00\x01\x09ab")),
            Err(MessageError::Truncated("route"))
        );
        assert_eq!(
            decode(&Bytes::from_static(b"\x00\xff\xff\xff\xff\x7f")),
            Err(MessageError::BadId)
        );
    }
}
