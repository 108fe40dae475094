//! Which local sessions are in which room, and the in-order delivery of each room's pushes.
//!
//! Plain code without IO: callers feed events in (a push arrived, history arrived, a session
//! joined) and carry out the [`Action`]s that come back.
//!
//! Each room with local members has a *feed*: `last` is the highest seq delivered in order on
//! this edge. A push numbered `last + 1` is delivered at once; one further ahead reveals a gap
//! (Redis pub/sub is at-most-once), so it waits in a bounded buffer while the gap is fetched from
//! the room's history. What history no longer holds is reported to members as a gap, never
//! skipped silently.
//!
//! Each member has a cursor `next`: it receives exactly the seqs `>= next`, once each, in order.
//! A member joining with seq J starts at `J + 1`, so a joiner never receives its own `onAdd` (seq
//! J) nor anything older; a resuming member starts after its last seen seq and first catches up
//! from history while live pushes for it are buffered.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Edge-local session id.
pub type SessionId = u64;

/// Pushes a feed (or a catching-up member) buffers before giving up on waiting.
pub const MAX_BUFFERED: usize = 10_000;

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue `frame` (the push numbered `seq`) on the session's stream for the room.
    Deliver {
        sid: SessionId,
        seq: u64,
        frame: Bytes,
    },
    /// Tell the session that the room's seqs `from..=to` are lost to it.
    Gap {
        sid: SessionId,
        rid: String,
        from: u64,
        to: u64,
    },
    /// Fetch the room's history `(after, upto]` and pass it to [`LocalRooms::filled`].
    Fill { rid: String, after: u64, upto: u64 },
    /// Fetch the room's history `(after, upto]` and pass it to [`LocalRooms::caught_up`].
    CatchUp {
        rid: String,
        sid: SessionId,
        after: u64,
        upto: u64,
    },
    /// The session fell too far behind: close it as a slow consumer.
    Disconnect { sid: SessionId },
}

#[derive(Debug)]
struct Member {
    /// The next seq this member must receive.
    next: u64,
    /// Live pushes held back while the member catches up from history.
    catching_up: Option<Vec<(u64, Bytes)>>,
}

#[derive(Debug)]
struct Feed {
    last: u64,
    /// Pushes that arrived ahead of a gap.
    pending: BTreeMap<u64, Bytes>,
    /// A history fetch for the gap after `last` is under way.
    filling: bool,
    members: HashMap<SessionId, Member>,
}

#[derive(Debug, Default)]
pub struct LocalRooms {
    feeds: HashMap<String, Feed>,
}

impl LocalRooms {
    /// Records the session as a member that joined at `join_seq` (the room's seq returned by the
    /// join) and has seen everything up to `since` (a resume) or up to `join_seq` (a join).
    /// Returns false (and nothing to do) if it already was a member.
    pub fn join(
        &mut self,
        rid: &str,
        sid: SessionId,
        join_seq: u64,
        since: Option<u64>,
    ) -> (bool, Vec<Action>) {
        let feed = self.feeds.entry(rid.to_string()).or_insert_with(|| Feed {
            last: join_seq,
            pending: BTreeMap::new(),
            filling: false,
            members: HashMap::new(),
        });
        if feed.members.contains_key(&sid) {
            return (false, Vec::new());
        }
        let next = since.unwrap_or(join_seq).min(join_seq.max(feed.last)) + 1;
        let mut actions = Vec::new();
        let catching_up = if next <= feed.last {
            actions.push(Action::CatchUp {
                rid: rid.to_string(),
                sid,
                after: next - 1,
                upto: feed.last,
            });
            Some(Vec::new())
        } else {
            None
        };
        feed.members.insert(sid, Member { next, catching_up });
        (true, actions)
    }

    /// Removes the session from the room. Returns true if it was a member.
    pub fn leave(&mut self, rid: &str, sid: SessionId) -> bool {
        let Some(feed) = self.feeds.get_mut(rid) else {
            return false;
        };
        let was = feed.members.remove(&sid).is_some();
        if feed.members.is_empty() {
            self.feeds.remove(rid);
        }
        was
    }

    /// Whether the member's membership covers the push numbered `seq` (it joined before it):
    /// an older push is about an earlier membership.
    pub fn covers(&self, rid: &str, sid: SessionId, seq: u64) -> bool {
        self.feeds
            .get(rid)
            .and_then(|f| f.members.get(&sid))
            .is_some_and(|m| m.next <= seq)
    }

    pub fn is_member(&self, rid: &str, sid: SessionId) -> bool {
        self.feeds
            .get(rid)
            .is_some_and(|f| f.members.contains_key(&sid))
    }

    /// The highest seq delivered in order for the room on this edge.
    pub fn last_seq(&self, rid: &str) -> Option<u64> {
        self.feeds.get(rid).map(|f| f.last)
    }

    /// Rooms with local members and their `last` seq.
    pub fn feeds(&self) -> Vec<(String, u64)> {
        self.feeds
            .iter()
            .map(|(r, f)| (r.clone(), f.last))
            .collect()
    }

    /// Local members of the room.
    pub fn members(&self, rid: &str) -> Vec<SessionId> {
        self.feeds
            .get(rid)
            .map(|f| f.members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Forgets the room entirely (it was destroyed); returns its former members.
    pub fn drop_room(&mut self, rid: &str) -> Vec<SessionId> {
        self.feeds
            .remove(rid)
            .map(|f| f.members.into_keys().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// A live push numbered `seq` arrived for the room.
    pub fn push(&mut self, rid: &str, seq: u64, frame: Bytes) -> Vec<Action> {
        let Some(feed) = self.feeds.get_mut(rid) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if seq <= feed.last {
            return actions; // already delivered (a duplicate, or older than every member)
        }
        if seq == feed.last + 1 && feed.pending.is_empty() {
            feed.deliver(seq, frame, &mut actions);
            return actions;
        }
        feed.pending.insert(seq, frame);
        if feed.pending.len() > MAX_BUFFERED {
            // The gap is not being filled fast enough: declare it lost and move on.
            if let Some(first) = feed.pending.keys().next().copied() {
                feed.skip_to(rid, first - 1, &mut actions);
                feed.drain(&mut actions);
            }
        }
        feed.request_fill(rid, &mut actions);
        actions
    }

    /// History `(after, upto]` fetched for a [`Action::Fill`]: `entries` are (seq, frame),
    /// oldest first; seqs missing from them are lost.
    pub fn filled(&mut self, rid: &str, upto: u64, entries: Vec<(u64, Bytes)>) -> Vec<Action> {
        let Some(feed) = self.feeds.get_mut(rid) else {
            return Vec::new();
        };
        feed.filling = false;
        let mut actions = Vec::new();
        for (seq, frame) in entries {
            if seq <= feed.last || seq > upto {
                continue;
            }
            if seq > feed.last + 1 {
                feed.skip_to(rid, seq - 1, &mut actions);
            }
            feed.deliver(seq, frame, &mut actions);
        }
        if feed.last < upto {
            feed.skip_to(rid, upto, &mut actions);
        }
        feed.drain(&mut actions);
        feed.request_fill(rid, &mut actions);
        actions
    }

    /// History `(after, upto]` fetched for a member's [`Action::CatchUp`].
    pub fn caught_up(
        &mut self,
        rid: &str,
        sid: SessionId,
        upto: u64,
        entries: Vec<(u64, Bytes)>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(member) = self
            .feeds
            .get_mut(rid)
            .and_then(|f| f.members.get_mut(&sid))
        else {
            return actions;
        };
        let held = member.catching_up.take().unwrap_or_default();
        for (seq, frame) in entries.into_iter().filter(|(s, _)| *s <= upto) {
            member.offer(rid, sid, seq, frame, &mut actions);
        }
        if member.next <= upto {
            actions.push(Action::Gap {
                sid,
                rid: rid.to_string(),
                from: member.next,
                to: upto,
            });
            member.next = upto + 1;
        }
        for (seq, frame) in held {
            member.offer(rid, sid, seq, frame, &mut actions);
        }
        actions
    }
}

impl Member {
    /// Delivers `seq` if the member needs it, reporting any seqs it skips over as a gap.
    fn offer(&mut self, rid: &str, sid: SessionId, seq: u64, frame: Bytes, out: &mut Vec<Action>) {
        if seq < self.next {
            return;
        }
        if seq > self.next {
            out.push(Action::Gap {
                sid,
                rid: rid.to_string(),
                from: self.next,
                to: seq - 1,
            });
        }
        out.push(Action::Deliver { sid, seq, frame });
        self.next = seq + 1;
    }
}

impl Feed {
    /// Delivers the push numbered `last + 1` to every member that needs it.
    fn deliver(&mut self, seq: u64, frame: Bytes, out: &mut Vec<Action>) {
        debug_assert_eq!(seq, self.last + 1);
        self.last = seq;
        for (sid, m) in self.members.iter_mut() {
            match &mut m.catching_up {
                Some(held) if held.len() >= MAX_BUFFERED => {
                    out.push(Action::Disconnect { sid: *sid });
                }
                Some(held) => held.push((seq, frame.clone())),
                None if seq >= m.next => {
                    out.push(Action::Deliver {
                        sid: *sid,
                        seq,
                        frame: frame.clone(),
                    });
                    m.next = seq + 1;
                }
                None => {}
            }
        }
    }

    /// Declares `last+1 ..= upto` lost: members that needed them are told.
    fn skip_to(&mut self, rid: &str, upto: u64, out: &mut Vec<Action>) {
        for (sid, m) in self.members.iter_mut() {
            if m.catching_up.is_none() && m.next <= upto {
                out.push(Action::Gap {
                    sid: *sid,
                    rid: rid.to_string(),
                    from: m.next,
                    to: upto,
                });
                m.next = upto + 1;
            }
        }
        self.last = self.last.max(upto);
    }

    /// Delivers buffered pushes that have become next in line.
    fn drain(&mut self, out: &mut Vec<Action>) {
        let stale: Vec<u64> = self.pending.range(..=self.last).map(|(s, _)| *s).collect();
        for s in stale {
            self.pending.remove(&s);
        }
        while let Some(frame) = self.pending.remove(&(self.last + 1)) {
            let seq = self.last + 1;
            self.deliver(seq, frame, out);
        }
    }

    /// Asks for the gap before the first buffered push to be filled, once at a time.
    fn request_fill(&mut self, rid: &str, out: &mut Vec<Action>) {
        if self.filling {
            return;
        }
        if let Some(first) = self.pending.keys().next() {
            self.filling = true;
            out.push(Action::Fill {
                rid: rid.to_string(),
                after: self.last,
                upto: first - 1,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(seq: u64) -> Bytes {
        Bytes::from(format!("#{seq}"))
    }

    fn delivered(actions: &[Action]) -> Vec<(SessionId, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver { sid, frame, .. } => {
                    Some((*sid, String::from_utf8(frame.to_vec()).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn joiner_does_not_receive_its_own_on_add_or_older_pushes() {
        let mut r = LocalRooms::default();
        r.join("lobby", 1, 5, None);
        r.join("lobby", 2, 7, None); // session 2's onAdd has seq 7
        let mut got = delivered(&r.push("lobby", 6, f(6)));
        got.extend(delivered(&r.push("lobby", 7, f(7))));
        assert_eq!(got, vec![(1, "#6".into()), (1, "#7".into())]);
        let mut both = delivered(&r.push("lobby", 8, f(8)));
        both.sort();
        assert_eq!(both, vec![(1, "#8".into()), (2, "#8".into())]);
        assert!(r.push("other", 8, f(8)).is_empty());
    }

    #[test]
    fn duplicates_are_dropped_and_join_is_idempotent() {
        let mut r = LocalRooms::default();
        assert!(r.join("a", 1, 3, None).0);
        assert!(!r.join("a", 1, 9, None).0);
        assert_eq!(delivered(&r.push("a", 4, f(4))).len(), 1);
        assert!(r.push("a", 4, f(4)).is_empty());
        assert!(r.leave("a", 1));
        assert!(!r.leave("a", 1));
        assert!(r.is_empty());
    }

    #[test]
    fn a_gap_is_filled_from_history_before_later_pushes() {
        let mut r = LocalRooms::default();
        r.join("a", 1, 10, None);
        let acts = r.push("a", 13, f(13));
        assert_eq!(
            acts,
            vec![Action::Fill {
                rid: "a".into(),
                after: 10,
                upto: 12
            }]
        );
        // More pushes while the fill runs are buffered, and no second fill is asked for.
        assert!(r.push("a", 14, f(14)).is_empty());
        let acts = r.filled("a", 12, vec![(11, f(11)), (12, f(12))]);
        let got: Vec<String> = delivered(&acts).into_iter().map(|(_, s)| s).collect();
        assert_eq!(got, vec!["#11", "#12", "#13", "#14"]);
        assert_eq!(r.last_seq("a"), Some(14));
    }

    #[test]
    fn what_history_lacks_is_reported_as_a_gap() {
        let mut r = LocalRooms::default();
        r.join("a", 1, 10, None);
        r.push("a", 14, f(14));
        let acts = r.filled("a", 13, vec![(13, f(13))]);
        assert_eq!(
            acts[0],
            Action::Gap {
                sid: 1,
                rid: "a".into(),
                from: 11,
                to: 12
            }
        );
        let got: Vec<String> = delivered(&acts).into_iter().map(|(_, s)| s).collect();
        assert_eq!(got, vec!["#13", "#14"]);
    }

    #[test]
    fn a_resuming_member_catches_up_then_continues_live_without_gap_or_duplicate() {
        let mut r = LocalRooms::default();
        r.join("a", 1, 20, None); // someone else keeps the feed at 20
        for s in 21..=25 {
            r.push("a", s, f(s));
        }
        // Session 2 resumes having seen up to 18; the join script returned 25.
        let (_, acts) = r.join("a", 2, 25, Some(18));
        assert_eq!(
            acts,
            vec![Action::CatchUp {
                rid: "a".into(),
                sid: 2,
                after: 18,
                upto: 25
            }]
        );
        // Live pushes during the catch-up are held for session 2.
        let live = delivered(&r.push("a", 26, f(26)));
        assert_eq!(live, vec![(1, "#26".into())]);
        let history: Vec<(u64, Bytes)> = (19..=26).map(|s| (s, f(s))).collect();
        let acts = r.caught_up("a", 2, 25, history);
        let got: Vec<String> = delivered(&acts).into_iter().map(|(_, s)| s).collect();
        let want: Vec<String> = (19..=26).map(|s| format!("#{s}")).collect();
        assert_eq!(got, want);
        let next = delivered(&r.push("a", 27, f(27)));
        assert_eq!(next.len(), 2);
    }

    #[test]
    fn a_resume_older_than_history_is_told_explicitly() {
        let mut r = LocalRooms::default();
        let (_, acts) = r.join("a", 1, 50, Some(10));
        assert!(matches!(
            acts[0],
            Action::CatchUp {
                after: 10,
                upto: 50,
                ..
            }
        ));
        let history: Vec<(u64, Bytes)> = (40..=50).map(|s| (s, f(s))).collect();
        let acts = r.caught_up("a", 1, 50, history);
        assert_eq!(
            acts[0],
            Action::Gap {
                sid: 1,
                rid: "a".into(),
                from: 11,
                to: 39
            }
        );
        assert_eq!(delivered(&acts).len(), 11);
    }

    #[test]
    fn a_join_behind_the_feed_catches_up() {
        let mut r = LocalRooms::default();
        r.join("a", 1, 5, None);
        for s in 6..=9 {
            r.push("a", s, f(s));
        }
        // The join script said 7, but the edge already delivered up to 9.
        let (_, acts) = r.join("a", 2, 7, None);
        assert_eq!(
            acts,
            vec![Action::CatchUp {
                rid: "a".into(),
                sid: 2,
                after: 7,
                upto: 9
            }]
        );
    }
}
