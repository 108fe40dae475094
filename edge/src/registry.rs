//! The edge's lease (its registration, refreshed every [`REGISTRY_REFRESH`]), the caches of
//! live edges (for the gate) and backends (for forwarding), and what the edge does when the
//! lease is found missing while it runs. The core decides which case it is
//! ([`crate::core::EdgeCore::registration_checked`]) from the store's generation:
//!
//! - **The store lost its state** (a new generation: Redis restarted empty): the edge writes
//!   back everything it owns — its sessions' claims and their room memberships, silently and
//!   with each room's seq floor — while the store's recovery window keeps numbering stopped.
//!   A request that meets the recovering store wakes the refresh at once
//!   ([`EdgeState::registry_wake`]) instead of waiting for the next tick.
//! - **The lease expired in the same generation** (the edge was paused or cut off from Redis
//!   longer than its lease): another edge may have reaped its members, so nothing is written
//!   back silently; every session is closed with "reconnect and resume" and clients resume,
//!   joining again visibly where they were removed.
//!
//! While the store recovers, the caches keep the edges and backends they knew (their
//! registrations were wiped too and come back within a second or so): forwarding keeps working
//! instead of answering 502.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roomcast_store::{Claim, EdgeInfo};

use crate::config::REGISTRY_REFRESH;
use crate::core::Registration;
use crate::fanout::with_core;
use crate::state::EdgeState;

/// How soon a failed refresh is retried (Redis down): the first refresh after Redis answers
/// again is what notices a reset.
const RETRY: Duration = Duration::from_millis(200);

/// This edge's registry entry as of now.
pub fn own_entry(state: &EdgeState) -> EdgeInfo {
    EdgeInfo {
        id: state.id.clone(),
        addr: state.advertise.clone(),
        region: state.cfg.region.clone(),
        load: state.session_count() as u64,
        draining: state.draining(),
        pomelo: state.pomelo_advertise.get().cloned(),
    }
}

/// Refreshes the lease and the caches. Returns what the core decided about the lease (on
/// [`Registration::Resume`] the sessions are already being closed).
pub async fn refresh_once(state: &Arc<EdgeState>) -> roomcast_store::Result<Registration> {
    let generation = state.store.generation().await?;
    let (existed, token) = state
        .store
        .register_edge_fenced(&own_entry(state), state.cfg.lease_ttl())
        .await?;
    // From now on only writes with this token pass: any still in flight with an older one
    // (from before a lost lease) are refused.
    state.fence.set(token);
    let decision = with_core(state, |c, out| {
        c.registration_checked(&generation.id, generation.recovering, existed, out)
    });
    let mut edges = state.store.list_edges().await?;
    {
        let mut cache = state.edges.write().unwrap_or_else(|e| e.into_inner());
        if generation.recovering {
            // Registrations are being written back: keep the ones not back yet.
            for e in cache.iter() {
                if !edges.iter().any(|n| n.id == e.id) {
                    edges.push(e.clone());
                }
            }
            edges.sort_by(|a, b| a.id.cmp(&b.id));
        }
        *cache = edges;
    }
    state
        .backends
        .refresh(&state.store, generation.recovering)
        .await?;
    Ok(decision)
}

/// Runs the heartbeat until the process ends. Redis errors are logged and retried every
/// `RETRY`; the caches keep their last good contents meanwhile.
pub async fn run(state: Arc<EdgeState>) {
    let recovering = Arc::new(AtomicBool::new(false));
    // Set when a write-back failed: the next refresh tries again.
    let retry_writeback = Arc::new(AtomicBool::new(false));
    let mut failing = false;
    loop {
        let wait = if failing { RETRY } else { REGISTRY_REFRESH };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.registry_wake.notified() => {}
        }
        let decision = match refresh_once(&state).await {
            Ok(d) => {
                failing = false;
                d
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("registry refresh failed: {e}");
                }
                failing = true;
                continue;
            }
        };
        if decision == Registration::Resume {
            tracing::warn!(
                "the edge's lease had expired (paused or cut off?): its members may have been \
                 reaped; sessions were told to reconnect and resume"
            );
            continue;
        }
        let writeback =
            decision == Registration::Reregister || retry_writeback.swap(false, Ordering::SeqCst);
        if writeback && !recovering.swap(true, Ordering::SeqCst) {
            tracing::warn!("redis lost its data; writing back every claim and membership");
            let state = state.clone();
            let recovering = recovering.clone();
            let retry_writeback = retry_writeback.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                match reregister(&state).await {
                    Ok(()) => {
                        tracing::info!("write-back done in {} ms", started.elapsed().as_millis())
                    }
                    Err(e) => {
                        tracing::warn!("write-back failed, will retry: {e}");
                        retry_writeback.store(true, Ordering::SeqCst);
                    }
                }
                recovering.store(false, Ordering::SeqCst);
            });
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
