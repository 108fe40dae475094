//! The global uid → session index (`rc:session:<uid>`): one live session per uid in the whole
//! deployment, and per-edge indexes so a dead edge's claims can be found and released.

use async_trait::async_trait;

use super::{scripts, RedisEngine};
use crate::engine::{Claim, Sessions};
use crate::keys::EDGE_SESSIONS_SUFFIX;
use crate::{now_ms, Result};

impl RedisEngine {
    async fn release_if(&self, uid: &str, field: &str, value: &str) -> Result<bool> {
        let n: i64 = scripts::RELEASE
            .key(self.keys.session(uid))
            .arg(field)
            .arg(value)
            .arg(self.keys.edge_prefix())
            .arg(EDGE_SESSIONS_SUFFIX)
            .arg(uid)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl Sessions for RedisEngine {
    /// Records that `uid` is logged in through `session` on `edge`, unless a session on a live
    /// edge already holds it. A holder whose edge is no longer registered is replaced, and so is
    /// the holder whose session name is `resume` (the client is resuming that session).
    async fn claim_session(
        &self,
        uid: &str,
        edge: &str,
        session: &str,
        resume: Option<&str>,
    ) -> Result<Claim> {
        let (fence_edge, fence_token) = self.fence_args();
        let (status, old_edge, old_session): (i64, String, String) = scripts::CLAIM
            .key(self.keys.session(uid))
            .arg(edge)
            .arg(session)
            .arg(now_ms())
            .arg(self.keys.edge_prefix())
            .arg(EDGE_SESSIONS_SUFFIX)
            .arg(resume.unwrap_or(""))
            .arg(uid)
            .arg(fence_edge)
            .arg(fence_token)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if status == 2 {
            return Err(crate::StoreError::Fenced);
        }
        Ok(if status == 0 {
            Claim::Granted {
                replaced: (!old_session.is_empty()).then_some((old_edge, old_session)),
            }
        } else {
            Claim::Taken { edge: old_edge }
        })
    }

    /// Forgets the uid's session if it is still `session`.
    async fn release_session(&self, uid: &str, session: &str) -> Result<bool> {
        self.release_if(uid, "session", session).await
    }

    /// Forgets the uid's session if it is held through `edge` (cleanup after a dead edge).
    async fn release_session_of_edge(&self, uid: &str, edge: &str) -> Result<bool> {
        self.release_if(uid, "edge", edge).await
    }

    /// The edge the uid is logged in through.
    async fn session_edge(&self, uid: &str) -> Result<Option<String>> {
        use redis::AsyncCommands;
        Ok(self
            .conn
            .clone()
            .hget(self.keys.session(uid), "edge")
            .await?)
    }

    /// The session name holding the uid.
    async fn session_name(&self, uid: &str) -> Result<Option<String>> {
        use redis::AsyncCommands;
        Ok(self
            .conn
            .clone()
            .hget(self.keys.session(uid), "session")
            .await?)
    }
}
