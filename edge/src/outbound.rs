//! A session's push streams, and the slow-consumer policy.
//!
//! Each room a session is in gets its own unidirectional QUIC stream (plus one for pushes that
//! are not room messages), so one room's burst or loss never delays another room: QUIC orders
//! bytes within a stream only. Each stream has a bounded queue drained by its own writer task;
//! the edge encodes a push once and queues the same `Bytes` for every recipient, and queuing
//! never waits, so a slow member never delays the fan-out to the others.
//!
//! Slow consumers: when a stream's queue is full (the client stopped reading and QUIC flow
//! control stopped the writer), the *oldest* queued pushes are dropped — a quarter of the queue
//! at a time — and replaced by one `onGap` push naming the seqs dropped, so the client knows
//! exactly what it missed (and can resume past it). A session that keeps overflowing — more
//! than [`OVERFLOWS_BEFORE_DISCONNECT`] overflows without its queue ever draining — is closed
//! with `close::SLOW_CONSUMER`. Memory per session is therefore bounded by `queue` frames per
//! stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use roomcast_protocol::protocol::close;
use tokio::sync::Notify;

use crate::fanout::gap_frame;
use crate::transport::Conn;

/// Overflows (each dropping a quarter of a queue) tolerated before the session is closed.
pub const OVERFLOWS_BEFORE_DISCONNECT: u32 = 8;

/// Push-stream writer tasks alive in this process (every edge in it).
static LIVE_WRITERS: AtomicUsize = AtomicUsize::new(0);

/// How many push-stream writer tasks are alive in this process. Each ends when its stream is
/// finished or its session's `Outbound` is dropped; one that outlived its connection would keep the whole
/// QUIC connection state (tens of KiB) alive with it.
pub fn live_writers() -> usize {
    LIVE_WRITERS.load(Ordering::Relaxed)
}

/// Counts a writer task while it lives.
struct LiveWriter;

impl LiveWriter {
    fn new() -> LiveWriter {
        LIVE_WRITERS.fetch_add(1, Ordering::Relaxed);
        LiveWriter
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        LIVE_WRITERS.fetch_sub(1, Ordering::Relaxed);
    }
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

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Set when the stream should be finished once drained.
    finished: bool,
}

struct Stream {
    queue: Mutex<Queue>,
    wake: Notify,
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

    /// Queues an encoded frame (the push numbered `seq`); never waits.
    pub fn push(&self, key: &StreamKey, seq: u64, bytes: Bytes) {
        let stream = {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            // Fan-out calls this once per recipient: look up by reference, and allocate a key
            // only for a stream's first push.
            match streams.get(key) {
                Some(s) => s.clone(),
                None => {
                    let s = self.spawn_writer(key.clone());
                    streams.insert(key.clone(), s.clone());
                    s
                }
            }
        };
        let overflowed = {
            let mut q = stream.queue.lock().unwrap_or_else(|e| e.into_inner());
            enqueue(&mut q.items, self.cap, Item::Frame { seq, bytes })
        };
        stream.wake.notify_one();
        if overflowed {
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
    }

    /// Finishes a room's stream after what is queued on it has been written.
    pub fn finish(&self, key: &StreamKey) {
        if let Some(stream) = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
        {
            stream
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finished = true;
            stream.wake.notify_one();
        }
    }

    /// Frames queued on all streams (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| {
                s.queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .items
                    .len()
            })
            .sum()
    }

    fn spawn_writer(&self, key: StreamKey) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        });
        let conn = self.conn.clone();
        let s = stream.clone();
        let overflows = self.overflows.clone();
        let rid = match &key {
            StreamKey::Room(rid) => rid.clone(),
            StreamKey::Session => String::new(),
        };
        tokio::spawn(async move {
            let _live = LiveWriter::new();
            let Ok(mut send) = conn.open_uni().await else {
                return;
            };
            loop {
                let next = {
                    let mut q = s.queue.lock().unwrap_or_else(|e| e.into_inner());
                    match q.items.pop_front() {
                        Some(item) => Some(item),
                        None if q.finished => break,
                        None => None,
                    }
                };
                let Some(item) = next else {
                    // Drained: the client keeps up again. Wait for more, or for the end (a
                    // finish, or the session's `Outbound` dropped: see its `Drop`).
                    overflows.store(0, Ordering::Relaxed);
                    s.wake.notified().await;
                    continue;
                };
                let bytes = match item {
                    Item::Frame { bytes, .. } => bytes,
                    Item::Gap { from, to } => match gap_frame(&rid, from, to) {
                        Some(b) => b,
                        None => continue,
                    },
                };
                if send.write_chunk(bytes).await.is_err() {
                    return;
                }
            }
            send.finish();
        });
        stream
    }
}

/// The session is gone: every writer finishes what is queued (or fails on the closed
/// connection) and ends. Without this a writer whose queue was empty would wait for the next
/// push forever, keeping the whole QUIC connection state alive with it.
impl Drop for Outbound {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut *self.streams.lock().unwrap_or_else(|e| e.into_inner()));
        for stream in streams.into_values() {
            stream
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finished = true;
            stream.wake.notify_one();
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
