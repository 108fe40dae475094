//! Which local sessions are in which room, and from which sequence number on.
//!
//! Plain code without IO. A member records the room seq returned by its join; it receives only
//! pushes with a greater seq. That is the recipient snapshot Pomelo lacked: the joiner never
//! receives its own `onAdd` (whose seq equals its join seq), nor anything published before it
//! joined, however the pub/sub message and the join response race each other.

use std::collections::HashMap;

/// Edge-local session id.
pub type SessionId = u64;

#[derive(Debug, Default)]
pub struct LocalRooms {
    /// rid → (session → join seq).
    rooms: HashMap<String, HashMap<SessionId, u64>>,
}

impl LocalRooms {
    /// Records the session as a member from `join_seq` on. Joining again keeps the earlier
    /// seq (join is idempotent). Returns true if the session was not yet a member.
    pub fn join(&mut self, rid: &str, sid: SessionId, join_seq: u64) -> bool {
        let members = self.rooms.entry(rid.to_string()).or_default();
        if members.contains_key(&sid) {
            return false;
        }
        members.insert(sid, join_seq);
        true
    }

    /// Removes the session from the room. Returns true if it was a member.
    pub fn leave(&mut self, rid: &str, sid: SessionId) -> bool {
        let Some(members) = self.rooms.get_mut(rid) else {
            return false;
        };
        let was = members.remove(&sid).is_some();
        if members.is_empty() {
            self.rooms.remove(rid);
        }
        was
    }

    pub fn is_member(&self, rid: &str, sid: SessionId) -> bool {
        self.rooms.get(rid).is_some_and(|m| m.contains_key(&sid))
    }

    /// Sessions that must receive the room push numbered `seq`.
    pub fn recipients(&self, rid: &str, seq: u64) -> Vec<SessionId> {
        self.rooms
            .get(rid)
            .map(|m| {
                m.iter()
                    .filter(|(_, joined)| **joined < seq)
                    .map(|(sid, _)| *sid)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets the room entirely (it was destroyed); returns its former members.
    pub fn drop_room(&mut self, rid: &str) -> Vec<SessionId> {
        self.rooms
            .remove(rid)
            .map(|m| m.into_keys().collect())
            .unwrap_or_default()
    }

    /// Number of rooms with local members.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joiner_does_not_receive_its_own_on_add_or_older_pushes() {
        let mut r = LocalRooms::default();
        assert!(r.join("lobby", 1, 5));
        assert!(r.join("lobby", 2, 7)); // session 2's onAdd has seq 7
        assert_eq!(r.recipients("lobby", 7), vec![1]);
        let mut both = r.recipients("lobby", 8);
        both.sort();
        assert_eq!(both, vec![1, 2]);
        assert!(r.recipients("other", 8).is_empty());
    }

    #[test]
    fn join_is_idempotent_and_leave_cleans_up() {
        let mut r = LocalRooms::default();
        assert!(r.join("a", 1, 3));
        assert!(!r.join("a", 1, 9));
        assert_eq!(r.recipients("a", 4), vec![1]);
        assert!(r.leave("a", 1));
        assert!(!r.leave("a", 1));
        assert!(r.is_empty());
    }

    #[test]
    fn drop_room_returns_members() {
        let mut r = LocalRooms::default();
        r.join("a", 1, 0);
        r.join("a", 2, 0);
        let mut m = r.drop_room("a");
        m.sort();
        assert_eq!(m, vec![1, 2]);
        assert!(!r.is_member("a", 1));
    }
}
