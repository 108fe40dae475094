//! Subscriptions on Redis pub/sub: one dedicated connection per subscription (a connection in
//! subscribe mode can run nothing else). Redis confirms each SUBSCRIBE before the call returns,
//! which is what lets an edge subscribe to a room before joining it.
//!
//! Bound: redis-rs reads the connection eagerly, in its own driver task, into an unbounded
//! channel, so Redis's `client-output-buffer-limit pubsub` never applies and an edge that reads
//! slowly would grow that channel without limit. A forwarding task per subscription (aborted
//! when the payload stream drops) moves each payload from it into the same bounded queue as
//! the memory engine's ([`crate::BUS_QUEUE_LEN`] payloads, newest dropped and counted when
//! full; room gaps are filled from history). What the bound covers: the payloads waiting for
//! the edge. redis-rs's channel holds only what the forwarding task has not moved yet; that
//! task does nothing else, so it stays short unless the runtime starves the task itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::task::AbortHandle;

use super::RedisEngine;
use crate::bus_queue::{queue, Offer, QueueTx};
use crate::engine::{Broker, Subscription, SubscriptionControl};
use crate::keys::Keys;
use crate::{Result, StoreError};

/// How long opening a subscription (connect + SUBSCRIBE) may take; it subscribes to many
/// channels at once after a reconnect, so it gets more than one command's timeout.
const SUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[async_trait]
impl Broker for RedisEngine {
    async fn subscribe_edge(&self, edge: &str, rooms: &[String]) -> Result<Subscription> {
        let mut channels = vec![self.keys.edge_channel(edge), self.keys.broadcast_channel()];
        channels.extend(rooms.iter().map(|rid| self.keys.room_channel(rid)));
        // Bounded like every other command, so a deaf Redis cannot stall the edge's reconnects.
        let open = async {
            let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
            sink.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        let (sink, stream) = tokio::time::timeout(SUBSCRIBE_TIMEOUT, open)
            .await
            .map_err(|_| StoreError::Unavailable("redis pub/sub subscribe timed out".into()))??;
        let (tx, rx, dropped) = queue(self.bus_queue_len);
        let forward = tokio::spawn(forward(stream, tx, edge.to_string()));
        // The stream ends when the connection does (the forwarder ends and drops its sender),
        // once the queue is drained: the edge then resubscribes, as without the queue.
        let guard = AbortOnDrop(forward.abort_handle());
        let payloads = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|p| (p, (rx, guard)))
        })
        .boxed();
        Ok(Subscription {
            control: Arc::new(RedisSubscription {
                sink,
                keys: self.keys.clone(),
                dropped,
            }),
            payloads,
        })
    }
}

/// Moves payloads from redis-rs's unbounded channel into the subscription's bounded queue
/// until the connection ends or the reader is gone.
async fn forward(mut stream: PubSubStream, mut tx: QueueTx, edge: String) {
    while let Some(msg) = stream.next().await {
        let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
        if let Offer::Closed = tx.offer(payload, &edge) {
            return;
        }
    }
}

/// Ties the forwarding task to the payload stream: dropping the stream ends the task, which
/// drops redis-rs's stream with it.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The command side of a pub/sub connection (cloned per call: the sink is a cheap handle).
struct RedisSubscription {
    sink: PubSubSink,
    keys: Keys,
    /// Shared with the forwarding task's queue sender.
    dropped: Arc<AtomicU64>,
}

#[async_trait]
impl SubscriptionControl for RedisSubscription {
    async fn subscribe_room(&self, rid: &str) -> Result<()> {
        Ok(self
            .sink
            .clone()
            .subscribe(self.keys.room_channel(rid))
            .await?)
    }

    async fn unsubscribe_room(&self, rid: &str) -> Result<()> {
        Ok(self
            .sink
            .clone()
            .unsubscribe(self.keys.room_channel(rid))
            .await?)
    }

    async fn ping(&self) -> Result<()> {
        self.sink.clone().ping::<redis::Value>().await?;
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
