//! A session's push streams, and the slow-consumer policy.
//!
//! Each room a session is in gets its own unidirectional QUIC stream (plus one for pushes that
//! are not room messages), so one room's burst or loss never delays another room: QUIC orders
//! bytes within a stream only. The edge encodes a push once and hands the same `Bytes` to every
//! recipient.
//!
//! Writing never waits: the fan-out writes a push straight into the stream's QUIC send buffer
//! (one lock of the connection, no task hop) whenever nothing is queued before it. Only when
//! flow control stops a stream — the client is not reading fast enough — do pushes go to the
//! stream's bounded queue, and a writer task drains it, waiting on flow control, until it is
//! empty; then the stream is written directly again. A stream is opened by such a task too
//! (opening can wait for the client's stream credit). So an idle or keeping-up session has no
//! task per stream, and a delivery costs one wake-up (quinn's connection driver), not two.
//!
//! Slow consumers: when a stream's queue is full, the *oldest* queued pushes are dropped — a
//! quarter of the queue at a time — and replaced by one `onGap` push naming the seqs dropped, so
//! the client knows exactly what it missed (and can resume past it). A session that keeps
//! overflowing — more than [`OVERFLOWS_BEFORE_DISCONNECT`] overflows without its queue ever
//! draining — is closed with `close::SLOW_CONSUMER`. Memory per session is therefore bounded by
//! `queue` frames per stream (plus what QUIC flow control lets sit in quinn's send buffer).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use roomcast_protocol::protocol::close;

use crate::fanout::gap_frame;
use crate::transport::{Conn, Send, TryWrite};

/// Overflows (each dropping a quarter of a queue) tolerated before the session is closed.
pub const OVERFLOWS_BEFORE_DISCONNECT: u32 = 8;

/// Push streams alive in this process (every edge in it).
static LIVE_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// How many push streams are alive in this process. Each ends when it is finished or its
/// session's `Outbound` is dropped, and any writer task draining it ends with the connection; a
/// stream that outlived its session would keep the whole QUIC connection state (tens of KiB)
/// alive with it.
pub fn live_push_streams() -> usize {
    LIVE_STREAMS.load(Ordering::Relaxed)
}

/// Which push stream a frame goes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// Pushes that are not room messages (private messages, broadcasts).
    Session,
    /// One room's pushes, in seq order.
    Room(String),
}

enum Item {
    /// An encoded push and its room seq (0 on the session stream).
    Frame { seq: u64, bytes: Bytes },
    /// Seqs dropped because the client did not keep up.
    Gap { from: u64, to: u64 },
}

struct Stream {
    /// Room id for the gap frames this stream may carry (empty on the session stream).
    rid: String,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// Pushes waiting for flow control (bounded by `Outbound::cap`).
    items: VecDeque<Item>,
    /// The open stream, here while nobody writes to it asynchronously: `None` while it is
    /// being opened or a writer task holds it, and after it failed or was finished.
    send: Option<Send>,
    /// A writer task owns the stream (opening it, or draining the queue): pushes queue behind it.
    writing: bool,
    /// Finish the stream once what is queued has been written.
    finished: bool,
}

impl Stream {
    fn new(rid: String) -> Stream {
        LIVE_STREAMS.fetch_add(1, Ordering::Relaxed);
        Stream {
            rid,
            state: Mutex::new(StreamState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        LIVE_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamState {
    /// Finishes the stream now if no writer holds it (a writer finishes it when drained).
    fn finish(&mut self) {
        self.finished = true;
        if !self.writing {
            if let Some(mut send) = self.send.take() {
                send.finish();
            }
        }
    }
}

pub struct Outbound {
    conn: Conn,
    /// Bound of each stream's queue, in frames.
    cap: usize,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// Overflows since a queue last drained completely (writers reset it).
    overflows: Arc<AtomicU32>,
}

impl Outbound {
    pub fn new(conn: Conn, cap: usize) -> Outbound {
        Outbound {
            conn,
            cap: cap.max(4),
            streams: Mutex::new(HashMap::new()),
            overflows: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Writes or queues an encoded frame (the push numbered `seq`); never waits.
    pub fn push(&self, key: &StreamKey, seq: u64, bytes: Bytes) {
        let stream = {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            // Fan-out calls this once per recipient: look up by reference, and allocate a key
            // only for a stream's first push.
            match streams.get(key) {
                Some(s) => s.clone(),
                None => {
                    let s = self.open(key);
                    streams.insert(key.clone(), s.clone());
                    s
                }
            }
        };
        let mut st = stream.state();
        let bytes = if st.writing || !st.items.is_empty() {
            bytes
        } else if let Some(send) = st.send.as_mut() {
            let mut rest = bytes;
            match send.try_write(&mut rest) {
                TryWrite::Done => return,
                // The stream or connection failed: the session ends through its connection.
                TryWrite::Failed => {
                    st.send = None;
                    return;
                }
                TryWrite::Blocked => {}
            }
            // Flow control: a writer writes the rest of this frame first, then the queue.
            if let Some(send) = st.send.take() {
                st.writing = true;
                drop(st);
                self.spawn_writer(stream, send, Some(rest));
            }
            return;
        } else {
            // Finished or failed: queued to the bound, where overflows close a session that
            // keeps receiving on a stream it stopped.
            bytes
        };
        let overflowed = enqueue(&mut st.items, self.cap, Item::Frame { seq, bytes });
        drop(st);
        if overflowed {
            self.overflowed(key);
        }
    }

    fn overflowed(&self, key: &StreamKey) {
        let n = self.overflows.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            conn = self.conn.stable_id(),
            ?key,
            overflows = n,
            "push queue overflowed"
        );
        if too_slow(n) {
            tracing::warn!(
                conn = self.conn.stable_id(),
                queue = self.cap,
                overflows = n,
                "slow consumer; closing"
            );
            self.conn.close(
                close::SLOW_CONSUMER,
                b"slow consumer: pushes kept overflowing",
            );
        }
    }

    /// Finishes a room's stream after what is queued on it has been written.
    pub fn finish(&self, key: &StreamKey) {
        let stream = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(stream) = stream {
            stream.state().finish();
        }
    }

    /// Frames queued on all streams (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| s.state().items.len())
            .sum()
    }

    /// A new stream, queuing until a task has opened it (opening waits for the client's credit).
    fn open(&self, key: &StreamKey) -> Arc<Stream> {
        let rid = match key {
            StreamKey::Room(rid) => rid.clone(),
            StreamKey::Session => String::new(),
        };
        let stream = Arc::new(Stream::new(rid));
        stream.state().writing = true;
        let conn = self.conn.clone();
        let s = stream.clone();
        let overflows = self.overflows.clone();
        tokio::spawn(async move {
            match conn.open_uni().await {
                Ok(send) => drain(s, send, None, overflows).await,
                Err(_) => s.state().writing = false,
            }
        });
        stream
    }

    fn spawn_writer(&self, stream: Arc<Stream>, send: Send, first: Option<Bytes>) {
        tokio::spawn(drain(stream, send, first, self.overflows.clone()));
    }
}

/// Writes `first`, then the stream's queue, waiting on flow control, until the queue is empty;
/// then hands the stream back for direct writes (or finishes it).
async fn drain(
    stream: Arc<Stream>,
    mut send: Send,
    first: Option<Bytes>,
    overflows: Arc<AtomicU32>,
) {
    let mut next = first;
    loop {
        if let Some(bytes) = next.take() {
            if send.write_chunk(bytes).await.is_err() {
                // The stream or connection failed; nothing queued can be delivered any more.
                stream.state().writing = false;
                return;
            }
        }
        let mut st = stream.state();
        match st.items.pop_front() {
            Some(Item::Frame { bytes, .. }) => next = Some(bytes),
            Some(Item::Gap { from, to }) => next = gap_frame(&stream.rid, from, to),
            None => {
                // Drained: the client keeps up again.
                overflows.store(0, Ordering::Relaxed);
                st.writing = false;
                if st.finished {
                    send.finish();
                } else {
                    st.send = Some(send);
                }
                return;
            }
        }
    }
}

/// The session is gone: every stream is finished once what is queued on it is written (or
/// fails on the closed connection), so nothing keeps the connection state alive.
impl Drop for Outbound {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut *self.streams.lock().unwrap_or_else(|e| e.into_inner()));
        for stream in streams.into_values() {
            stream.state().finish();
        }
    }
}

/// Queues `item` on a queue bounded by `cap`: a full queue first drops its oldest quarter
/// behind one gap marker. Returns whether it overflowed.
fn enqueue(items: &mut VecDeque<Item>, cap: usize, item: Item) -> bool {
    let overflowed = items.len() >= cap;
    if overflowed {
        drop_oldest(items, cap / 4);
    }
    items.push_back(item);
    overflowed
}

/// Whether `overflows` without the queue draining in between make the session a slow consumer.
fn too_slow(overflows: u32) -> bool {
    overflows > OVERFLOWS_BEFORE_DISCONNECT
}

/// Drops the `n` oldest frames, merging them (and a gap already at the front) into one gap.
fn drop_oldest(items: &mut VecDeque<Item>, n: usize) {
    let mut gap: Option<(u64, u64)> = None;
    let mut dropped = 0;
    while dropped < n.max(1) {
        match items.pop_front() {
            Some(Item::Gap { from, to }) => {
                gap = Some(gap.map_or((from, to), |(f, _)| (f, to)));
            }
            Some(Item::Frame { seq, .. }) => {
                dropped += 1;
                if seq > 0 {
                    gap = Some(gap.map_or((seq, seq), |(f, _)| (f, seq)));
                }
            }
            None => break,
        }
    }
    if let Some((from, to)) = gap {
        items.push_front(Item::Gap { from, to });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(seqs: std::ops::RangeInclusive<u64>) -> VecDeque<Item> {
        seqs.map(|seq| Item::Frame {
            seq,
            bytes: Bytes::new(),
        })
        .collect()
    }

    fn shape(items: &VecDeque<Item>) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Frame { seq, .. } => seq.to_string(),
                Item::Gap { from, to } => format!("gap {from}-{to}"),
            })
            .collect()
    }

    #[test]
    fn oldest_frames_become_one_gap_marker() {
        let mut q = frames(1..=8);
        drop_oldest(&mut q, 3);
        assert_eq!(shape(&q), vec!["gap 1-3", "4", "5", "6", "7", "8"]);
        // A second overflow extends the same marker.
        drop_oldest(&mut q, 2);
        assert_eq!(shape(&q), vec!["gap 1-5", "6", "7", "8"]);
    }

    #[test]
    fn a_full_queue_keeps_its_bound_and_marks_what_it_dropped() {
        let cap = 8;
        let mut q = VecDeque::new();
        let mut overflows = 0;
        for seq in 1..=40 {
            let item = Item::Frame {
                seq,
                bytes: Bytes::new(),
            };
            if enqueue(&mut q, cap, item) {
                overflows += 1;
            }
            assert!(q.len() <= cap, "bound kept");
        }
        // The newest frames stay, everything older is one gap marker.
        let s = shape(&q);
        assert_eq!(
            s.first().unwrap(),
            &format!("gap 1-{}", 40 - (q.len() as u64 - 1))
        );
        assert_eq!(s.last().unwrap(), "40");
        assert!(overflows > 0);
        assert!(!too_slow(OVERFLOWS_BEFORE_DISCONNECT));
        assert!(too_slow(OVERFLOWS_BEFORE_DISCONNECT + 1));
    }

    #[test]
    fn session_stream_frames_drop_without_a_marker() {
        let mut q: VecDeque<Item> = (0..4)
            .map(|_| Item::Frame {
                seq: 0,
                bytes: Bytes::new(),
            })
            .collect();
        drop_oldest(&mut q, 2);
        assert_eq!(q.len(), 2);
    }
}
