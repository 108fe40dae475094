//! In-process pub/sub: channels (named like the Redis ones) → subscriptions, each a bounded
//! queue ([`crate::bus_queue`]: [`BUS_QUEUE_LEN`](crate::BUS_QUEUE_LEN) payloads by default;
//! a subscriber that falls that far behind loses the newer payloads, counted, instead of
//! growing memory; room gaps are then filled from history). Publishing happens under the engine's mutex, inside the operation that
//! publishes, so each subscription receives a room's pushes in seq order, and a room
//! subscribed before a join sees every push after it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{MemoryEngine, State};
use crate::bus_queue::{queue, Offer, QueueTx};
use crate::engine::{Broker, Subscription, SubscriptionControl};
use crate::keys::Keys;
use crate::{Result, StoreError};

#[derive(Default)]
pub(super) struct Channels {
    next_id: u64,
    subs: HashMap<u64, Sub>,
    /// channel → subscription ids.
    channels: HashMap<String, HashSet<u64>>,
}

struct Sub {
    tx: QueueTx,
    channels: HashSet<String>,
}

impl Channels {
    /// Sends `payload` to every subscription of `channel`; returns how many got it.
    pub(super) fn publish(&mut self, channel: &str, payload: &Bytes) -> i64 {
        let Some(ids) = self.channels.get(channel) else {
            return 0;
        };
        let mut sent = 0;
        let mut closed = Vec::new();
        for id in ids {
            let Some(sub) = self.subs.get_mut(id) else {
                continue;
            };
            match sub.tx.offer(payload.clone(), id) {
                Offer::Queued => sent += 1,
                Offer::Dropped => {}
                Offer::Closed => closed.push(*id),
            }
        }
        for id in closed {
            self.remove(id);
        }
        sent
    }

    fn add(
        &mut self,
        channels: Vec<String>,
        len: usize,
    ) -> (u64, mpsc::Receiver<Bytes>, Arc<AtomicU64>) {
        let (tx, rx, dropped) = queue(len);
        self.next_id += 1;
        let id = self.next_id;
        self.subs.insert(
            id,
            Sub {
                tx,
                channels: HashSet::new(),
            },
        );
        for c in channels {
            self.listen(id, c);
        }
        (id, rx, dropped)
    }

    fn live(&self, id: u64) -> bool {
        self.subs.get(&id).is_some_and(|s| !s.tx.is_closed())
    }

    fn listen(&mut self, id: u64, channel: String) {
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.channels.insert(channel.clone());
            self.channels.entry(channel).or_default().insert(id);
        }
    }

    fn unlisten(&mut self, id: u64, channel: &str) {
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.channels.remove(channel);
        }
        if let Some(ids) = self.channels.get_mut(channel) {
            ids.remove(&id);
            if ids.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(sub) = self.subs.remove(&id) {
            for c in sub.channels {
                if let Some(ids) = self.channels.get_mut(&c) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.channels.remove(&c);
                    }
                }
            }
        }
    }

    /// Ends every subscription (their streams end once drained; pings fail).
    pub(super) fn close_all(&mut self) {
        self.subs.clear();
        self.channels.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Drops subscriptions whose stream was dropped.
    pub(super) fn sweep(&mut self) {
        let closed: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in closed {
            self.remove(id);
        }
    }
}

#[async_trait]
impl Broker for MemoryEngine {
    async fn subscribe_edge(&self, edge: &str, rooms: &[String]) -> Result<Subscription> {
        let mut channels = vec![self.keys.edge_channel(edge), self.keys.broadcast_channel()];
        channels.extend(rooms.iter().map(|rid| self.keys.room_channel(rid)));
        let (id, rx, dropped) = self.lock().0.bus.add(channels, self.bus_queue_len);
        let payloads =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        Ok(Subscription {
            control: Arc::new(MemorySubscription {
                state: self.state.clone(),
                keys: self.keys.clone(),
                id,
                dropped,
            }),
            payloads: Box::pin(payloads),
        })
    }
}

struct MemorySubscription {
    state: Arc<Mutex<State>>,
    keys: Keys,
    id: u64,
    /// Shared with the queue's sender, so it still reads after the subscription closed.
    dropped: Arc<AtomicU64>,
}

impl MemorySubscription {
    fn with<R>(&self, f: impl FnOnce(&mut Channels) -> R) -> Result<R> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.bus.live(self.id) {
            return Err(StoreError::Unavailable("bus subscription closed".into()));
        }
        Ok(f(&mut state.bus))
    }
}

#[async_trait]
impl SubscriptionControl for MemorySubscription {
    async fn subscribe_room(&self, rid: &str) -> Result<()> {
        let channel = self.keys.room_channel(rid);
        self.with(|bus| bus.listen(self.id, channel))
    }

    async fn unsubscribe_room(&self, rid: &str) -> Result<()> {
        let channel = self.keys.room_channel(rid);
        self.with(|bus| bus.unlisten(self.id, &channel))
    }

    async fn ping(&self) -> Result<()> {
        self.with(|_| ())
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
