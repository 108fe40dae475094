//! One client connection as the session driver sees it, whatever carries it: native QUIC
//! (`roomcast/1`) or a WebTransport session (HTTP/3, `h3`) on the same UDP endpoint.
//!
//! Both give the same stream layout (PROTOCOL.md): client-opened bidirectional streams for the
//! control stream and requests, edge-opened unidirectional streams for pushes, application close
//! codes on the connection. So the driver (`session.rs`, `outbound.rs`, `fanout.rs`) is written
//! once against these three small enums and the edge core never knows which one a member uses.
//! An enum rather than a trait: two cases, no boxing, no async-trait on the hot push path.

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use quinn::VarInt;
use roomcast_protocol::codec::{CodecError, Frame};
use roomcast_protocol::protocol::{close, code};
use thiserror::Error;

/// A client connection.
#[derive(Clone)]
pub enum Conn {
    Quic(quinn::Connection),
    /// Boxed: a session is large (HTTP/3 state), a connection handle is one pointer.
    Web(std::sync::Arc<web_transport_quinn::Session>),
}

/// The sending half of a stream.
pub enum Send {
    Quic(quinn::SendStream),
    Web(web_transport_quinn::SendStream),
}

/// What a write that may not wait did.
#[derive(Debug, PartialEq, Eq)]
pub enum TryWrite {
    /// All of it is in the stream's send buffer.
    Done,
    /// Flow control stopped it, maybe part-way: the rest has to wait.
    Blocked,
    /// The stream or the connection failed.
    Failed,
}

/// The receiving half of a stream.
pub enum Recv {
    Quic(quinn::RecvStream),
    Web(web_transport_quinn::RecvStream),
}

/// How a connection ended.
#[derive(Debug)]
pub struct Ended {
    /// The client closed with `close::NORMAL`: it leaves its rooms at once (no grace period).
    pub on_purpose: bool,
    /// For the log.
    pub reason: String,
}

impl Conn {
    fn quic(&self) -> &quinn::Connection {
        match self {
            Conn::Quic(c) => c,
            Conn::Web(s) => s,
        }
    }

    /// Closes with an application code (the same numbers on both transports: a WebTransport
    /// session carries them in its CLOSE_WEBTRANSPORT_SESSION capsule, which a browser reads
    /// as `WebTransportCloseInfo.closeCode`).
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Conn::Quic(c) => c.close(VarInt::from_u32(code), reason),
            Conn::Web(s) => s.close(code, reason),
        }
    }

    pub fn remote_address(&self) -> std::net::SocketAddr {
        self.quic().remote_address()
    }

    pub fn stable_id(&self) -> usize {
        self.quic().stable_id()
    }

    pub async fn accept_bi(&self) -> Result<(Send, Recv), Ended> {
        match self {
            Conn::Quic(c) => c
                .accept_bi()
                .await
                .map(|(s, r)| (Send::Quic(s), Recv::Quic(r)))
                .map_err(quic_ended),
            Conn::Web(s) => s
                .accept_bi()
                .await
                .map(|(s, r)| (Send::Web(s), Recv::Web(r)))
                .map_err(web_ended),
        }
    }

    pub async fn open_uni(&self) -> Result<Send, Ended> {
        match self {
            Conn::Quic(c) => c.open_uni().await.map(Send::Quic).map_err(quic_ended),
            Conn::Web(s) => s.open_uni().await.map(Send::Web).map_err(web_ended),
        }
    }

    /// Native clients may not open unidirectional streams (the endpoint announces a few for
    /// HTTP/3's sake): no further credit, and this resolves when one is opened anyway (or the
    /// connection ends). Never resolves for WebTransport, whose own streams HTTP/3 handles.
    pub async fn forbidden_uni(&self) {
        match self {
            Conn::Quic(c) => {
                c.set_max_concurrent_uni_streams(0u32.into());
                if c.accept_uni().await.is_err() {
                    // The connection ended: the caller learns it from `accept_bi`.
                    std::future::pending::<()>().await;
                }
            }
            Conn::Web(_) => std::future::pending().await,
        }
    }

    /// Waits until the connection has ended.
    pub async fn closed(&self) -> Ended {
        match self {
            Conn::Quic(c) => quic_ended(c.closed().await),
            Conn::Web(s) => web_ended(s.closed().await),
        }
    }
}

fn quic_ended(e: quinn::ConnectionError) -> Ended {
    let on_purpose = matches!(
        &e,
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == u64::from(close::NORMAL)
    );
    Ended {
        on_purpose,
        reason: e.to_string(),
    }
}

fn web_ended(e: web_transport_quinn::SessionError) -> Ended {
    use web_transport_quinn::{SessionError, WebTransportError};
    let on_purpose = matches!(
        &e,
        SessionError::WebTransportError(WebTransportError::Closed(c, _)) if *c == close::NORMAL
    );
    Ended {
        on_purpose,
        reason: e.to_string(),
    }
}

impl Send {
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), FrameError> {
        match self {
            Send::Quic(s) => s.write_all(buf).await.map_err(FrameError::io),
            Send::Web(s) => s.write_all(buf).await.map_err(FrameError::io),
        }
    }

    pub async fn write_chunk(&mut self, buf: Bytes) -> Result<(), FrameError> {
        match self {
            Send::Quic(s) => s.write_chunk(buf).await.map_err(FrameError::io),
            Send::Web(s) => s.write_chunk(buf).await.map_err(FrameError::io),
        }
    }

    /// Writes what it can of `chunk` without waiting (the fan-out calls this once per
    /// recipient); `chunk` keeps the unwritten rest. Cancel-safe: quinn's `write_chunks` writes
    /// nothing unless it resolves.
    pub fn try_write(&mut self, chunk: &mut Bytes) -> TryWrite {
        let chunks = std::slice::from_mut(chunk);
        let written = match self {
            Send::Quic(s) => s.write_chunks(chunks).now_or_never().map(|r| r.is_ok()),
            Send::Web(s) => s.write_chunks(chunks).now_or_never().map(|r| r.is_ok()),
        };
        match written {
            Some(true) if chunk.is_empty() => TryWrite::Done,
            Some(true) | None => TryWrite::Blocked,
            Some(false) => TryWrite::Failed,
        }
    }

    pub fn finish(&mut self) {
        let _ = match self {
            Send::Quic(s) => s.finish().map_err(|_| ()),
            Send::Web(s) => s.finish().map_err(|_| ()),
        };
    }

    /// Waits until the peer has read everything (or stopped the stream).
    pub async fn stopped(&mut self) {
        let _ = match self {
            Send::Quic(s) => s.stopped().await.map(|_| ()).map_err(|_| ()),
            Send::Web(s) => s.stopped().await.map(|_| ()).map_err(|_| ()),
        };
    }
}

impl Recv {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, FrameError> {
        match self {
            Recv::Quic(r) => r
                .read_chunk(max, true)
                .await
                .map(|c| c.map(|c| c.bytes))
                .map_err(FrameError::io),
            Recv::Web(r) => r
                .read_chunk(max, true)
                .await
                .map(|c| c.map(|c| c.bytes))
                .map_err(FrameError::io),
        }
    }

    pub fn stop(&mut self, code: u32) {
        let _ = match self {
            Recv::Quic(r) => r.stop(VarInt::from_u32(code)).map_err(|_| ()),
            Recv::Web(r) => r.stop(code).map_err(|_| ()),
        };
    }

    /// Whether the stream was opened in 0-RTT data (never on WebTransport: HTTP/3 sessions are
    /// established after the handshake).
    pub fn is_0rtt(&self) -> bool {
        match self {
            Recv::Quic(r) => r.is_0rtt(),
            Recv::Web(_) => false,
        }
    }
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The stream or the connection failed (reset, stopped, closed).
    #[error("stream failed: {0}")]
    Io(String),
}

impl FrameError {
    fn io(e: impl std::fmt::Display) -> FrameError {
        FrameError::Io(e.to_string())
    }

    /// The status code that describes this failure to the peer.
    pub fn status(&self) -> u16 {
        match self {
            FrameError::Codec(e) => e.status(),
            FrameError::Truncated => code::MALFORMED_FRAME,
            FrameError::Io(_) => code::INTERNAL,
        }
    }
}

/// Reads the next frame. `Ok(None)` when the peer finished the stream cleanly between frames.
/// Never buffers more than one chunk beyond `max` (the length is checked first).
pub async fn read_frame(
    recv: &mut Recv,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    loop {
        if let Some(frame) = Frame::decode(buf, max)? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(max + 4).await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None if buf.is_empty() => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
}

/// Encodes and writes one frame.
pub async fn write_frame(send: &mut Send, frame: &Frame) -> Result<(), FrameError> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf)?;
    send.write_all(&buf).await
}
