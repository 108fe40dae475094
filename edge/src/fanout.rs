//! Carrying out [`Action`]s of the room feeds: queue frames on sessions, report gaps, fetch
//! history for gap fills and catch-ups.

use std::sync::Arc;

use bytes::Bytes;
use quinn::VarInt;
use roomcast_protocol::bus::BusMessage;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{close, route, OnGap};

use crate::outbound::StreamKey;
use crate::rooms::{Action, SessionId};
use crate::state::{EdgeState, Local};

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

/// Carries out feed actions for room `rid`. Called with the local lock held: only queues and
/// spawns, never waits.
pub fn apply(state: &Arc<EdgeState>, local: &Local, rid: &str, actions: Vec<Action>) {
    let key = StreamKey::Room(rid.to_string());
    for action in actions {
        match action {
            Action::Deliver { sid, seq, frame } => {
                if let Some(s) = local.sessions.get(&sid) {
                    s.outbound.push(&key, seq, frame);
                }
            }
            Action::Gap { sid, rid, from, to } => {
                tracing::info!("session {sid} misses {rid} seqs {from}..={to} (not in history)");
                if let (Some(s), Some(frame)) =
                    (local.sessions.get(&sid), gap_frame(&rid, from, to))
                {
                    s.outbound.push(&StreamKey::Room(rid.clone()), to, frame);
                }
            }
            Action::Fill { rid, after, upto } => {
                tokio::spawn(fill(state.clone(), rid, after, upto));
            }
            Action::CatchUp {
                rid,
                sid,
                after,
                upto,
            } => {
                tokio::spawn(catch_up(state.clone(), rid, sid, after, upto));
            }
            Action::Disconnect { sid } => {
                if let Some(s) = local.sessions.get(&sid) {
                    s.conn.close(
                        VarInt::from_u32(close::SLOW_CONSUMER),
                        b"slow consumer: fell too far behind",
                    );
                }
            }
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
                tracing::warn!(
                    "history of {rid} unavailable (attempt {}): {e}",
                    attempt + 1
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    Vec::new()
}

/// Fills a gap in the room's feed from history.
pub async fn fill(state: Arc<EdgeState>, rid: String, after: u64, upto: u64) {
    tracing::debug!("filling {rid} ({after}, {upto}] from history");
    let entries = history_frames(&state, &rid, after, upto).await;
    let local = &mut *state.local.lock().expect("local lock");
    let actions = local.rooms.filled(&rid, upto, entries);
    apply(&state, local, &rid, actions);
}

/// Replays history to one member; returns the gap it could not replay, if any.
pub async fn catch_up(
    state: Arc<EdgeState>,
    rid: String,
    sid: SessionId,
    after: u64,
    upto: u64,
) -> Option<(u64, u64)> {
    let entries = history_frames(&state, &rid, after, upto).await;
    let local = &mut *state.local.lock().expect("local lock");
    let actions = local.rooms.caught_up(&rid, sid, upto, entries);
    let gap = actions.iter().find_map(|a| match a {
        Action::Gap {
            sid: s, from, to, ..
        } if *s == sid => Some((*from, *to)),
        _ => None,
    });
    apply(&state, local, &rid, actions);
    gap
}
