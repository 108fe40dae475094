//! Errors of the client SDK: one enum, so an application can tell "the server said no" (with
//! the server's status code and message) from "the network is gone" from "we sent or received
//! nonsense".

use roomcast_net::stream::StreamError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The QUIC/TLS connection could not be established (address, certificate, ALPN, refused).
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The edge refused the `Hello` with an `Error` frame (e.g. 426, unsupported version).
    #[error("handshake refused ({code}): {message}")]
    Handshake { code: u16, message: String },
    /// The server answered the request with a non-200 status; `message` says why in words.
    #[error("error {code}: {message}")]
    Request { code: u16, message: String },
    /// No answer within the configured request timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection is gone; the reason is the edge's `Error` frame on the control stream
    /// when it sent one, else the QUIC close reason.
    #[error("connection closed: {0}")]
    Closed(String),
    /// Bytes that are not a valid frame, or a frame that does not belong where it arrived
    /// (the codec's errors land here).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A body that is not the JSON the route promises (or a request body that cannot be
    /// serialized).
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Local set-up: CA file, socket, options.
    #[error("configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The server's status code, for errors that carry one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Request { code, .. } | ClientError::Handshake { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the edge refused because it is draining (`503`, PROTOCOL.md): ask a gate again.
    pub fn is_edge_draining(&self) -> bool {
        matches!(self, ClientError::Request { code, message }
            if *code == roomcast_protocol::protocol::code::EDGE_DRAINING
                && message == roomcast_protocol::protocol::DRAINING_MESSAGE)
    }

    /// Whether the connection this error came from is unusable (a new one is needed).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ClientError::Closed(_))
    }
}

impl From<StreamError> for ClientError {
    /// A stream failing because its connection died is a `Closed`, not a protocol error: the
    /// application should reconnect, not report a bug.
    fn from(e: StreamError) -> ClientError {
        match e {
            StreamError::Read(quinn::ReadError::ConnectionLost(c))
            | StreamError::Write(quinn::WriteError::ConnectionLost(c)) => c.into(),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

impl From<quinn::ConnectionError> for ClientError {
    fn from(e: quinn::ConnectionError) -> ClientError {
        ClientError::Closed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_protocol::codec::CodecError;

    #[test]
    fn codes_and_messages() {
        let e = ClientError::Request {
            code: 409,
            message: "`alice` is already logged in".into(),
        };
        assert_eq!(e.code(), Some(409));
        assert_eq!(e.to_string(), "error 409: `alice` is already logged in");
        assert_eq!(ClientError::Closed("x".into()).code(), None);
        let draining = ClientError::Request {
            code: 503,
            message: roomcast_protocol::protocol::DRAINING_MESSAGE.into(),
        };
        assert!(draining.is_edge_draining());
        let redis_down = ClientError::Request {
            code: 503,
            message: "redis is unavailable".into(),
        };
        assert!(!redis_down.is_edge_draining() && !e.is_edge_draining());
    }

    #[test]
    fn a_dead_connection_under_a_stream_is_closed_not_a_protocol_error() {
        let lost = quinn::ConnectionError::TimedOut;
        let e: ClientError = StreamError::Read(quinn::ReadError::ConnectionLost(lost)).into();
        assert!(e.is_connection_lost(), "{e:?}");
        let e: ClientError = StreamError::Codec(CodecError::UnknownType(0x7f)).into();
        assert!(matches!(e, ClientError::Protocol(m) if m.contains("0x7f")));
        let e: ClientError = StreamError::Truncated.into();
        assert!(matches!(e, ClientError::Protocol(_)));
    }
}
