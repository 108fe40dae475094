//! Subscriptions on Redis pub/sub: one dedicated connection per subscription (a connection in
//! subscribe mode can run nothing else). Redis confirms each SUBSCRIBE before the call returns,
//! which is what lets an edge subscribe to a room before joining it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::PubSubSink;

use super::RedisEngine;
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
        let payloads = stream
            .map(|msg| Bytes::copy_from_slice(msg.get_payload_bytes()))
            .boxed();
        Ok(Subscription {
            control: Arc::new(RedisSubscription {
                sink,
                keys: self.keys.clone(),
            }),
            payloads,
        })
    }
}

/// The command side of a pub/sub connection (cloned per call: the sink is a cheap handle).
struct RedisSubscription {
    sink: PubSubSink,
    keys: Keys,
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
}
