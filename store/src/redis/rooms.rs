//! Room membership, room pushes and room history.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use roomcast_protocol::bus::{self, BusMessage};

use super::call::ScriptCall;
use super::{scripts, RedisEngine};
use crate::engine::{HistoryEntry, Joined, Rooms};
use crate::keys::{EDGE_CHANNEL_SUFFIX, EDGE_ROOMS_SUFFIX};
use crate::{
    Result, StoreError, EMPTY_ROOM_SEQ_TTL_SECS, RECOVERY_WINDOW, REQUEST_DEDUPE_TTL_SECS,
};

/// A room script's error: `RECOVERING` (a numbered push refused inside the recovery window)
/// becomes [`StoreError::Recovering`].
fn script_error(e: redis::RedisError) -> StoreError {
    match e.code() {
        Some("RECOVERING") => StoreError::Recovering,
        Some("FENCED") => StoreError::Fenced,
        _ => StoreError::Redis(e),
    }
}

impl RedisEngine {
    /// A call of a room script with the shared keys (then `extra` keys) and arguments filled in.
    fn room_call<'a>(&self, script: &'a Script, rid: &str, extra: &[&str]) -> ScriptCall<'a> {
        let k = &self.keys;
        let shared = [
            k.room_members(rid),
            k.room_edges(rid),
            k.room_seq(rid),
            k.rooms(),
            k.room_history(rid),
            k.generation(),
        ];
        let keys: Vec<&str> = shared
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        ScriptCall::new(script, &keys)
            .arg(rid)
            .arg(k.room_edge_members_prefix(rid))
            .arg(k.room_channel(rid))
            .arg(k.edge_prefix())
            .arg(EDGE_ROOMS_SUFFIX)
            .arg(self.history.max_len)
            .arg(self.history.max_age.as_millis() as u64)
            .arg(EMPTY_ROOM_SEQ_TTL_SECS)
            .arg(RECOVERY_WINDOW.as_millis() as u64)
    }
}

#[async_trait]
impl Rooms for RedisEngine {
    /// [`Rooms::join`] with the resume options: `resume` moves an existing member to `edge`
    /// without pushing onAdd; `seq_floor` raises the room's seq to at least that value first
    /// (an edge re-registering its rooms after Redis lost its data keeps numbering monotonic).
    async fn join_with(
        &self,
        rid: &str,
        uid: &str,
        edge: &str,
        push: Option<(&str, &[u8])>,
        resume: bool,
        seq_floor: u64,
    ) -> Result<Joined> {
        let k = &self.keys;
        let payload = push.map(|(route, body)| room_body(rid, route, body));
        let (fence_edge, fence_token) = self.fence_args();
        let (status, seq, mut users, members): (i64, u64, Vec<String>, u64) = self
            .room_call(
                &scripts::JOIN,
                rid,
                &[&k.room_edge_members(rid, edge), &k.edge_rooms(edge)],
            )
            .arg(uid)
            .arg(edge)
            .arg(payload.unwrap_or_default())
            .arg(if resume { "1" } else { "0" })
            .arg(seq_floor)
            .arg(self.presence.max_members)
            .arg(fence_edge)
            .arg(fence_token)
            .invoke(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        users.sort();
        Ok(Joined {
            seq,
            users,
            members,
            added: status == 1,
        })
    }

    /// Removes `uid` from `rid` and pushes `route`/`body` (onLeave) to the remaining members.
    /// With `edge`, only removes the member if it is still registered through that edge (an
    /// edge never removes a user who has since moved elsewhere). Returns the seq of the
    /// leave, or `None` if the uid was not a member.
    async fn leave(
        &self,
        rid: &str,
        uid: &str,
        edge: Option<&str>,
        push: Option<(&str, &[u8])>,
    ) -> Result<Option<u64>> {
        let payload = push.map(|(route, body)| room_body(rid, route, body));
        let (removed, seq): (u8, u64) = self
            .room_call(&scripts::LEAVE, rid, &[])
            .arg(uid)
            .arg(edge.unwrap_or(""))
            .arg(payload.unwrap_or_default())
            .arg(self.presence.max_members)
            .arg(self.fence_args().0)
            .invoke(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        Ok((removed == 1).then_some(seq))
    }

    /// Uids of the room's members, sorted.
    async fn members(&self, rid: &str) -> Result<Vec<String>> {
        let mut users: Vec<String> = self.conn.clone().hkeys(self.keys.room_members(rid)).await?;
        users.sort();
        Ok(users)
    }

    /// The edge a member is connected through, or `None` if `uid` is not a member.
    async fn member(&self, rid: &str, uid: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .clone()
            .hget(self.keys.room_members(rid), uid)
            .await?)
    }

    /// Members grouped by edge (Pomelo's groups), from the uid → edge hash.
    async fn members_by_edge(&self, rid: &str) -> Result<HashMap<String, Vec<String>>> {
        let all: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.room_members(rid))
            .await?;
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for (uid, edge) in all {
            groups.entry(edge).or_default().push(uid);
        }
        for v in groups.values_mut() {
            v.sort();
        }
        Ok(groups)
    }

    /// Uids of the room's members on one edge.
    async fn group(&self, rid: &str, edge: &str) -> Result<Vec<String>> {
        Ok(self
            .conn
            .clone()
            .smembers(self.keys.room_edge_members(rid, edge))
            .await?)
    }

    /// Ids of rooms that have members.
    async fn rooms(&self) -> Result<Vec<String>> {
        let mut r: Vec<String> = self.conn.clone().smembers(self.keys.rooms()).await?;
        r.sort();
        Ok(r)
    }

    /// The room's current seq (0 if nothing was ever pushed).
    async fn room_seq(&self, rid: &str) -> Result<u64> {
        let v: Option<u64> = self.conn.clone().get(self.keys.room_seq(rid)).await?;
        Ok(v.unwrap_or(0))
    }

    /// Pushes to every member of the room with the next seq, in one round trip.
    /// `sender`: refuse unless this uid is a member. `request_key`: publish at most once per key
    /// (a retry returns the seq of the first publish).
    async fn publish_room(
        &self,
        rid: &str,
        route: &str,
        body: &[u8],
        sender: Option<&str>,
        request_key: Option<&str>,
    ) -> Result<u64> {
        let (status, seq): (i64, u64) = self
            .room_call(
                &scripts::PUBLISH_ROOM,
                rid,
                &[&self.keys.room_request(rid, request_key.unwrap_or(""))],
            )
            .arg(sender.unwrap_or(""))
            .arg(room_body(rid, route, body))
            .arg(if request_key.is_some() {
                REQUEST_DEDUPE_TTL_SECS
            } else {
                0
            })
            .invoke(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        match status {
            0 | 2 => Ok(seq),
            1 => Err(StoreError::NotMember {
                rid: rid.into(),
                uid: sender.unwrap_or_default().into(),
            }),
            s => Err(StoreError::Reply(format!("publish_room status {s}"))),
        }
    }

    /// Pushes to one member of the room (through that member's edge), in one round trip.
    async fn publish_to_member(
        &self,
        rid: &str,
        sender: Option<&str>,
        target: &str,
        route: &str,
        body: &[u8],
    ) -> Result<()> {
        let k = &self.keys;
        let payload = bus::encode(
            0,
            &BusMessage::Users {
                uids: vec![target.to_string()],
                route: route.into(),
                body: body.to_vec(),
            },
        );
        let status: i64 = scripts::PUBLISH_MEMBER
            .key(k.room_members(rid))
            .key(k.generation())
            .arg(sender.unwrap_or(""))
            .arg(target)
            .arg(payload)
            .arg(k.edge_prefix())
            .arg(EDGE_CHANNEL_SUFFIX)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        match status {
            0 => Ok(()),
            1 => Err(StoreError::NotMember {
                rid: rid.into(),
                uid: sender.unwrap_or_default().into(),
            }),
            2 => Err(StoreError::TargetNotInRoom {
                rid: rid.into(),
                uid: target.into(),
            }),
            3 => Err(StoreError::Recovering),
            s => Err(StoreError::Reply(format!("publish_to_member status {s}"))),
        }
    }

    /// Pushes to the given uids wherever they are connected: one publish per edge that hosts
    /// any of them. Returns the uids that have no live session (Pomelo's "failed ids").
    async fn push_to_uids(&self, uids: &[String], route: &str, body: &[u8]) -> Result<Vec<String>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for uid in uids {
            pipe.hget(self.keys.session(uid), "edge");
        }
        let edges: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut by_edge: HashMap<String, Vec<String>> = HashMap::new();
        let mut missing = Vec::new();
        for (uid, edge) in uids.iter().zip(edges) {
            match edge {
                Some(e) => by_edge.entry(e).or_default().push(uid.clone()),
                None => missing.push(uid.clone()),
            }
        }
        if !by_edge.is_empty() {
            let mut pipe = redis::pipe();
            for (edge, uids) in by_edge {
                let msg = BusMessage::Users {
                    uids,
                    route: route.into(),
                    body: body.to_vec(),
                };
                pipe.publish(self.keys.edge_channel(&edge), bus::encode(0, &msg))
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.conn.clone()).await?;
        }
        Ok(missing)
    }

    /// Publishes an edge-addressed message (kicks, drains) on that edge's channel; returns how
    /// many subscribers received it (0: the edge is not running).
    async fn publish_to_edge(&self, edge: &str, msg: &BusMessage) -> Result<i64> {
        Ok(self
            .conn
            .clone()
            .publish(self.keys.edge_channel(edge), bus::encode(0, msg))
            .await?)
    }

    /// Pushes to every session on every edge.
    async fn broadcast(&self, route: &str, body: &[u8]) -> Result<()> {
        let msg = BusMessage::Broadcast {
            route: route.into(),
            body: body.to_vec(),
        };
        let _: i64 = self
            .conn
            .clone()
            .publish(self.keys.broadcast_channel(), bus::encode(0, &msg))
            .await?;
        Ok(())
    }

    /// Removes every member of the room and tells edges to drop it. Returns how many members
    /// were removed.
    async fn destroy(&self, rid: &str) -> Result<u64> {
        let body = bus::encode_body(&BusMessage::RoomDestroyed { rid: rid.into() });
        let n: u64 = self
            .room_call(&scripts::DESTROY, rid, &[])
            .arg(body)
            .invoke(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        Ok(n)
    }

    /// Recorded pushes of the room with `after < seq <= upto`, oldest first. Entries older than
    /// the history's age bound are left out, so a caller can tell a gap from the seqs.
    async fn history(&self, rid: &str, after: u64, upto: u64) -> Result<Vec<HistoryEntry>> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let raw: Vec<Vec<u8>> = self
            .conn
            .clone()
            .zrangebyscore(self.keys.room_history(rid), format!("({after}"), upto)
            .await?;
        let oldest = crate::now_ms().saturating_sub(self.history.max_age.as_millis() as u64);
        let mut out = Vec::with_capacity(raw.len());
        for entry in raw {
            if entry.len() < 8 {
                continue;
            }
            let mut at = [0u8; 8];
            at.copy_from_slice(&entry[..8]);
            let at = u64::from_be_bytes(at);
            if at < oldest {
                continue;
            }
            match bus::decode(&entry[8..]) {
                Ok((seq, message)) => out.push(HistoryEntry { seq, message }),
                Err(e) => {
                    tracing::warn!(room = %rid, error = %e, "skipping undecodable history entry")
                }
            }
        }
        Ok(out)
    }
}

/// The bincode body of a room push (the seq header is added by the script).
fn room_body(rid: &str, route: &str, body: &[u8]) -> Vec<u8> {
    bus::encode_body(&BusMessage::Room {
        rid: rid.into(),
        route: route.into(),
        body: body.to_vec(),
    })
}
