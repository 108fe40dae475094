//! Cleaning up after dead edges.
//!
//! An edge's registry entry is its lease: refreshed every second, it expires
//! `--lease-ttl-ms` (5 s) after the edge's last refresh. Every edge sweeps the edge
//! index every second; for an id whose lease is gone, exactly one edge takes the reaper lock
//! releases the uids it held, then removes that edge's members from each of its rooms (pushing
//! onLeave), found through the edge's own room index — never a scan of the keyspace. An edge
//! whose lease is live again (it was paused, not dead) is not reaped, and the leave script run
//! through this edge's fenced store handle skips it if it comes back mid-reap.
//! The leave script only removes a member still registered through the dead edge, so a user
//! who already resumed elsewhere is left alone, and a live edge's members are never touched.

use std::sync::Arc;
use std::time::Duration;

use roomcast_protocol::protocol::{route, OnUser};
use roomcast_store::Result;

use crate::config::REGISTRY_REFRESH;
use crate::state::EdgeState;

/// How long a reaper may hold the lock before another edge may take over (if it crashed).
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// Sweeps until the process ends.
pub async fn run(state: Arc<EdgeState>) {
    let mut tick = tokio::time::interval(REGISTRY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::warn!("reaper sweep failed: {e}");
        }
    }
}

async fn sweep(state: &EdgeState) -> Result<()> {
    for id in state.store.edge_ids().await? {
        if id == state.id || state.store.edge_alive(&id).await? {
            continue;
        }
        if !state.store.lock_reaper(&id, &state.id, LOCK_TTL).await? {
            continue; // another edge is on it
        }
        let (rooms, members) = reap(state, &id).await?;
        tracing::info!("edge {id} is dead: removed {members} members from {rooms} rooms");
    }
    Ok(())
}

/// Removes every member registered through `edge` and releases its uids. Returns (rooms,
/// members) cleaned.
pub async fn reap(state: &EdgeState, edge: &str) -> Result<(usize, usize)> {
    let store = &state.store;
    // The edge came back (it was paused, not dead): its claims and indexes stay; it tells its
    // own sessions to resume. If it comes back during the leaves below, the store skips them
    // (this handle is fenced: a leave through a live edge is not a reap).
    if edge != state.id && store.edge_alive(edge).await? {
        tracing::info!("edge {edge} is alive again; not reaping it");
        return Ok((0, 0));
    }
    // Claims first: once others see a member leave, its uid is free to log in again.
    for uid in store.edge_session_uids(edge).await? {
        store.release_session_of_edge(&uid, edge).await?;
    }
    let rooms = store.edge_room_ids(edge).await?;
    let mut members = 0;
    for rid in &rooms {
        for uid in store.group(rid, edge).await? {
            let body = OnUser::body(&uid);
            if store
                .leave(rid, &uid, Some(edge), Some((route::ON_LEAVE, &body)))
                .await?
                .is_some()
            {
                members += 1;
            }
        }
    }
    store.forget_edge(edge).await?;
    Ok((rooms.len(), members))
}
