//! A session's push streams.
//!
//! Each room a session is in gets its own unidirectional QUIC stream (plus one for pushes that
//! are not room messages), so one room's burst or loss never delays another room: QUIC orders
//! bytes within a stream only. Each stream has a bounded queue drained by its own writer task;
//! the edge encodes a push once and queues the same `Bytes` for every recipient.
//!
//! Slow consumers: when a stream's queue is full (the client stopped reading and QUIC flow
//! control stopped the writer), the connection is closed with `close::SLOW_CONSUMER`. Memory per
//! session is therefore bounded by `queue` frames per stream.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use quinn::{Connection, VarInt};
use roomcast_common::protocol::close;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Which push stream a frame goes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// Pushes that are not room messages (private messages, broadcasts).
    Session,
    /// One room's pushes, in seq order.
    Room(String),
}

pub struct Outbound {
    conn: Connection,
    /// Bound of each stream's queue, in frames.
    queue: usize,
    streams: Mutex<HashMap<StreamKey, mpsc::Sender<Bytes>>>,
}

impl Outbound {
    pub fn new(conn: Connection, queue: usize) -> Outbound {
        Outbound {
            conn,
            queue: queue.max(1),
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Queues an encoded frame; never waits. Closes the connection if the queue is full.
    pub fn push(&self, key: StreamKey, frame: Bytes) {
        let mut streams = self.streams.lock().expect("outbound lock");
        let tx = streams
            .entry(key.clone())
            .or_insert_with(|| spawn_writer(self.conn.clone(), self.queue));
        match tx.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    "session {} is a slow consumer ({:?} queue of {} full); closing",
                    self.conn.stable_id(),
                    key,
                    self.queue
                );
                self.conn.close(
                    VarInt::from_u32(close::SLOW_CONSUMER),
                    b"slow consumer: push queue overflow",
                );
            }
            Err(TrySendError::Closed(_)) => {
                // The writer died (connection gone); forget it.
                streams.remove(&key);
            }
        }
    }

    /// Finishes a room's stream after what is queued on it has been written.
    pub fn finish(&self, key: &StreamKey) {
        self.streams.lock().expect("outbound lock").remove(key);
    }
}

fn spawn_writer(conn: Connection, queue: usize) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(queue);
    tokio::spawn(async move {
        let mut send = match conn.open_uni().await {
            Ok(s) => s,
            Err(_) => return,
        };
        while let Some(frame) = rx.recv().await {
            if send.write_chunk(frame).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    tx
}
