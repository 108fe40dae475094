//! The edge's push streams of one connection (one per room plus the session stream, see
//! PROTOCOL.md), read in the task that consumes the pushes.
//!
//! Why not a task per stream feeding a channel (as the SDK once did): each push then cost a
//! wake-up and poll of the stream's task, a channel send and a receive on top of what the
//! consumer does anyway; with one push per packet (a chat room at human rates) that hop was a
//! large share of the SDK's own receive cost (BENCHMARKS.md, "Client SDK receive cost").
//! Here the consumer polls every stream's next read itself (a `FuturesUnordered`, so a wake-up
//! polls only the stream that became readable, however many rooms there are), and frames are
//! cut out of the chunks quinn hands over without copying them (a partial frame is copied
//! once, into the stream's reassembly buffer).
//!
//! Memory is bounded without a queue of our own: nothing is read while the consumer does not
//! ask, so QUIC flow control (the per-stream and connection windows) holds the edge back; the
//! pushes decoded but not yet handed out come from one chunk of at most `max_frame + 4` bytes,
//! and a stream's reassembly buffer holds the start of one frame (below `max_frame + 4` bytes,
//! the length being checked before the frame's bytes arrive) plus at most one chunk.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use quinn::{ReadError, RecvStream};
use roomcast_protocol::codec::{check_len, CodecError, Frame};

use crate::connection::Push;

/// The pushes of one connection, read from its push streams as they are asked for; see
/// [`crate::Connection::push_streams`].
///
/// [`PushStreams::recv`] is cancel-safe (all state lives here, not in the future), so it can
/// be one branch of a `select!`.
pub struct PushStreams {
    conn: quinn::Connection,
    /// The acceptance of the edge's next push stream (while the connection lives) and the
    /// pending read of every open push stream, in one set: a wake-up polls only what woke.
    events: FuturesUnordered<BoxFuture<'static, Event>>,
    /// Pushes decoded from the last chunk, in stream order, not handed out yet. Bounded by one
    /// chunk (at most `max + 4` bytes): no stream is read again before this is empty.
    ready: VecDeque<Push>,
    /// Largest frame accepted (the `max_frame` the edge announced, capped).
    max: usize,
}

/// What one of the futures in [`PushStreams::events`] ended with.
enum Event {
    /// The edge opened a push stream (or the connection is gone).
    Stream(Result<RecvStream, quinn::ConnectionError>),
    /// A read of a push stream returned.
    Chunk(Reader, Result<Option<Bytes>, ReadError>),
}

/// One push stream and the start of a frame that did not fit in the chunks read so far.
struct Reader {
    recv: RecvStream,
    /// Bytes of an incomplete frame; empty between frames (the usual case: the edge writes
    /// whole frames, and a push fits in one packet).
    partial: BytesMut,
}

impl PushStreams {
    pub(crate) fn new(conn: quinn::Connection, max: usize) -> PushStreams {
        let events = FuturesUnordered::new();
        events.push(accept_next(conn.clone()));
        PushStreams {
            conn,
            events,
            ready: VecDeque::new(),
            max,
        }
    }

    /// The next push: in order within each stream (so within each room), streams interleaved
    /// as their data arrives. `None` once the connection is gone and every stream has ended.
    pub async fn recv(&mut self) -> Option<Push> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polling form of [`PushStreams::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Push>> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Poll::Ready(Some(p));
            }
            match self.events.poll_next_unpin(cx) {
                Poll::Ready(Some(Event::Stream(Ok(recv)))) => {
                    let reader = Reader {
                        recv,
                        partial: BytesMut::new(),
                    };
                    self.events.push(read_next(reader, self.max));
                    self.events.push(accept_next(self.conn.clone()));
                }
                // The connection is gone: no more streams; the open ones end by themselves.
                Poll::Ready(Some(Event::Stream(Err(_)))) => {}
                Poll::Ready(Some(Event::Chunk(reader, read))) => self.chunk(reader, read),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Takes the frames out of what one read returned and reads that stream again, unless it
    /// ended (finished, reset, or a frame that is not valid).
    fn chunk(&mut self, mut reader: Reader, read: Result<Option<Bytes>, ReadError>) {
        match read {
            Ok(Some(bytes)) => match reader.frames(bytes, self.max, &mut self.ready) {
                Ok(()) => self.events.push(read_next(reader, self.max)),
                Err(e) => tracing::debug!("push stream ended: {e}"),
            },
            Ok(None) if reader.partial.is_empty() => {}
            Ok(None) => tracing::debug!("push stream ended: stream ended in the middle of a frame"),
            Err(e) => tracing::debug!("push stream ended: read failed: {e}"),
        }
    }
}

impl Reader {
    fn frames(
        &mut self,
        chunk: Bytes,
        max: usize,
        out: &mut VecDeque<Push>,
    ) -> Result<(), CodecError> {
        frames_into(&mut self.partial, chunk, max, out)
    }
}

/// Appends the pushes that `chunk` completes to `out`, `partial` holding the start of a frame
/// from earlier chunks. Whole frames are sliced out of the chunk (their bodies share its
/// memory); only an incomplete one is copied.
fn frames_into(
    partial: &mut BytesMut,
    mut chunk: Bytes,
    max: usize,
    out: &mut VecDeque<Push>,
) -> Result<(), CodecError> {
    if !partial.is_empty() {
        partial.extend_from_slice(&chunk);
        while let Some(frame) = Frame::decode(partial, max)? {
            take(frame, out);
        }
        return Ok(());
    }
    while chunk.len() >= 4 {
        let len = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        check_len(len, max)?;
        if chunk.len() < 4 + len {
            break;
        }
        chunk.advance(4);
        take(Frame::decode_payload(chunk.split_to(len))?, out);
    }
    partial.extend_from_slice(&chunk);
    Ok(())
}

/// A push stream carries `Push` frames only; anything else is logged and skipped.
fn take(frame: Frame, out: &mut VecDeque<Push>) {
    match frame {
        Frame::Push {
            route,
            rid,
            seq,
            body,
        } => out.push_back(Push {
            route,
            rid,
            seq,
            body,
        }),
        other => tracing::warn!("ignoring a {} frame on a push stream", other.name()),
    }
}

fn accept_next(conn: quinn::Connection) -> BoxFuture<'static, Event> {
    Box::pin(async move { Event::Stream(conn.accept_uni().await) })
}

fn read_next(mut reader: Reader, max: usize) -> BoxFuture<'static, Event> {
    Box::pin(async move {
        let read = reader
            .recv
            .read_chunk(max + 4, true)
            .await
            .map(|c| c.map(|c| c.bytes));
        Event::Chunk(reader, read)
    })
}

impl std::fmt::Debug for PushStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushStreams")
            .field("pending", &self.events.len())
            .field("ready", &self.ready.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(rid: &str, seq: u64, body: &str) -> Frame {
        Frame::Push {
            route: "onChat".into(),
            rid: rid.into(),
            seq,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// The frame splitting on its own, fed byte strings cut anywhere.
    fn split(chunks: &[&[u8]], max: usize) -> Result<Vec<Push>, CodecError> {
        let mut partial = BytesMut::new();
        let mut out = VecDeque::new();
        for c in chunks {
            frames_into(&mut partial, Bytes::copy_from_slice(c), max, &mut out)?;
        }
        Ok(out.into())
    }

    #[test]
    fn frames_cut_anywhere_come_out_whole_and_in_order() {
        let mut wire = BytesMut::new();
        for seq in 1..=5 {
            push("lobby", seq, &"x".repeat(seq as usize * 7))
                .encode(&mut wire)
                .unwrap();
        }
        let wire = wire.freeze();
        let whole = split(&[&wire], 1024).unwrap();
        assert_eq!(
            whole.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        for cut in 0..wire.len() {
            for second in cut..wire.len() {
                let got = split(&[&wire[..cut], &wire[cut..second], &wire[second..]], 1024)
                    .expect("valid frames");
                assert_eq!(got, whole, "cut at {cut} and {second}");
            }
        }
    }

    #[test]
    fn a_frame_above_the_limit_fails_before_its_bytes_arrive() {
        let mut wire = BytesMut::new();
        push("lobby", 1, &"x".repeat(100))
            .encode(&mut wire)
            .unwrap();
        // Only the length prefix has arrived.
        assert!(matches!(
            split(&[&wire[..4]], 50),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            split(&[&wire[..2], &wire[2..6]], 50),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn other_frames_are_skipped_and_bad_ones_end_the_stream() {
        let mut wire = BytesMut::new();
        Frame::Error {
            code: 500,
            message: "x".into(),
        }
        .encode(&mut wire)
        .unwrap();
        push("", 0, "private").encode(&mut wire).unwrap();
        let got = split(&[&wire], 1024).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"private");
        assert!(matches!(
            split(&[&[0, 0, 0, 1, 0xee]], 1024),
            Err(CodecError::UnknownType(0xee))
        ));
        assert!(matches!(
            split(&[&[0, 0, 0, 0]], 1024),
            Err(CodecError::Empty)
        ));
    }
}
