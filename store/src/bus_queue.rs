//! The bounded payload queue between a subscription's source (the memory engine's publishes,
//! or the Redis connection's reader) and the edge reading it, shared by both engines so that
//! they keep one bound and one overload policy: when the queue is full, the newest payloads are
//! dropped and counted (at-most-once, like Redis pub/sub) rather than memory growing; the edge
//! fills room gaps from history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Payloads queued per subscription (the product default of both engines).
pub const BUS_QUEUE_LEN: usize = 16_384;

/// The sending side of one subscription's queue.
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Bytes>,
    len: usize,
    /// Every payload this subscription lost, shared with its control (`dropped()`).
    dropped: Arc<AtomicU64>,
    /// Drops since the last logged overflow episode (logged when delivery resumes, so an
    /// overload logs one line per episode instead of one per payload).
    episode: u64,
}

/// What became of an offered payload.
pub(crate) enum Offer {
    Queued,
    Dropped,
    /// The reader is gone.
    Closed,
}

/// A queue of `len` payloads (at least 1): its sender, its reader, and its drop counter.
pub(crate) fn queue(len: usize) -> (QueueTx, mpsc::Receiver<Bytes>, Arc<AtomicU64>) {
    let len = len.max(1);
    let (tx, rx) = mpsc::channel(len);
    let dropped = Arc::new(AtomicU64::new(0));
    let q = QueueTx {
        tx,
        len,
        dropped: dropped.clone(),
        episode: 0,
    };
    (q, rx, dropped)
}

impl QueueTx {
    /// Queues `payload` without waiting; `who` names the subscriber in the overflow log.
    pub(crate) fn offer(&mut self, payload: Bytes, who: &dyn std::fmt::Display) -> Offer {
        match self.tx.try_send(payload) {
            Ok(()) => {
                if self.episode > 0 {
                    tracing::warn!(
                        "bus subscriber {who} lost {} payloads (queue of {} full)",
                        self.episode,
                        self.len
                    );
                    self.episode = 0;
                }
                Offer::Queued
            }
            Err(TrySendError::Full(_)) => {
                self.episode += 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Offer::Dropped
            }
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
