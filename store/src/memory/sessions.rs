//! The global uid → session claims, mirroring the Redis `CLAIM` / `RELEASE` scripts.

use async_trait::async_trait;

use super::{set_add, set_remove, MemoryEngine};
use crate::engine::{Claim, Sessions};
use crate::Result;

/// `rc:session:<uid>` of the Redis engine.
pub(super) struct SessionClaim {
    pub(super) edge: String,
    pub(super) session: String,
}

impl MemoryEngine {
    /// Forgets the claim if `pick(claim) == value`.
    fn release_if(&self, uid: &str, pick: fn(&SessionClaim) -> &str, value: &str) -> bool {
        let (mut state, _) = self.lock();
        let Some(claim) = state.sessions.get(uid).filter(|c| pick(c) == value) else {
            return false;
        };
        let edge = claim.edge.clone();
        state.sessions.remove(uid);
        set_remove(&mut state.edge_sessions, &edge, uid);
        true
    }
}

#[async_trait]
impl Sessions for MemoryEngine {
    async fn claim_session(
        &self,
        uid: &str,
        edge: &str,
        session: &str,
        resume: Option<&str>,
    ) -> Result<Claim> {
        let (mut state, now) = self.lock();
        if self.fenced_out(&state, edge, now) {
            return Err(crate::StoreError::Fenced);
        }
        let mut replaced = None;
        if let Some(cur) = state.sessions.get(uid) {
            if cur.edge == edge && cur.session == session {
                return Ok(Claim::Granted { replaced: None });
            }
            let alive = state.edge_alive(&cur.edge, now);
            if alive && resume != Some(cur.session.as_str()) {
                return Ok(Claim::Taken {
                    edge: cur.edge.clone(),
                });
            }
            let (old_edge, old_session) = (cur.edge.clone(), cur.session.clone());
            set_remove(&mut state.edge_sessions, &old_edge, uid);
            replaced = Some((old_edge, old_session));
        }
        state.sessions.insert(
            uid.to_string(),
            SessionClaim {
                edge: edge.to_string(),
                session: session.to_string(),
            },
        );
        set_add(&mut state.edge_sessions, edge, uid);
        Ok(Claim::Granted { replaced })
    }

    async fn release_session(&self, uid: &str, session: &str) -> Result<bool> {
        Ok(self.release_if(uid, |c| &c.session, session))
    }

    async fn release_session_of_edge(&self, uid: &str, edge: &str) -> Result<bool> {
        Ok(self.release_if(uid, |c| &c.edge, edge))
    }

    async fn session_edge(&self, uid: &str) -> Result<Option<String>> {
        Ok(self.lock().0.sessions.get(uid).map(|c| c.edge.clone()))
    }

    async fn session_name(&self, uid: &str) -> Result<Option<String>> {
        Ok(self.lock().0.sessions.get(uid).map(|c| c.session.clone()))
    }
}
