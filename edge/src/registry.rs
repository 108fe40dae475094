//! The edge's lease (its registration, refreshed every [`REGISTRY_REFRESH`]), the caches of
//! live edges (for the gate) and backends (for forwarding), and recovery when Redis lost its
//! data: if the lease is found missing while the edge is running, the edge registers again
//! everything it owns — its sessions' uids and their room memberships — so rooms are complete
//! again within one refresh of Redis coming back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use roomcast_store::{Claim, EdgeInfo};

use crate::config::REGISTRY_REFRESH;
use crate::fanout::with_core;
use crate::state::EdgeState;

/// This edge's registry entry as of now.
pub fn own_entry(state: &EdgeState) -> EdgeInfo {
    EdgeInfo {
        id: state.id.clone(),
        addr: state.advertise.clone(),
        region: state.cfg.region.clone(),
        load: state.session_count() as u64,
        draining: state.draining(),
    }
}

/// Refreshes the lease and the caches. Returns whether the lease had been lost.
pub async fn refresh_once(state: &EdgeState) -> roomcast_store::Result<bool> {
    let existed = state
        .store
        .register_edge(&own_entry(state), state.cfg.lease_ttl())
        .await?;
    let edges = state.store.list_edges().await?;
    *state.edges.write().unwrap_or_else(|e| e.into_inner()) = edges;
    state.backends.refresh(&state.store).await?;
    Ok(!existed)
}

/// Runs the heartbeat until the process ends. Redis errors are logged and retried; the caches
/// keep their last good contents meanwhile.
pub async fn run(state: Arc<EdgeState>) {
    let mut tick = tokio::time::interval(REGISTRY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recovering = Arc::new(AtomicBool::new(false));
    loop {
        tick.tick().await;
        match refresh_once(&state).await {
            Ok(true) if !recovering.swap(true, Ordering::SeqCst) => {
                tracing::warn!(
                    "the edge's lease was gone from redis; registering everything again"
                );
                let state = state.clone();
                let recovering = recovering.clone();
                tokio::spawn(async move {
                    if let Err(e) = reregister(&state).await {
                        tracing::warn!("re-registration failed, will retry: {e}");
                        // Let the next refresh notice again.
                        let _ = state.store.unregister_edge(&state.id).await;
                    }
                    recovering.store(false, Ordering::SeqCst);
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("registry refresh failed: {e}"),
        }
    }
}

/// Writes back everything this edge owns: each session's uid claim and each local room
/// membership (without onAdd, keeping each room's seq at least where this edge saw it).
pub async fn reregister(state: &Arc<EdgeState>) -> roomcast_store::Result<()> {
    let (sessions, feeds) = {
        let cell = state.cell();
        let core = &cell.core;
        let feeds: Vec<_> = core
            .feeds()
            .into_iter()
            .map(|(rid, last)| {
                let members = core.members(&rid);
                (rid, last, members)
            })
            .collect();
        (core.logged_in(), feeds)
    };
    let mut uids = std::collections::HashMap::new();
    for (sid, uid, token) in sessions {
        match state
            .store
            .claim_session(&uid, &state.id, &token, Some(&token))
            .await?
        {
            Claim::Granted { .. } => {
                uids.insert(sid, uid);
            }
            Claim::Taken { edge } => {
                tracing::warn!(%uid, %edge, "logged in elsewhere while redis was empty; closing ours");
                with_core(state, |c, out| c.replaced_elsewhere(sid, out));
            }
        }
    }
    let mut rooms = 0;
    for (rid, last, members) in feeds {
        for sid in members {
            if let Some(uid) = uids.get(&sid) {
                state
                    .store
                    .join_with(&rid, uid, &state.id, None, true, last)
                    .await?;
            }
        }
        rooms += 1;
    }
    tracing::info!("re-registered {} sessions and {rooms} rooms", uids.len());
    Ok(())
}
