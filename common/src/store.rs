//! Room state, sessions and the node registry in Redis.
//!
//! Every room change is one Lua script (one round trip, atomic): membership in both directions
//! (uid → edge and edge → uids), the room index, the room's sequence number and the publish of
//! the resulting push all change together, so no reader sees half a join and every push carries
//! a gapless per-room seq assigned by Redis. Values are plain strings a person can read in
//! redis-cli; only pub/sub payloads are binary (see [`crate::bus`]).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use thiserror::Error;

use crate::bus::{self, BusMessage};
use crate::keys::{Keys, EDGE_CHANNEL_SUFFIX};

/// How long a room's seq counter survives after its last member left, so that a room that is
/// re-joined soon continues its numbering while abandoned rooms do not leak keys forever.
pub const EMPTY_ROOM_SEQ_TTL_SECS: u64 = 24 * 3600;
/// How long a published request id is remembered for deduplication of retries.
pub const REQUEST_DEDUPE_TTL_SECS: u64 = 300;
/// Every Redis command fails after this long instead of hanging.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("`{uid}` is not a member of room `{rid}`")]
    NotMember { rid: String, uid: String },
    #[error("user `{uid}` is not in room `{rid}`")]
    TargetNotInRoom { rid: String, uid: String },
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Result of [`Store::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room's seq right after the join (the onAdd push, if any, carries it).
    pub seq: u64,
    /// Every member's uid, the joiner included, sorted.
    pub users: Vec<String>,
    /// False when the uid was already a member through the same edge (join is idempotent).
    pub added: bool,
}

/// Result of [`Store::claim_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Granted,
    /// The uid has a live session on `edge` (which may be this edge).
    Taken {
        edge: String,
    },
}

/// An edge's registry entry (`rc:edge:<id>` hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeInfo {
    pub id: String,
    /// host:port clients connect to.
    pub addr: String,
    pub region: String,
    /// Sessions currently open on the edge.
    pub load: u64,
    /// Set while the edge drains, so the gate stops choosing it.
    pub draining: bool,
}

/// A backend's registry entry (`rc:backend:<id>` hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub id: String,
    /// host:port edges connect to.
    pub addr: String,
    /// Route prefixes it serves, e.g. `chat.`.
    pub routes: Vec<String>,
}

/// Prepended to every script that publishes: builds the 10-byte bus header around a seq.
const LUA_HEADER: &str = r#"
local function header(seq)
  local t = {}
  local n = seq
  for i = 8, 1, -1 do t[i] = string.char(n % 256); n = math.floor(n / 256) end
  return 'R\1' .. table.concat(t)
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_HEADER}\n{body}"))
}

/// KEYS: members, edges, group(new edge), seq, rooms
/// ARGV: uid, edge, group prefix, onAdd body, channel, rid
static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] then
  local users = redis.call('HKEYS', KEYS[1])
  return {0, tonumber(redis.call('GET', KEYS[4]) or '0'), users}
end
if old then
  local og = ARGV[3] .. old
  redis.call('SREM', og, ARGV[1])
  if redis.call('SCARD', og) == 0 then redis.call('SREM', KEYS[2], old) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[6])
redis.call('PERSIST', KEYS[4])
local seq = redis.call('INCR', KEYS[4])
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[5], header(seq) .. ARGV[4]) end
return {1, seq, redis.call('HKEYS', KEYS[1])}
"#,
    )
});

/// KEYS: members, edges, seq, rooms
/// ARGV: uid, edge ('' = whichever), group prefix, onLeave body, channel, rid, empty ttl
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
if ARGV[2] ~= '' and old ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local g = ARGV[3] .. old
redis.call('SREM', g, ARGV[1])
if redis.call('SCARD', g) == 0 then redis.call('SREM', KEYS[2], old) end
local seq = redis.call('INCR', KEYS[3])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
elseif ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[5], header(seq) .. ARGV[4])
end
return seq
"#,
    )
});

/// KEYS: members, seq, dedupe key
/// ARGV: sender ('' = no membership check), body, channel, dedupe ttl ('0' = none)
/// Returns {0, seq} published, {1, 0} sender not a member, {2, seq} duplicate of seq.
static PUBLISH_ROOM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {1, 0} end
if ARGV[4] ~= '0' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {2, tonumber(prev)} end
end
local seq = redis.call('INCR', KEYS[2])
if ARGV[4] ~= '0' then redis.call('SET', KEYS[3], seq, 'EX', ARGV[4]) end
redis.call('PUBLISH', ARGV[3], header(seq) .. ARGV[2])
return {0, seq}
"#,
    )
});

/// KEYS: members
/// ARGV: sender ('' = no check), target, payload, edge channel prefix, edge channel suffix
/// Returns 0 sent, 1 sender not a member, 2 target not in the room.
static PUBLISH_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 1 end
local e = redis.call('HGET', KEYS[1], ARGV[2])
if not e then return 2 end
redis.call('PUBLISH', ARGV[4] .. e .. ARGV[5], ARGV[3])
return 0
"#,
    )
});

/// KEYS: members, edges, seq, rooms
/// ARGV: group prefix, rid, destroyed body, channel, empty ttl
static DESTROY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
for _, e in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', ARGV[1] .. e) end
local n = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[4], ARGV[2])
local seq = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('PUBLISH', ARGV[4], header(seq) .. ARGV[3])
return n
"#,
    )
});

/// KEYS: session
/// ARGV: edge, session id, since (ms), edge key prefix
/// Returns {0, ''} granted, {1, edge} taken by a live session.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('HMGET', KEYS[1], 'edge', 'session')
if cur[1] then
  if cur[1] == ARGV[1] and cur[2] == ARGV[2] then return {0, ''} end
  if redis.call('EXISTS', ARGV[4] .. cur[1]) == 1 then return {1, cur[1]} end
end
redis.call('HSET', KEYS[1], 'edge', ARGV[1], 'session', ARGV[2], 'since', ARGV[3])
return {0, ''}
"#,
    )
});

/// KEYS: session; ARGV: session id. Deletes the claim only if it is still this session's.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Milliseconds since the Unix epoch, for human-readable `since` fields.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A handle on roomcast's Redis state. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct Store {
    keys: Keys,
    /// Multiplexed, auto-reconnecting connection with a response timeout, so that a Redis
    /// outage turns into prompt errors instead of hung requests.
    conn: ConnectionManager,
    client: redis::Client,
}

impl Store {
    /// Connects to `url` (fails at once if Redis is unreachable now).
    pub async fn connect(url: &str, keys: Keys) -> Result<Store> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), cfg).await?;
        Ok(Store { keys, conn, client })
    }

    /// Connects, retrying with backoff until `deadline` passes.
    pub async fn connect_retrying(url: &str, keys: Keys, deadline: Duration) -> Result<Store> {
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match Store::connect(url, keys.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) if start.elapsed() + delay < deadline => {
                    tracing::warn!("redis at {url} not reachable yet ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The client, for opening dedicated (pub/sub) connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A clone of the shared command connection, for callers with their own commands.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    // ---- rooms ----

    /// Adds `uid` (on `edge`) to `rid` and pushes `route`/`body` (onAdd) to the members that
    /// were there before. Idempotent: joining again through the same edge changes nothing and
    /// pushes nothing.
    pub async fn join(
        &self,
        rid: &str,
        uid: &str,
        edge: &str,
        push: Option<(&str, &[u8])>,
    ) -> Result<Joined> {
        let k = &self.keys;
        let payload = push.map(|(route, body)| room_body(rid, route, body));
        let (status, seq, mut users): (i64, u64, Vec<String>) = JOIN
            .key(k.room_members(rid))
            .key(k.room_edges(rid))
            .key(k.room_edge_members(rid, edge))
            .key(k.room_seq(rid))
            .key(k.rooms())
            .arg(uid)
            .arg(edge)
            .arg(k.room_edge_members_prefix(rid))
            .arg(payload.unwrap_or_default())
            .arg(k.room_channel(rid))
            .arg(rid)
            .invoke_async(&mut self.conn.clone())
            .await?;
        users.sort();
        Ok(Joined {
            seq,
            users,
            added: status == 1,
        })
    }

    /// Removes `uid` from `rid` and pushes `route`/`body` (onLeave) to the remaining members.
    /// With `edge`, only removes the member if it is still registered through that edge (an
    /// edge never removes a user who has since moved elsewhere). Returns the seq of the
    /// leave, or `None` if the uid was not a member.
    pub async fn leave(
        &self,
        rid: &str,
        uid: &str,
        edge: Option<&str>,
        push: Option<(&str, &[u8])>,
    ) -> Result<Option<u64>> {
        let k = &self.keys;
        let payload = push.map(|(route, body)| room_body(rid, route, body));
        let seq: u64 = LEAVE
            .key(k.room_members(rid))
            .key(k.room_edges(rid))
            .key(k.room_seq(rid))
            .key(k.rooms())
            .arg(uid)
            .arg(edge.unwrap_or(""))
            .arg(k.room_edge_members_prefix(rid))
            .arg(payload.unwrap_or_default())
            .arg(k.room_channel(rid))
            .arg(rid)
            .arg(EMPTY_ROOM_SEQ_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((seq > 0).then_some(seq))
    }

    /// Uids of the room's members, sorted.
    pub async fn members(&self, rid: &str) -> Result<Vec<String>> {
        let mut users: Vec<String> = self.conn.clone().hkeys(self.keys.room_members(rid)).await?;
        users.sort();
        Ok(users)
    }

    /// The edge a member is connected through, or `None` if `uid` is not a member.
    pub async fn member(&self, rid: &str, uid: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .clone()
            .hget(self.keys.room_members(rid), uid)
            .await?)
    }

    /// Members grouped by edge (Pomelo's groups), from the uid → edge hash.
    pub async fn members_by_edge(&self, rid: &str) -> Result<HashMap<String, Vec<String>>> {
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

    /// Ids of rooms that have members.
    pub async fn rooms(&self) -> Result<Vec<String>> {
        let mut r: Vec<String> = self.conn.clone().smembers(self.keys.rooms()).await?;
        r.sort();
        Ok(r)
    }

    /// The room's current seq (0 if nothing was ever pushed).
    pub async fn room_seq(&self, rid: &str) -> Result<u64> {
        let v: Option<u64> = self.conn.clone().get(self.keys.room_seq(rid)).await?;
        Ok(v.unwrap_or(0))
    }

    /// Pushes to every member of the room with the next seq, in one round trip.
    /// `sender`: refuse unless this uid is a member. `request_key`: publish at most once per key
    /// (a retry returns the seq of the first publish).
    pub async fn publish_room(
        &self,
        rid: &str,
        route: &str,
        body: &[u8],
        sender: Option<&str>,
        request_key: Option<&str>,
    ) -> Result<u64> {
        let k = &self.keys;
        let (status, seq): (i64, u64) = PUBLISH_ROOM
            .key(k.room_members(rid))
            .key(k.room_seq(rid))
            .key(k.room_request(rid, request_key.unwrap_or("")))
            .arg(sender.unwrap_or(""))
            .arg(room_body(rid, route, body))
            .arg(k.room_channel(rid))
            .arg(if request_key.is_some() {
                REQUEST_DEDUPE_TTL_SECS
            } else {
                0
            })
            .invoke_async(&mut self.conn.clone())
            .await?;
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
    pub async fn publish_to_member(
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
        let status: i64 = PUBLISH_MEMBER
            .key(k.room_members(rid))
            .arg(sender.unwrap_or(""))
            .arg(target)
            .arg(payload)
            .arg(k.edge_prefix())
            .arg(EDGE_CHANNEL_SUFFIX)
            .invoke_async(&mut self.conn.clone())
            .await?;
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
            s => Err(StoreError::Reply(format!("publish_to_member status {s}"))),
        }
    }

    /// Pushes to the given uids wherever they are connected: one publish per edge that hosts
    /// any of them. Returns the uids that have no live session (Pomelo's "failed ids").
    pub async fn push_to_uids(
        &self,
        uids: &[String],
        route: &str,
        body: &[u8],
    ) -> Result<Vec<String>> {
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

    /// Pushes to every session on every edge.
    pub async fn broadcast(&self, route: &str, body: &[u8]) -> Result<()> {
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
    pub async fn destroy(&self, rid: &str) -> Result<u64> {
        let k = &self.keys;
        let body = bus::encode_body(&BusMessage::RoomDestroyed { rid: rid.into() });
        let n: u64 = DESTROY
            .key(k.room_members(rid))
            .key(k.room_edges(rid))
            .key(k.room_seq(rid))
            .key(k.rooms())
            .arg(k.room_edge_members_prefix(rid))
            .arg(rid)
            .arg(body)
            .arg(k.room_channel(rid))
            .arg(EMPTY_ROOM_SEQ_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n)
    }

    // ---- sessions ----

    /// Records that `uid` is logged in through `session` on `edge`, unless a session on a live
    /// edge already holds it. A holder whose edge is no longer registered is replaced.
    pub async fn claim_session(&self, uid: &str, edge: &str, session: &str) -> Result<Claim> {
        let (status, holder): (i64, String) = CLAIM
            .key(self.keys.session(uid))
            .arg(edge)
            .arg(session)
            .arg(now_ms())
            .arg(self.keys.edge_prefix())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if status == 0 {
            Claim::Granted
        } else {
            Claim::Taken { edge: holder }
        })
    }

    /// Forgets the uid's session if it is still `session`.
    pub async fn release_session(&self, uid: &str, session: &str) -> Result<bool> {
        let n: i64 = RELEASE
            .key(self.keys.session(uid))
            .arg(session)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n == 1)
    }

    /// The edge the uid is logged in through.
    pub async fn session_edge(&self, uid: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .clone()
            .hget(self.keys.session(uid), "edge")
            .await?)
    }

    // ---- registry ----

    /// Writes (or refreshes) an edge's entry; it expires after `ttl` unless refreshed.
    pub async fn register_edge(&self, e: &EdgeInfo, ttl: Duration) -> Result<()> {
        let key = self.keys.edge(&e.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("id", e.id.clone()),
                    ("addr", e.addr.clone()),
                    ("region", e.region.clone()),
                    ("load", e.load.to_string()),
                    ("draining", u8::from(e.draining).to_string()),
                    ("heartbeat", now_ms().to_string()),
                ],
            )
            .ignore()
            .pexpire(&key, ttl.as_millis() as i64)
            .ignore()
            .sadd(self.keys.edges(), &e.id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub async fn unregister_edge(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.edge(id))
            .ignore()
            .srem(self.keys.edges(), id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Live edges, sorted by id. Ids whose entry has expired are pruned from the index.
    pub async fn list_edges(&self) -> Result<Vec<EdgeInfo>> {
        let entries = self
            .list_registry(&self.keys.edges(), |id| self.keys.edge(id))
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, h)| EdgeInfo {
                addr: h.get("addr").cloned().unwrap_or_default(),
                region: h.get("region").cloned().unwrap_or_default(),
                load: h.get("load").and_then(|v| v.parse().ok()).unwrap_or(0),
                draining: h.get("draining").is_some_and(|v| v == "1"),
                id,
            })
            .collect())
    }

    /// Writes (or refreshes) a backend's entry; it expires after `ttl` unless refreshed.
    pub async fn register_backend(&self, b: &BackendInfo, ttl: Duration) -> Result<()> {
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

    pub async fn unregister_backend(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.backend(id))
            .ignore()
            .srem(self.keys.backends(), id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Live backends, sorted by id.
    pub async fn list_backends(&self) -> Result<Vec<BackendInfo>> {
        let entries = self
            .list_registry(&self.keys.backends(), |id| self.keys.backend(id))
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

    async fn list_registry(
        &self,
        index: &str,
        key: impl Fn(&str) -> String,
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
        if !dead.is_empty() {
            let _: i64 = conn.srem(index, dead).await?;
        }
        Ok(live)
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
