//! The edge's bus subscriber (the store's [`roomcast_store::Broker`]: Redis pub/sub, or the
//! in-memory bus).
//!
//! One subscription per edge carries the edge's own channel (pushes to given
//! uids, kicks), the broadcast channel, and one channel per room that has local members. A
//! room's channel is subscribed — and the subscription confirmed by Redis — *before* the edge
//! runs the join script, so every push numbered after the join reaches the edge.
//!
//! Which rooms need a channel (the per-room subscription counts) is the core's business
//! ([`crate::core`]); this module only carries out subscribe/unsubscribe and hands what arrives
//! to the core.
//!
//! Pub/sub is at-most-once. If the connection drops, the subscriber reconnects with backoff,
//! subscribes to everything again, and asks each room feed to fill what it missed from history.
//! A connection that stays open but deaf is caught by a PING every [`PROBE_EVERY`]: no answer
//! within [`PROBE_TIMEOUT`] and the connection is replaced.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use roomcast_protocol::bus::{self, BusMessage};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{route, OnUser};
use roomcast_store::{Payloads, Store, SubscriptionControl};
use tokio::sync::Mutex;

use crate::fanout::{room_frame, with_core};
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
}

impl Bus {
    pub fn new(store: Store, edge: String) -> Bus {
        Bus {
            store,
            edge,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Subscribes the room's channel and waits for Redis to confirm, unless `wanted()` (asked
    /// under this bus's lock, so subscribes and unsubscribes of one room apply in the order
    /// their decisions were made) says no local user needs it any more.
    pub async fn subscribe(&self, rid: &str, wanted: impl FnOnce() -> bool) -> Result<(), String> {
        let inner = self.inner.lock().await;
        if !wanted() {
            return Ok(());
        }
        let Some(sink) = inner.sink.as_ref() else {
            return Err("bus subscription is down; retry shortly".into());
        };
        tokio::time::timeout(PROBE_TIMEOUT, sink.subscribe_room(rid))
            .await
            .map_err(|_| format!("subscribing to room {rid} timed out"))?
            .map_err(|e| format!("cannot subscribe to room {rid}: {e}"))?;
        Ok(())
    }

    /// Unsubscribes the room's channel, unless `wanted()` (asked under this bus's lock) says a
    /// join needs it again.
    pub async fn unsubscribe(&self, rid: &str, wanted: impl FnOnce() -> bool) {
        let inner = self.inner.lock().await;
        if wanted() {
            return;
        }
        if let Some(sink) = inner.sink.as_ref() {
            if let Ok(Err(e)) =
                tokio::time::timeout(PROBE_TIMEOUT, sink.unsubscribe_room(rid)).await
            {
                tracing::debug!("unsubscribe room {rid}: {e}");
            }
        }
    }

    /// Opens the subscription: the edge's channel, broadcasts and those of `rooms()` (read under
    /// this bus's lock).
    async fn connect(
        &self,
        rooms: impl FnOnce() -> Vec<String>,
    ) -> roomcast_store::Result<Payloads> {
        let mut inner = self.inner.lock().await;
        let sub = self.store.subscribe_edge(&self.edge, &rooms()).await?;
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
        match state.bus.connect(|| state.cell().core.wanted_rooms()).await {
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
    let feeds = state.cell().core.feeds();
    for (rid, _) in feeds {
        match state.store.room_seq(&rid).await {
            Ok(seq) => with_core(&state, |c, out| c.room_seq_checked(&rid, seq, out)),
            Err(e) => tracing::warn!(room = %rid, "cannot check for missed pushes: {e}"),
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
        BusMessage::Room {
            ref rid,
            ref route,
            ref body,
        } => {
            let Some(frame) = room_frame(seq, &msg) else {
                return;
            };
            // An onLeave names who left: the core checks it is not one of its own members
            // removed behind its back (reaped while this edge was paused).
            let leaver = (route == route::ON_LEAVE)
                .then(|| serde_json::from_slice::<OnUser>(body).ok())
                .flatten();
            match leaver {
                Some(u) => with_core(state, |c, out| {
                    c.member_left_push(rid, seq, &u.user, frame, out)
                }),
                None => with_core(state, |c, out| c.room_push(rid, seq, frame, out)),
            }
        }
        BusMessage::Users { uids, route, body } => {
            let Some(frame) = session_frame(route, body) else {
                return;
            };
            with_core(state, |c, out| c.users_push(&uids, &frame, out));
        }
        BusMessage::Broadcast { route, body } => {
            let Some(frame) = session_frame(route, body) else {
                return;
            };
            with_core(state, |c, out| c.broadcast(frame, out));
        }
        BusMessage::RoomDestroyed { ref rid } => {
            let Some(frame) = room_frame(seq, &msg) else {
                return;
            };
            with_core(state, |c, out| c.room_destroyed(rid, seq, frame, out));
        }
        BusMessage::Drain { reason } => {
            tracing::info!(%reason, "drain requested");
            state.drain_requested.notify_one();
        }
        BusMessage::Kick {
            uid,
            session,
            reason,
        } => {
            tracing::info!(%uid, %session, %reason, "kick");
            with_core(state, |c, out| c.kick(&uid, &session, out));
        }
    }
}
