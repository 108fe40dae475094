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
use crate::Result;

#[async_trait]
impl Broker for RedisEngine {
    async fn subscribe_edge(&self, edge: &str, rooms: &[String]) -> Result<Subscription> {
        let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
        let mut channels = vec![self.keys.edge_channel(edge), self.keys.broadcast_channel()];
        channels.extend(rooms.iter().map(|rid| self.keys.room_channel(rid)));
        sink.subscribe(&channels).await?;
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
