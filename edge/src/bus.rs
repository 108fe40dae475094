//! The edge's bus subscriber (the store's [`roomcast_store::Broker`]: Redis pub/sub, or the
//! in-memory bus).
//!
//! One subscription per edge carries the edge's own channel (pushes to given
//! uids, kicks), the broadcast channel, and one channel per room that has local members. A
//! room's channel is subscribed — and the subscription confirmed by Redis — *before* the edge
//! runs the join script, so every push numbered after the join reaches the edge.
//!
//! Pub/sub is at-most-once. If the connection drops, the subscriber reconnects with backoff,
//! subscribes to everything again, and asks each room feed to fill what it missed from history.
//! A connection that stays open but deaf is caught by a PING every [`PROBE_EVERY`]: no answer
//! within [`PROBE_TIMEOUT`] and the connection is replaced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use quinn::VarInt;
use roomcast_protocol::bus::{self, BusMessage};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::close;
use roomcast_store::{Payloads, Store, SubscriptionControl};
use tokio::sync::Mutex;

use crate::fanout::{self, room_frame};
use crate::outbound::StreamKey;
use crate::state::EdgeState;

/// How often the subscription connection is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take before the connection is declared deaf.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Bus {
    store: Store,
    edge: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `None` while the subscription is down.
    sink: Option<Arc<dyn SubscriptionControl>>,
    /// rid → local members (or joins in progress) needing the room's channel.
    counts: HashMap<String, usize>,
}

impl Bus {
    pub fn new(store: Store, edge: String) -> Bus {
        Bus {
            store,
            edge,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Makes sure the room's channel is subscribed (confirmed by Redis) and counts one more
    /// local user of it. Pair every successful call with [`Bus::release`].
    pub async fn acquire(&self, rid: &str) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        let count = inner.counts.get(rid).copied().unwrap_or(0);
        if count == 0 {
            let Some(sink) = inner.sink.as_ref() else {
                return Err("bus subscription is down; retry shortly".into());
            };
            tokio::time::timeout(PROBE_TIMEOUT, sink.subscribe_room(rid))
                .await
                .map_err(|_| format!("subscribing to room {rid} timed out"))?
                .map_err(|e| format!("cannot subscribe to room {rid}: {e}"))?;
        }
        inner.counts.insert(rid.to_string(), count + 1);
        Ok(())
    }

    /// Drops one local user of the room's channel; unsubscribes after the last one.
    pub async fn release(&self, rid: &str) {
        let mut inner = self.inner.lock().await;
        let Some(count) = inner.counts.get_mut(rid) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            inner.counts.remove(rid);
            if let Some(sink) = inner.sink.as_ref() {
                if let Ok(Err(e)) =
                    tokio::time::timeout(PROBE_TIMEOUT, sink.unsubscribe_room(rid)).await
                {
                    tracing::debug!("unsubscribe room {rid}: {e}");
                }
            }
        }
    }

    /// Number of room channels currently subscribed.
    pub async fn room_subscriptions(&self) -> usize {
        self.inner.lock().await.counts.len()
    }

    /// Opens the subscription: the edge's channel, broadcasts and every room it needs.
    async fn connect(&self) -> roomcast_store::Result<Payloads> {
        let mut inner = self.inner.lock().await;
        let rooms: Vec<String> = inner.counts.keys().cloned().collect();
        let sub = self.store.subscribe_edge(&self.edge, &rooms).await?;
        inner.sink = Some(sub.control);
        Ok(sub.payloads)
    }

    async fn disconnected(&self) {
        self.inner.lock().await.sink = None;
    }

    /// PINGs through the subscription connection.
    async fn probe(&self) -> bool {
        let sink = self.inner.lock().await.sink.clone();
        let Some(sink) = sink else {
            return false;
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, sink.ping()).await,
            Ok(Ok(_))
        )
    }
}

/// Runs the subscriber until the process ends: connect, deliver, reconnect with backoff.
/// `ready` is signalled after the first successful subscription.
pub async fn run(state: Arc<EdgeState>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(100);
    loop {
        match state.bus.connect().await {
            Ok(mut stream) => {
                delay = Duration::from_millis(100);
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                } else {
                    tracing::info!("pub/sub reconnected; subscriptions restored");
                    tokio::spawn(refill_all(state.clone()));
                }
                let mut probe = tokio::time::interval(PROBE_EVERY);
                probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(payload) => deliver(&state, &payload),
                            None => {
                                tracing::warn!("bus subscription lost; reconnecting");
                                break;
                            }
                        },
                        _ = probe.tick() => {
                            if !state.bus.probe().await {
                                tracing::warn!("bus subscription does not answer; replacing it");
                                break;
                            }
                        }
                    }
                }
                state.bus.disconnected().await;
            }
            Err(e) => tracing::warn!("bus subscribe failed: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// After a reconnect: every room feed fetches what was published while the edge was deaf.
async fn refill_all(state: Arc<EdgeState>) {
    let feeds = state.local.lock().expect("local lock").rooms.feeds();
    for (rid, last) in feeds {
        match state.store.room_seq(&rid).await {
            Ok(seq) if seq > last => fanout::fill(state.clone(), rid, last, seq).await,
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot check {rid} for missed pushes: {e}"),
        }
    }
}

/// Fans one bus payload out to the local sessions it is for, encoding the client frame once.
pub fn deliver(state: &Arc<EdgeState>, payload: &[u8]) {
    let (seq, msg) = match bus::decode(payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("dropping undecodable bus message: {e}");
            return;
        }
    };
    let session_frame = |route: String, body: Vec<u8>| {
        Frame::Push {
            route,
            rid: String::new(),
            seq: 0,
            body: Bytes::from(body),
        }
        .to_bytes()
        .map_err(|e| tracing::warn!("dropping unencodable push: {e}"))
        .ok()
    };
    match msg {
        BusMessage::Room { ref rid, .. } => {
            let Some(frame) = room_frame(seq, &msg) else {
                return;
            };
            let local = &mut *state.local.lock().expect("local lock");
            let actions = local.rooms.push(rid, seq, frame);
            fanout::apply(state, local, rid, actions);
        }
        BusMessage::Users { uids, route, body } => {
            let Some(frame) = session_frame(route, body) else {
                return;
            };
            let local = state.local.lock().expect("local lock");
            for uid in uids {
                if let Some(s) = local
                    .by_uid
                    .get(&uid)
                    .and_then(|sid| local.sessions.get(sid))
                {
                    s.outbound.push(&StreamKey::Session, 0, frame.clone());
                }
            }
        }
        BusMessage::Broadcast { route, body } => {
            let Some(frame) = session_frame(route, body) else {
                return;
            };
            let local = state.local.lock().expect("local lock");
            for s in local.sessions.values() {
                s.outbound.push(&StreamKey::Session, 0, frame.clone());
            }
        }
        BusMessage::RoomDestroyed { ref rid } => {
            let Some(frame) = room_frame(seq, &msg) else {
                return;
            };
            let dropped = {
                let mut local = state.local.lock().expect("local lock");
                let members = local.rooms.drop_room(rid);
                let key = StreamKey::Room(rid.clone());
                for sid in &members {
                    if let Some(s) = local.sessions.get(sid) {
                        s.rooms.lock().expect("rooms lock").remove(rid);
                        s.outbound.push(&key, seq, frame.clone());
                        s.outbound.finish(&key);
                    }
                }
                members.len()
            };
            let state = state.clone();
            let rid = rid.clone();
            tokio::spawn(async move {
                for _ in 0..dropped {
                    state.bus.release(&rid).await;
                }
            });
        }
        BusMessage::Drain { reason } => {
            tracing::info!("drain requested: {reason}");
            state.drain_requested.notify_one();
        }
        BusMessage::Kick {
            uid,
            session,
            reason,
        } => {
            let local = state.local.lock().expect("local lock");
            let target = local
                .by_uid
                .get(&uid)
                .and_then(|sid| local.sessions.get(sid))
                .filter(|s| s.token == session);
            if let Some(s) = target {
                tracing::info!("closing session {session} of {uid}: {reason}");
                s.replaced.store(true, std::sync::atomic::Ordering::Relaxed);
                s.conn
                    .close(VarInt::from_u32(close::REPLACED), reason.as_bytes());
            }
        }
    }
}
