//! Edges and backends as leases on the engine's monotonic clock, their indexes, and the reaper
//! lock, mirroring the Redis registry (`rc:edge:<id>` with a TTL, `rc:edges`, …).

use std::time::Duration;

use async_trait::async_trait;

use super::{Lease, MemoryEngine};
use crate::engine::{BackendInfo, EdgeInfo, Generation, Registry};
use crate::Result;

#[async_trait]
impl Registry for MemoryEngine {
    async fn register_edge_fenced(&self, e: &EdgeInfo, ttl: Duration) -> Result<(bool, String)> {
        let (mut state, now) = self.lock();
        let existed = state.edge_alive(&e.id, now);
        if !existed || !state.edge_fences.contains_key(&e.id) {
            state
                .edge_fences
                .insert(e.id.clone(), crate::new_fence_token());
        }
        let fence = state.edge_fences[&e.id].clone();
        state.edge_leases.insert(
            e.id.clone(),
            Lease {
                value: e.clone(),
                expires: now + ttl,
            },
        );
        state.edge_index.insert(e.id.clone());
        Ok((existed, fence))
    }

    async fn unregister_edge(&self, id: &str) -> Result<()> {
        let (mut state, _) = self.lock();
        state.edge_leases.remove(id);
        state.edge_fences.remove(id);
        state.edge_index.remove(id);
        Ok(())
    }

    async fn edge_ids(&self) -> Result<Vec<String>> {
        Ok(self.lock().0.edge_index.iter().cloned().collect())
    }

    async fn edge_alive(&self, id: &str) -> Result<bool> {
        let (state, now) = self.lock();
        Ok(state.edge_alive(id, now))
    }

    async fn list_edges(&self) -> Result<Vec<EdgeInfo>> {
        let (state, now) = self.lock();
        Ok(state
            .edge_index
            .iter()
            .filter_map(|id| state.edge_leases.get(id).filter(|l| l.live(now)))
            .map(|l| l.value.clone())
            .collect())
    }

    async fn register_backend(&self, b: &BackendInfo, ttl: Duration) -> Result<()> {
        let (mut state, now) = self.lock();
        state.backend_leases.insert(
            b.id.clone(),
            Lease {
                value: b.clone(),
                expires: now + ttl,
            },
        );
        state.backend_index.insert(b.id.clone());
        Ok(())
    }

    async fn unregister_backend(&self, id: &str) -> Result<()> {
        let (mut state, _) = self.lock();
        state.backend_leases.remove(id);
        state.backend_index.remove(id);
        Ok(())
    }

    async fn list_backends(&self) -> Result<Vec<BackendInfo>> {
        let (mut state, now) = self.lock();
        let state = &mut *state;
        let leases = &state.backend_leases;
        state
            .backend_index
            .retain(|id| leases.get(id).is_some_and(|l| l.live(now)));
        Ok(state
            .backend_index
            .iter()
            .filter_map(|id| leases.get(id))
            .map(|l| l.value.clone())
            .collect())
    }

    async fn edge_room_ids(&self, edge: &str) -> Result<Vec<String>> {
        let (state, _) = self.lock();
        Ok(state
            .edge_rooms
            .get(edge)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn edge_session_uids(&self, edge: &str) -> Result<Vec<String>> {
        let (state, _) = self.lock();
        Ok(state
            .edge_sessions
            .get(edge)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn lock_reaper(&self, edge: &str, me: &str, ttl: Duration) -> Result<bool> {
        let (mut state, now) = self.lock();
        if state.reaper_locks.get(edge).is_some_and(|l| l.live(now)) {
            return Ok(false);
        }
        state.reaper_locks.insert(
            edge.to_string(),
            Lease {
                value: me.to_string(),
                expires: now + ttl,
            },
        );
        Ok(true)
    }

    async fn forget_edge(&self, edge: &str) -> Result<()> {
        let (mut state, _) = self.lock();
        state.edge_rooms.remove(edge);
        state.edge_sessions.remove(edge);
        state.edge_index.remove(edge);
        state.reaper_locks.remove(edge);
        Ok(())
    }

    async fn generation(&self) -> Result<Generation> {
        let (mut state, now) = self.lock();
        Ok(state.generation(now))
    }
}
