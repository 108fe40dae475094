//! The global uid → session index (`rc:session:<uid>`): one live session per uid in the whole
//! deployment, and per-edge indexes so a dead edge's claims can be found and released.

use super::{now_ms, scripts, Result, Store};
use crate::keys::EDGE_SESSIONS_SUFFIX;

/// Result of [`Store::claim_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claim is ours. `replaced` names the (edge, session) it was taken from, when a resume
    /// took over a session that is still registered somewhere.
    Granted { replaced: Option<(String, String)> },
    /// The uid has a live session on `edge` (which may be this edge).
    Taken { edge: String },
}

impl Store {
    /// Records that `uid` is logged in through `session` on `edge`, unless a session on a live
    /// edge already holds it. A holder whose edge is no longer registered is replaced, and so is
    /// the holder whose session name is `resume` (the client is resuming that session).
    pub async fn claim_session(
        &self,
        uid: &str,
        edge: &str,
        session: &str,
        resume: Option<&str>,
    ) -> Result<Claim> {
        let (status, old_edge, old_session): (i64, String, String) = scripts::CLAIM
            .key(self.keys.session(uid))
            .arg(edge)
            .arg(session)
            .arg(now_ms())
            .arg(self.keys.edge_prefix())
            .arg(EDGE_SESSIONS_SUFFIX)
            .arg(resume.unwrap_or(""))
            .arg(uid)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if status == 0 {
            Claim::Granted {
                replaced: (!old_session.is_empty()).then_some((old_edge, old_session)),
            }
        } else {
            Claim::Taken { edge: old_edge }
        })
    }

    /// Forgets the uid's session if it is still `session`.
    pub async fn release_session(&self, uid: &str, session: &str) -> Result<bool> {
        self.release(uid, "session", session).await
    }

    /// Forgets the uid's session if it is held through `edge` (cleanup after a dead edge).
    pub async fn release_session_of_edge(&self, uid: &str, edge: &str) -> Result<bool> {
        self.release(uid, "edge", edge).await
    }

    async fn release(&self, uid: &str, field: &str, value: &str) -> Result<bool> {
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

    /// The edge the uid is logged in through.
    pub async fn session_edge(&self, uid: &str) -> Result<Option<String>> {
        use redis::AsyncCommands;
        Ok(self
            .conn
            .clone()
            .hget(self.keys.session(uid), "edge")
            .await?)
    }

    /// The session name holding the uid.
    pub async fn session_name(&self, uid: &str) -> Result<Option<String>> {
        use redis::AsyncCommands;
        Ok(self
            .conn
            .clone()
            .hget(self.keys.session(uid), "session")
            .await?)
    }
}
