//! Errors of the client SDK.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("handshake refused ({code}): {message}")]
    Handshake { code: u16, message: String },
    /// The server answered the request with a non-200 status.
    #[error("error {code}: {message}")]
    Request { code: u16, message: String },
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
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
}

impl From<roomcast_common::stream::StreamError> for ClientError {
    fn from(e: roomcast_common::stream::StreamError) -> ClientError {
        ClientError::Protocol(e.to_string())
    }
}

impl From<quinn::ConnectionError> for ClientError {
    fn from(e: quinn::ConnectionError) -> ClientError {
        ClientError::Closed(e.to_string())
    }
}
