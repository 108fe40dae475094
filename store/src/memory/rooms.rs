//! Room membership, room pushes and history, mirroring the Redis room scripts step by step
//! (`redis/scripts.rs`): same statuses, same seq rules, same silent cases.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_protocol::bus::{self, BusMessage};

use super::{set_add, set_remove, MemoryEngine, State};
use crate::engine::{HistoryEntry, Joined, Rooms};
use crate::{HistoryConfig, Result, StoreError, EMPTY_ROOM_SEQ_TTL_SECS, REQUEST_DEDUPE_TTL_SECS};

/// One room; kept while it has members, a live seq, history or dedupe markers.
#[derive(Default)]
pub(super) struct Room {
    /// uid → edge.
    members: HashMap<String, String>,
    /// edge → uids (the room's edges are the keys; empty groups are removed).
    groups: HashMap<String, BTreeSet<String>>,
    seq: u64,
    /// Set while the room is empty: the seq is forgotten then (Redis: `EXPIRE` of the seq key).
    seq_expires: Option<Instant>,
    /// request key → (seq, deadline).
    requests: HashMap<String, (u64, Instant)>,
    /// (wall-clock ms, seq, payload), oldest first.
    history: VecDeque<(u64, u64, Bytes)>,
    /// The whole history goes when the room is quiet this long (Redis: `PEXPIRE`).
    history_expires: Option<Instant>,
}

impl Room {
    fn seq_now(&mut self, now: Instant) -> u64 {
        if self.seq_expires.is_some_and(|t| now >= t) {
            self.seq = 0;
            self.seq_expires = None;
        }
        self.seq
    }

    /// A room without a seq starts a new numbering above every earlier one
    /// ([`crate::seq_start`]).
    fn ensure_seq(&mut self, now: Instant) {
        if self.seq_now(now) == 0 {
            self.seq = crate::seq_start(crate::now_ms());
        }
    }

    fn incr(&mut self, now: Instant) -> u64 {
        self.ensure_seq(now);
        self.seq += 1;
        self.seq
    }

    fn expire_history(&mut self, now: Instant) {
        if self.history_expires.is_some_and(|t| now >= t) {
            self.history.clear();
            self.history_expires = None;
        }
    }

    /// Drops what expired; returns whether the room is still worth keeping.
    pub(super) fn sweep(&mut self, now: Instant) -> bool {
        self.seq_now(now);
        self.expire_history(now);
        self.requests.retain(|_, (_, t)| now < *t);
        !(self.members.is_empty()
            && self.seq == 0
            && self.history.is_empty()
            && self.requests.is_empty())
    }

    fn users(&self, limit: u64) -> Vec<String> {
        let n = self.members.len() as u64;
        if limit > 0 && n > limit {
            return Vec::new();
        }
        let mut users: Vec<String> = self.members.keys().cloned().collect();
        users.sort();
        users
    }
}

impl State {
    fn room(&mut self, rid: &str) -> &mut Room {
        self.rooms.entry(rid.to_string()).or_default()
    }

    /// Removes uid from edge's group; forgets the edge in the room when its group empties.
    fn ungroup(&mut self, rid: &str, edge: &str, uid: &str) {
        let room = self.room(rid);
        let emptied = room.groups.get_mut(edge).is_some_and(|g| {
            g.remove(uid);
            g.is_empty()
        });
        if emptied {
            room.groups.remove(edge);
            set_remove(&mut self.edge_rooms, edge, rid);
        }
    }

    /// Publishes a room push numbered `seq` and records it in the room's bounded history.
    fn push(
        &mut self,
        channel: &str,
        rid: &str,
        seq: u64,
        msg: &BusMessage,
        cfg: HistoryConfig,
        now: Instant,
    ) {
        let payload = Bytes::from(bus::encode(seq, msg));
        self.bus.publish(channel, &payload);
        let room = self.room(rid);
        room.expire_history(now);
        let at = crate::now_ms();
        let oldest = at.saturating_sub(cfg.max_age.as_millis() as u64);
        room.history.push_back((at, seq, payload));
        while room.history.len() as u64 > cfg.max_len
            || room.history.front().is_some_and(|(t, _, _)| *t < oldest)
        {
            room.history.pop_front();
        }
        room.history_expires = Some(now + cfg.max_age);
    }

    /// The room index (rooms with members) leaves the room when it empties; the seq expires.
    fn emptied(&mut self, rid: &str, now: Instant) {
        let room = self.room(rid);
        if room.members.is_empty() && room.seq_now(now) > 0 {
            room.seq_expires = Some(now + Duration::from_secs(EMPTY_ROOM_SEQ_TTL_SECS));
        }
    }
}

fn room_message(rid: &str, route: &str, body: &[u8]) -> BusMessage {
    BusMessage::Room {
        rid: rid.into(),
        route: route.into(),
        body: body.to_vec(),
    }
}

#[async_trait]
impl Rooms for MemoryEngine {
    async fn join_with(
        &self,
        rid: &str,
        uid: &str,
        edge: &str,
        push: Option<(&str, &[u8])>,
        resume: bool,
        seq_floor: u64,
    ) -> Result<Joined> {
        let limit = self.presence.max_members;
        let (mut state, now) = self.lock();
        let recovering = state.recovering(now);
        let room = state.room(rid);
        let old = room.members.get(uid).cloned();
        let after = room.members.len() as u64 + u64::from(old.is_none());
        let silent = (old.is_some() && resume) || push.is_none() || (limit > 0 && after > limit);
        if recovering && old.as_deref() != Some(edge) && !silent {
            return Err(StoreError::Recovering);
        }
        if self.fenced_out(&state, edge, now) {
            return Err(StoreError::Fenced);
        }
        let room = state.room(rid);
        if old.as_deref() != Some(edge) {
            room.ensure_seq(now);
        }
        if seq_floor > room.seq_now(now) {
            room.seq = seq_floor;
            room.seq_expires = None;
        }
        if old.as_deref() == Some(edge) {
            return Ok(Joined {
                seq: room.seq_now(now),
                users: room.users(limit),
                members: room.members.len() as u64,
                added: false,
            });
        }
        if let Some(old) = &old {
            state.ungroup(rid, old, uid);
        }
        let room = state.room(rid);
        room.members.insert(uid.to_string(), edge.to_string());
        set_add(&mut room.groups, edge, uid);
        room.seq_expires = None;
        let n = room.members.len() as u64;
        set_add(&mut state.edge_rooms, edge, rid);
        let room = state.room(rid);
        if silent {
            return Ok(Joined {
                seq: room.seq_now(now),
                users: room.users(limit),
                members: n,
                added: false,
            });
        }
        let seq = room.incr(now);
        let users = room.users(limit);
        let (route, body) = push.unwrap_or_default();
        let channel = self.keys.room_channel(rid);
        state.push(
            &channel,
            rid,
            seq,
            &room_message(rid, route, body),
            self.history,
            now,
        );
        Ok(Joined {
            seq,
            users,
            members: n,
            added: true,
        })
    }

    async fn leave(
        &self,
        rid: &str,
        uid: &str,
        edge: Option<&str>,
        push: Option<(&str, &[u8])>,
    ) -> Result<Option<u64>> {
        let limit = self.presence.max_members;
        let (mut state, now) = self.lock();
        let recovering = state.recovering(now);
        if self.reaping_a_live_edge(&state, edge, now) {
            return Ok(None);
        }
        let Some(room) = state.rooms.get_mut(rid) else {
            return Ok(None);
        };
        let Some(old) = room.members.get(uid).cloned() else {
            return Ok(None);
        };
        if edge.is_some_and(|e| e != old) {
            return Ok(None);
        }
        let silent = push.is_none() || (limit > 0 && room.members.len() as u64 > limit);
        if recovering && !silent {
            return Err(StoreError::Recovering);
        }
        room.members.remove(uid);
        state.ungroup(rid, &old, uid);
        let room = state.room(rid);
        let mut seq = room.seq_now(now);
        if let (false, Some((route, body))) = (silent, push) {
            seq = room.incr(now);
            let channel = self.keys.room_channel(rid);
            state.push(
                &channel,
                rid,
                seq,
                &room_message(rid, route, body),
                self.history,
                now,
            );
        }
        state.emptied(rid, now);
        Ok(Some(seq))
    }

    async fn members(&self, rid: &str) -> Result<Vec<String>> {
        let (state, _) = self.lock();
        let mut users: Vec<String> = state
            .rooms
            .get(rid)
            .map(|r| r.members.keys().cloned().collect())
            .unwrap_or_default();
        users.sort();
        Ok(users)
    }

    async fn member(&self, rid: &str, uid: &str) -> Result<Option<String>> {
        let (state, _) = self.lock();
        Ok(state
            .rooms
            .get(rid)
            .and_then(|r| r.members.get(uid).cloned()))
    }

    async fn members_by_edge(&self, rid: &str) -> Result<HashMap<String, Vec<String>>> {
        let (state, _) = self.lock();
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(room) = state.rooms.get(rid) {
            for (uid, edge) in &room.members {
                groups.entry(edge.clone()).or_default().push(uid.clone());
            }
        }
        for v in groups.values_mut() {
            v.sort();
        }
        Ok(groups)
    }

    async fn group(&self, rid: &str, edge: &str) -> Result<Vec<String>> {
        let (state, _) = self.lock();
        Ok(state
            .rooms
            .get(rid)
            .and_then(|r| r.groups.get(edge))
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn rooms(&self) -> Result<Vec<String>> {
        let (state, _) = self.lock();
        let mut rooms: Vec<String> = state
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(rid, _)| rid.clone())
            .collect();
        rooms.sort();
        Ok(rooms)
    }

    async fn room_seq(&self, rid: &str) -> Result<u64> {
        let (mut state, now) = self.lock();
        Ok(state.rooms.get_mut(rid).map_or(0, |r| r.seq_now(now)))
    }

    async fn publish_room(
        &self,
        rid: &str,
        route: &str,
        body: &[u8],
        sender: Option<&str>,
        request_key: Option<&str>,
    ) -> Result<u64> {
        let (mut state, now) = self.lock();
        if state.recovering(now) {
            return Err(StoreError::Recovering);
        }
        let room = state.room(rid);
        if let Some(uid) = sender {
            if !room.members.contains_key(uid) {
                return Err(StoreError::NotMember {
                    rid: rid.into(),
                    uid: uid.into(),
                });
            }
        }
        if let Some(key) = request_key {
            if let Some((seq, _)) = room.requests.get(key).filter(|(_, t)| now < *t) {
                return Ok(*seq);
            }
        }
        let seq = room.incr(now);
        if let Some(key) = request_key {
            let ttl = Duration::from_secs(REQUEST_DEDUPE_TTL_SECS);
            room.requests.insert(key.to_string(), (seq, now + ttl));
        }
        let channel = self.keys.room_channel(rid);
        state.push(
            &channel,
            rid,
            seq,
            &room_message(rid, route, body),
            self.history,
            now,
        );
        // A push to a room nobody is in: its seq expires as an emptied room's does.
        state.emptied(rid, now);
        Ok(seq)
    }

    async fn publish_to_member(
        &self,
        rid: &str,
        sender: Option<&str>,
        target: &str,
        route: &str,
        body: &[u8],
    ) -> Result<()> {
        let (mut state, now) = self.lock();
        let recovering = state.recovering_now(now);
        let room = state.rooms.get(rid);
        let is_member = |uid: &str| room.is_some_and(|r| r.members.contains_key(uid));
        let missing = sender.is_some_and(|uid| !is_member(uid)) || !is_member(target);
        if recovering && missing {
            return Err(StoreError::Recovering);
        }
        if let Some(uid) = sender.filter(|uid| !is_member(uid)) {
            return Err(StoreError::NotMember {
                rid: rid.into(),
                uid: uid.into(),
            });
        }
        let Some(edge) = room.and_then(|r| r.members.get(target)).cloned() else {
            return Err(StoreError::TargetNotInRoom {
                rid: rid.into(),
                uid: target.into(),
            });
        };
        let msg = BusMessage::Users {
            uids: vec![target.to_string()],
            route: route.into(),
            body: body.to_vec(),
        };
        let payload = Bytes::from(bus::encode(0, &msg));
        state.bus.publish(&self.keys.edge_channel(&edge), &payload);
        Ok(())
    }

    async fn push_to_uids(&self, uids: &[String], route: &str, body: &[u8]) -> Result<Vec<String>> {
        let (mut state, _) = self.lock();
        let mut by_edge: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut missing = Vec::new();
        for uid in uids {
            match state.sessions.get(uid) {
                Some(claim) => by_edge
                    .entry(claim.edge.clone())
                    .or_default()
                    .push(uid.clone()),
                None => missing.push(uid.clone()),
            }
        }
        for (edge, uids) in by_edge {
            let msg = BusMessage::Users {
                uids,
                route: route.into(),
                body: body.to_vec(),
            };
            let payload = Bytes::from(bus::encode(0, &msg));
            state.bus.publish(&self.keys.edge_channel(&edge), &payload);
        }
        Ok(missing)
    }

    async fn publish_to_edge(&self, edge: &str, msg: &BusMessage) -> Result<i64> {
        let (mut state, _) = self.lock();
        let payload = Bytes::from(bus::encode(0, msg));
        Ok(state.bus.publish(&self.keys.edge_channel(edge), &payload))
    }

    async fn broadcast(&self, route: &str, body: &[u8]) -> Result<()> {
        let (mut state, _) = self.lock();
        let msg = BusMessage::Broadcast {
            route: route.into(),
            body: body.to_vec(),
        };
        let payload = Bytes::from(bus::encode(0, &msg));
        state.bus.publish(&self.keys.broadcast_channel(), &payload);
        Ok(())
    }

    async fn destroy(&self, rid: &str) -> Result<u64> {
        let (mut state, now) = self.lock();
        if state.recovering(now) {
            return Err(StoreError::Recovering);
        }
        let room = state.room(rid);
        let n = room.members.len() as u64;
        let edges: Vec<String> = room.groups.keys().cloned().collect();
        room.members.clear();
        room.groups.clear();
        for edge in edges {
            set_remove(&mut state.edge_rooms, &edge, rid);
        }
        let seq = state.room(rid).incr(now);
        let channel = self.keys.room_channel(rid);
        let msg = BusMessage::RoomDestroyed { rid: rid.into() };
        state.push(&channel, rid, seq, &msg, self.history, now);
        state.emptied(rid, now);
        Ok(n)
    }

    async fn history(&self, rid: &str, after: u64, upto: u64) -> Result<Vec<HistoryEntry>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let (mut state, now) = self.lock();
        let Some(room) = state.rooms.get_mut(rid) else {
            return Ok(Vec::new());
        };
        room.expire_history(now);
        let oldest = crate::now_ms().saturating_sub(self.history.max_age.as_millis() as u64);
        let mut out = Vec::new();
        for (at, seq, payload) in &room.history {
            if *seq <= after || *seq > upto || *at < oldest {
                continue;
            }
            match bus::decode(payload) {
                Ok((seq, message)) => out.push(HistoryEntry { seq, message }),
                Err(e) => {
                    tracing::warn!(room = %rid, error = %e, "skipping undecodable history entry")
                }
            }
        }
        Ok(out)
    }
}
