//! The edge's registration heartbeat, and the caches of live edges (for the gate) and
//! backends (for forwarding), refreshed together every [`REGISTRY_REFRESH`].

use std::sync::Arc;

use roomcast_common::store::EdgeInfo;

use crate::config::{REGISTRY_REFRESH, REGISTRY_TTL};
use crate::state::EdgeState;

/// This edge's registry entry as of now.
pub fn own_entry(state: &EdgeState, draining: bool) -> EdgeInfo {
    EdgeInfo {
        id: state.id.clone(),
        addr: state.advertise.clone(),
        region: state.cfg.region.clone(),
        load: state.session_count() as u64,
        draining,
    }
}

/// Registers once and fills the caches; used at start-up so the first gate query is answered.
pub async fn refresh_once(state: &EdgeState) -> roomcast_common::store::Result<()> {
    state
        .store
        .register_edge(&own_entry(state, false), REGISTRY_TTL)
        .await?;
    let edges = state.store.list_edges().await?;
    *state.edges.write().expect("edges lock") = edges;
    state.backends.refresh(&state.store).await?;
    Ok(())
}

/// Runs the heartbeat until the process ends. Redis errors are logged and retried; the caches
/// keep their last good contents meanwhile.
pub async fn run(state: Arc<EdgeState>) {
    let mut tick = tokio::time::interval(REGISTRY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = refresh_once(&state).await {
            tracing::warn!("registry refresh failed: {e}");
        }
    }
}
