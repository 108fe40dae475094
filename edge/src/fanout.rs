//! Carrying out the core's [`Effect`]s on QUIC: queue frames on sessions' push streams, finish
//! streams, close connections (all under the core lock, so each room's seq order holds per
//! stream), and the async remainder ([`Later`]: history fetches, unsubscribes, claim checks,
//! leaves) after the lock is released.

use std::sync::Arc;

use bytes::Bytes;
use roomcast_protocol::bus::BusMessage;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{close, route, OnGap};
use tracing::Instrument;

use crate::core::{Action, Effect, Fetched};
use crate::outbound::StreamKey;
use crate::state::{Core, EdgeState};
/// The client frame for a room push, encoded once for every recipient.
pub fn room_frame(seq: u64, msg: &BusMessage) -> Option<Bytes> {
    let frame = match msg {
        BusMessage::Room { rid, route, body } => Frame::Push {
            route: route.clone(),
            rid: rid.clone(),
            seq,
            body: Bytes::from(body.clone()),
        },
        BusMessage::RoomDestroyed { rid } => Frame::Push {
            route: route::ON_DESTROY.into(),
            rid: rid.clone(),
            seq,
            body: Bytes::from(serde_json::json!({ "rid": rid }).to_string()),
        },
        _ => return None,
    };
    frame
        .to_bytes()
        .map_err(|e| tracing::warn!("dropping unencodable push: {e}"))
        .ok()
}

pub fn gap_frame(rid: &str, from: u64, to: u64) -> Option<Bytes> {
    let body = serde_json::to_vec(&OnGap {
        rid: rid.to_string(),
        from,
        to,
    })
    .ok()?;
    Frame::Push {
        route: route::ON_GAP.into(),
        rid: rid.to_string(),
        seq: to,
        body: Bytes::from(body),
    }
    .to_bytes()
    .ok()
}

/// Work an effect asks for that needs IO: done after the core lock is released.
#[derive(Debug)]
pub enum Later {
    /// Fetch history `(after, upto]` and report it to the core.
    Fetch {
        fetched: Fetched,
        after: u64,
    },
    Unsubscribe {
        rid: String,
    },
    CheckClaim {
        uid: String,
        token: String,
    },
    Leave {
        uid: String,
        token: String,
        rooms: Vec<String>,
    },
}

/// Runs `f` on the core, carries out its effects under the lock and spawns what needs IO.
pub fn with_core<R>(state: &Arc<EdgeState>, f: impl FnOnce(&mut Core, &mut Vec<Effect>) -> R) -> R {
    let (r, later) = with_core_later(state, f);
    spawn_later(state, later);
    r
}

/// Like [`with_core`], returning the IO work instead of spawning it (a request awaits its
/// catch-ups to report their gap).
pub fn with_core_later<R>(
    state: &Arc<EdgeState>,
    f: impl FnOnce(&mut Core, &mut Vec<Effect>) -> R,
) -> (R, Vec<Later>) {
    let mut later = Vec::new();
    let r = state
        .cell()
        .run(f, |core, effects| apply(core, effects, &mut later));
    (r, later)
}

pub fn spawn_later(state: &Arc<EdgeState>, later: Vec<Later>) {
    for l in later {
        tokio::spawn(run_later(state.clone(), l).in_current_span());
    }
}

/// Carries out effects. Called with the core lock held: only queues, closes and collects, never
/// waits. Per recipient this is one look-up and one queue push, as before the core existed.
pub fn apply(core: &Core, effects: &mut Vec<Effect>, later: &mut Vec<Later>) {
    for effect in effects.drain(..) {
        match effect {
            Effect::Feed { rid, actions } => {
                let key = StreamKey::Room(rid);
                for action in actions {
                    apply_action(core, &key, action, later);
                }
            }
            Effect::ToSession { sid, frame } => {
                if let Some(s) = core.handle(sid) {
                    s.push(&StreamKey::Session, 0, frame);
                }
            }
            Effect::ToAll { frame } => {
                for s in core.handles() {
                    s.push(&StreamKey::Session, 0, frame.clone());
                }
            }
            Effect::Finish { sid, rid } => {
                if let Some(s) = core.handle(sid) {
                    s.finish(&StreamKey::Room(rid));
                }
            }
            Effect::Close { sid, code, reason } => {
                if let Some(s) = core.handle(sid) {
                    tracing::info!(parent: &s.span, code, reason, "closing session");
                    s.close(code, reason);
                }
            }
            Effect::Unsubscribe { rid } => later.push(Later::Unsubscribe { rid }),
            Effect::CheckClaim { uid, token } => later.push(Later::CheckClaim { uid, token }),
            Effect::Leave { uid, token, rooms } => later.push(Later::Leave { uid, token, rooms }),
        }
    }
}

fn apply_action(core: &Core, key: &StreamKey, action: Action, later: &mut Vec<Later>) {
    match action {
        Action::Deliver { sid, seq, frame } => {
            if let Some(s) = core.handle(sid) {
                s.push(key, seq, frame);
            }
        }
        Action::Gap { sid, rid, from, to } => {
            if let Some(s) = core.handle(sid) {
                tracing::info!(parent: &s.span, room = %rid, from, to, "seqs lost to the session");
                if let Some(frame) = gap_frame(&rid, from, to) {
                    s.push(key, to, frame);
                }
            }
        }
        Action::Fill { rid, after, upto } => later.push(Later::Fetch {
            fetched: Fetched::Fill { rid, upto },
            after,
        }),
        Action::CatchUp {
            rid,
            sid,
            after,
            upto,
        } => later.push(Later::Fetch {
            fetched: Fetched::CatchUp { rid, sid, upto },
            after,
        }),
        Action::Disconnect { sid } => {
            if let Some(s) = core.handle(sid) {
                tracing::warn!(parent: &s.span, "slow consumer: fell too far behind; closing");
                s.close(close::SLOW_CONSUMER, "slow consumer: fell too far behind");
            }
        }
    }
}

/// Does one piece of IO work and reports its outcome to the core. Returns the gap a catch-up
/// reported for its member, if any.
pub async fn run_later(state: Arc<EdgeState>, later: Later) -> Option<(u64, u64)> {
    match later {
        Later::Fetch { fetched, after } => {
            let (rid, upto) = match &fetched {
                Fetched::Fill { rid, upto } | Fetched::CatchUp { rid, upto, .. } => (rid, *upto),
            };
            let span = tracing::debug_span!("history", room = %rid, after, upto);
            let entries = history_frames(&state, rid, after, upto)
                .instrument(span)
                .await;
            with_core(&state, |c, out| c.history_fetched(fetched, entries, out))
        }
        Later::Unsubscribe { rid } => {
            let wanted = || state.cell().core.wants_room(&rid);
            state.bus.unsubscribe(&rid, wanted).await;
            None
        }
        Later::CheckClaim { uid, token } => {
            let ours = match state.store.session_name(&uid).await {
                Ok(current) => current.as_deref() == Some(token.as_str()),
                Err(e) => {
                    tracing::warn!(%uid, "cannot check the session: {e}; leaving its rooms");
                    true
                }
            };
            with_core(&state, |c, out| c.claim_checked(&uid, &token, ours, out));
            None
        }
        Later::Leave { uid, token, rooms } => {
            crate::session::leave_all(&state, &uid, &token, &rooms).await;
            None
        }
    }
}

/// History `(after, upto]` of the room as (seq, frame), oldest first. On a Redis error the
/// fetch is retried a few times, then reported as empty (the seqs become a reported gap).
async fn history_frames(state: &EdgeState, rid: &str, after: u64, upto: u64) -> Vec<(u64, Bytes)> {
    for attempt in 0..5 {
        match state.store.history(rid, after, upto).await {
            Ok(entries) => {
                return entries
                    .into_iter()
                    .filter_map(|e| room_frame(e.seq, &e.message).map(|f| (e.seq, f)))
                    .collect()
            }
            Err(e) => {
                tracing::warn!(room = %rid, attempt = attempt + 1, "history unavailable: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    Vec::new()
}
