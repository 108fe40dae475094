//! The registry of edges and backends: `rc:edge:<id>` / `rc:backend:<id>` hashes that expire
//! unless their process refreshes them (a lease), indexed by `rc:edges` / `rc:backends`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::scripts;
use super::RedisEngine;
use crate::engine::{BackendInfo, EdgeInfo, Generation, Registry};
use crate::{now_ms, Result, RECOVERY_WINDOW};

impl RedisEngine {
    async fn list_registry(
        &self,
        index: &str,
        key: impl Fn(&str) -> String,
        prune: bool,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn.smembers(index).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(key(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, h) in ids.into_iter().zip(hashes) {
            if h.is_empty() {
                dead.push(id);
            } else {
                live.push((id, h));
            }
        }
        if prune && !dead.is_empty() {
            let _: i64 = conn.srem(index, dead).await?;
        }
        Ok(live)
    }
}

#[async_trait]
impl Registry for RedisEngine {
    /// Writes (or refreshes) an edge's entry, its lease: it expires after `ttl` unless
    /// refreshed. Returns whether the entry existed before (false after a lease expiry, or when
    /// Redis lost its data) and its fencing token (new when the entry was written anew).
    async fn register_edge_fenced(&self, e: &EdgeInfo, ttl: Duration) -> Result<(bool, String)> {
        let mut inv = scripts::REGISTER_EDGE.prepare_invoke();
        inv.key(self.keys.edge(&e.id))
            .key(self.keys.edges())
            .arg(ttl.as_millis() as u64)
            .arg(crate::new_fence_token())
            .arg(&e.id);
        for (field, value) in [
            ("id", e.id.clone()),
            ("addr", e.addr.clone()),
            ("region", e.region.clone()),
            ("load", e.load.to_string()),
            ("draining", u8::from(e.draining).to_string()),
            ("heartbeat", now_ms().to_string()),
            ("pomelo", e.pomelo.clone().unwrap_or_default()),
        ] {
            inv.arg(field).arg(value);
        }
        let (existed, fence): (u8, String) = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok((existed == 1, fence))
    }

    /// Removes the edge's entry (its lease) and its id from the index.
    async fn unregister_edge(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.edge(id))
            .ignore()
            .srem(self.keys.edges(), id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Ids in the edge index, alive or not (a dead edge stays there until it is reaped).
    async fn edge_ids(&self) -> Result<Vec<String>> {
        Ok(self.conn.clone().smembers(self.keys.edges()).await?)
    }

    /// Whether the edge holds a live lease.
    async fn edge_alive(&self, id: &str) -> Result<bool> {
        Ok(self.conn.clone().exists(self.keys.edge(id)).await?)
    }

    /// Live edges, sorted by id.
    async fn list_edges(&self) -> Result<Vec<EdgeInfo>> {
        let entries = self
            .list_registry(&self.keys.edges(), |id| self.keys.edge(id), false)
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, h)| EdgeInfo {
                addr: h.get("addr").cloned().unwrap_or_default(),
                region: h.get("region").cloned().unwrap_or_default(),
                load: h.get("load").and_then(|v| v.parse().ok()).unwrap_or(0),
                draining: h.get("draining").is_some_and(|v| v == "1"),
                pomelo: h.get("pomelo").filter(|v| !v.is_empty()).cloned(),
                id,
            })
            .collect())
    }

    /// Writes (or refreshes) a backend's entry; it expires after `ttl` unless refreshed.
    async fn register_backend(&self, b: &BackendInfo, ttl: Duration) -> Result<()> {
        let key = self.keys.backend(&b.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("id", b.id.clone()),
                    ("addr", b.addr.clone()),
                    ("routes", b.routes.join(",")),
                    ("heartbeat", now_ms().to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, ttl.as_millis() as i64)
            .ignore()
            .sadd(self.keys.backends(), &b.id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn unregister_backend(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.backend(id))
            .ignore()
            .srem(self.keys.backends(), id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Live backends, sorted by id. Expired ids are pruned from the index (a backend has no
    /// state to clean up).
    async fn list_backends(&self) -> Result<Vec<BackendInfo>> {
        let entries = self
            .list_registry(&self.keys.backends(), |id| self.keys.backend(id), true)
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, h)| BackendInfo {
                addr: h.get("addr").cloned().unwrap_or_default(),
                routes: h
                    .get("routes")
                    .map(|r| {
                        r.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
                id,
            })
            .collect())
    }

    /// Rooms in which `edge` has members, from its index.
    async fn edge_room_ids(&self, edge: &str) -> Result<Vec<String>> {
        Ok(self
            .conn
            .clone()
            .smembers(self.keys.edge_rooms(edge))
            .await?)
    }

    /// Uids whose claims `edge` holds, from its index.
    async fn edge_session_uids(&self, edge: &str) -> Result<Vec<String>> {
        Ok(self
            .conn
            .clone()
            .smembers(self.keys.edge_sessions(edge))
            .await?)
    }

    /// Takes the lock to clean up after `edge` (one process does it); `ttl` bounds how long a
    /// crashed reaper can hold it.
    async fn lock_reaper(&self, edge: &str, me: &str, ttl: Duration) -> Result<bool> {
        let ok: Option<String> = redis::cmd("SET")
            .arg(self.keys.edge_reaper_lock(edge))
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ok.is_some())
    }

    /// After a dead edge was cleaned up: drops its indexes, its id and the reaper lock.
    async fn forget_edge(&self, edge: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.edge_rooms(edge))
            .ignore()
            .del(self.keys.edge_sessions(edge))
            .ignore()
            .srem(self.keys.edges(), edge)
            .ignore()
            .del(self.keys.edge_reaper_lock(edge))
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn generation(&self) -> Result<Generation> {
        let (id, recovering): (String, u8) = scripts::GENERATION
            .key(self.keys.generation())
            .arg(RECOVERY_WINDOW.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Generation {
            id,
            recovering: recovering == 1,
        })
    }
}
