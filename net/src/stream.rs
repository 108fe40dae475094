//! The thin async layer under [`roomcast_protocol::codec`]: reading and writing frames on quinn streams.

use bytes::BytesMut;
use quinn::{RecvStream, SendStream};
use thiserror::Error;

use roomcast_protocol::codec::{CodecError, Frame};
use roomcast_protocol::protocol::code;

#[derive(Debug, Error)]
pub enum StreamError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
}

impl StreamError {
    /// The status code that describes this failure to the peer.
    pub fn status(&self) -> u16 {
        match self {
            StreamError::Codec(e) => e.status(),
            StreamError::Truncated => code::MALFORMED_FRAME,
            _ => code::INTERNAL,
        }
    }
}

/// Reads the next frame. `Ok(None)` when the peer finished the stream cleanly between frames.
/// Never buffers more than one flow-control window beyond `max` (the length is checked first).
pub async fn read_frame(
    recv: &mut RecvStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, StreamError> {
    loop {
        if let Some(frame) = Frame::decode(buf, max)? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(max + 4, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None if buf.is_empty() => return Ok(None),
            None => return Err(StreamError::Truncated),
        }
    }
}

/// Encodes and writes one frame.
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), StreamError> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}
