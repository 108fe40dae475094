//! Every Redis key and pub/sub channel name roomcast uses, built in one place.
//!
//! Key names are an interface: operators read them in redis-cli, so they are readable and
//! documented in `ARCHITECTURE.md`. With the default prefix `rc`:
//!
//! | name | type | holds |
//! | --- | --- | --- |
//! | `rc:rooms` | set | ids of rooms that have members (the room index) |
//! | `rc:room:{<rid>}:members` | hash | uid → edge id (Pomelo's *records*) |
//! | `rc:room:{<rid>}:edges` | set | edges that host members of the room |
//! | `rc:room:{<rid>}:edge:<edge>` | set | uids of the room on that edge (Pomelo's *groups*) |
//! | `rc:room:{<rid>}:seq` | string | last sequence number pushed to the room (a numbering starts at `crate::seq_start`) |
//! | `rc:room:{<rid>}:req:<key>` | string | seq of an already published request (dedupe, TTL) |
//! | `rc:room:{<rid>}:history` | sorted set | recent pushes scored by seq (resume, gap fill) |
//! | `rc:room:{<rid>}:push` | channel | the room's pushes (bincode, see `bus`) |
//! | `rc:session:<uid>` | hash | `edge`, `session`, `since` of the uid's live session |
//! | `rc:edges` / `rc:edge:<id>` | set / hash | edge registry (hash expires unless refreshed) |
//! | `rc:edge:<id>:push` | channel | pushes addressed to given uids on that edge |
//! | `rc:edge:<id>:rooms` / `:sessions` | set / set | rooms with members on the edge, uids it holds (reaping) |
//! | `rc:edge:<id>:reaper` | string | lock held by the process cleaning up a dead edge |
//! | `rc:backends` / `rc:backend:<id>` | set / hash | backend registry |
//! | `rc:broadcast` | channel | pushes to every session on every edge |
//! | `rc:settings` | hash | settings every process must share (written by the first one) |
//! | `rc:generation` | hash | `id` of the store's life, `recovering_until` (ms) after a reset |
//!
//! A room's keys and channel share the hash tag `{<rid>}`, so in Redis Cluster they live in one
//! slot. User-supplied strings are escaped with [`escape`]: bytes outside `[A-Za-z0-9._@+~-]`
//! become `%XX`, so `:`, `{`, `}`, `*` and spaces cannot break the schema, and distinct ids give
//! distinct keys.

use std::borrow::Cow;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "rc";

/// Builds key and channel names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Lets several roomcast deployments (or test runs) share one Redis without colliding.
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// `prefix` is used as is; it should be short and readable (validated like a node id).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn room(&self, rid: &str, suffix: &str) -> String {
        concat(&[&self.prefix, ":room:{", &escaped(rid), "}:", suffix])
    }

    /// The room index: ids (unescaped) of rooms with at least one member.
    pub fn rooms(&self) -> String {
        concat(&[&self.prefix, ":rooms"])
    }

    /// uid → edge id.
    pub fn room_members(&self, rid: &str) -> String {
        self.room(rid, "members")
    }

    /// Edges hosting at least one member of the room.
    pub fn room_edges(&self, rid: &str) -> String {
        self.room(rid, "edges")
    }

    /// Uids of the room on one edge.
    pub fn room_edge_members(&self, rid: &str, edge: &str) -> String {
        concat(&[&self.prefix, ":room:{", &escaped(rid), "}:edge:", edge])
    }

    /// What Lua scripts append an edge id to (edge ids are validated, never escaped).
    pub fn room_edge_members_prefix(&self, rid: &str) -> String {
        self.room(rid, "edge:")
    }

    pub fn room_seq(&self, rid: &str) -> String {
        self.room(rid, "seq")
    }

    /// Recent pushes of the room, scored by seq.
    pub fn room_history(&self, rid: &str) -> String {
        self.room(rid, "history")
    }

    /// Dedupe marker of one published request.
    pub fn room_request(&self, rid: &str, request_key: &str) -> String {
        self.room(rid, &concat(&["req:", &escaped(request_key)]))
    }

    /// The room's pub/sub channel.
    pub fn room_channel(&self, rid: &str) -> String {
        self.room(rid, "push")
    }

    pub fn session(&self, uid: &str) -> String {
        concat(&[&self.prefix, ":session:", &escaped(uid)])
    }

    pub fn edges(&self) -> String {
        concat(&[&self.prefix, ":edges"])
    }

    pub fn edge(&self, id: &str) -> String {
        concat(&[&self.prefix, ":edge:", id])
    }

    /// What Lua scripts append an edge id to, to test whether that edge is alive.
    pub fn edge_prefix(&self) -> String {
        concat(&[&self.prefix, ":edge:"])
    }

    pub fn edge_channel(&self, id: &str) -> String {
        concat(&[&self.prefix, ":edge:", id, EDGE_CHANNEL_SUFFIX])
    }

    /// Rooms in which the edge has members (so a dead edge's rooms are found without a scan).
    pub fn edge_rooms(&self, id: &str) -> String {
        concat(&[&self.prefix, ":edge:", id, EDGE_ROOMS_SUFFIX])
    }

    /// Uids whose session claim the edge holds.
    pub fn edge_sessions(&self, id: &str) -> String {
        concat(&[&self.prefix, ":edge:", id, EDGE_SESSIONS_SUFFIX])
    }

    /// Lock taken by the one process that cleans up after a dead edge.
    pub fn edge_reaper_lock(&self, id: &str) -> String {
        concat(&[&self.prefix, ":edge:", id, ":reaper"])
    }

    pub fn backends(&self) -> String {
        concat(&[&self.prefix, ":backends"])
    }

    pub fn backend(&self, id: &str) -> String {
        concat(&[&self.prefix, ":backend:", id])
    }

    pub fn broadcast_channel(&self) -> String {
        concat(&[&self.prefix, ":broadcast"])
    }

    /// The store's generation marker: its absence tells a running system the store lost its
    /// state (see the engine contract, "Losing state").
    pub fn generation(&self) -> String {
        concat(&[&self.prefix, ":generation"])
    }

    /// Settings every process must share (history bounds, presence limit, id rules).
    pub fn settings(&self) -> String {
        concat(&[&self.prefix, ":settings"])
    }
}

/// Suffix of an edge's push channel after `edge_prefix() + id`.
pub const EDGE_CHANNEL_SUFFIX: &str = ":push";
/// Suffix of an edge's room index after `edge_prefix() + id`.
pub const EDGE_ROOMS_SUFFIX: &str = ":rooms";
/// Suffix of an edge's session index after `edge_prefix() + id`.
pub const EDGE_SESSIONS_SUFFIX: &str = ":sessions";

/// Escapes a user-supplied string for use inside a key name (see the module doc).
pub fn escape(s: &str) -> String {
    escaped(s).into_owned()
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'~' | b'-')
}

/// [`escape`] without a copy for the usual id that needs none: every room call builds
/// several names from the same id.
fn escaped(s: &str) -> Cow<'_, str> {
    if s.bytes().all(is_plain) {
        return Cow::Borrowed(s);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
    Cow::Owned(out)
}

/// One allocation of the exact size: names are built for every store call, and `format!`
/// grows its buffer as it goes.
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_names() {
        let k = Keys::default();
        assert_eq!(k.room_members("lobby"), "rc:room:{lobby}:members");
        assert_eq!(
            k.room_edge_members("lobby", "e1"),
            "rc:room:{lobby}:edge:e1"
        );
        assert_eq!(k.room_channel("lobby"), "rc:room:{lobby}:push");
        assert_eq!(k.session("alice"), "rc:session:alice");
        assert_eq!(k.edge("e1"), "rc:edge:e1");
        assert_eq!(k.edge_channel("e1"), "rc:edge:e1:push");
        assert_eq!(Keys::new("t9").rooms(), "t9:rooms");
        assert_eq!(k.settings(), "rc:settings");
    }

    #[test]
    fn hostile_ids_cannot_break_the_schema() {
        let k = Keys::default();
        let key = k.room_members("a}:{b *");
        assert_eq!(key, "rc:room:{a%7D%3A%7Bb%20%2A}:members");
        // Exactly one hash tag, and it is the escaped id.
        assert_eq!(key.matches('{').count(), 1);
        assert_eq!(key.matches('}').count(), 1);
        assert_eq!(k.session("x:y"), "rc:session:x%3Ay");
    }

    #[test]
    fn escaping_is_injective() {
        let ids = ["a:b", "a%3Ab", "a b", "a%20b", "ü", "%C3%BC", "{", "%7B"];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            assert!(seen.insert(escape(id)), "collision for {id}");
        }
    }
}
