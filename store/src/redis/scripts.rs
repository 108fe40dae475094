//! Every Lua script the Redis engine runs. Each one is a whole state change: it runs atomically
//! and costs one round trip.
//!
//! Room scripts share one argument layout so they stay readable:
//!
//! ```text
//! KEYS[1] members  KEYS[2] edges  KEYS[3] seq  KEYS[4] rooms index  KEYS[5] history
//! KEYS[6] generation marker
//! ARGV[1] rid  ARGV[2] group-key prefix  ARGV[3] room channel  ARGV[4] edge-key prefix
//! ARGV[5] edge rooms-index suffix  ARGV[6] history length  ARGV[7] history age (ms)
//! ARGV[8] seq TTL of an empty room (s)  ARGV[9] recovery window (ms)
//! ```
//!
//! followed by each script's own keys (`KEYS[7]…`) and arguments (`ARGV[10]…`). Every room
//! script calls `recovering()` first: it opens the recovery window when the generation marker
//! is gone (Redis lost its data), and a script that would number a push inside the window
//! fails with `RECOVERING` and writes nothing (see the engine contract). Keys the scripts
//! derive (a group or an edge index from an edge id) are built from prefixes passed in by
//! [`crate::keys`], so key names are still defined in one place; edge ids are validated node ids.

use std::sync::LazyLock;

use redis::Script;

/// Helpers prepended to every room script.
const LIB: &str = r#"
local function be64(n)
  local t = {}
  for i = 8, 1, -1 do t[i] = string.char(n % 256); n = math.floor(n / 256) end
  return table.concat(t)
end
local function header(seq) return 'R\1' .. be64(seq) end
-- One reading of the clock per script: a script runs atomically, so all of it happens at one
-- instant (the recovery check and a push's history entry asked for TIME twice).
local clock
local function now_ms()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end
-- Publishes a room push numbered seq and records it in the room's bounded history.
local function push(seq, body)
  local p = header(seq) .. body
  redis.call('PUBLISH', ARGV[3], p)
  redis.call('ZADD', KEYS[5], seq, be64(now_ms()) .. p)
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[6]) + 1))
  redis.call('PEXPIRE', KEYS[5], ARGV[7])
end
-- Removes uid from edge's group; forgets the edge in the room when its group empties.
local function ungroup(edge, uid)
  local g = ARGV[2] .. edge
  redis.call('SREM', g, uid)
  if redis.call('SCARD', g) == 0 then
    redis.call('SREM', KEYS[2], edge)
    redis.call('SREM', ARGV[4] .. edge .. ARGV[5], ARGV[1])
  end
end
local function seq_now() return tonumber(redis.call('GET', KEYS[3]) or '0') end
-- A room without a seq starts a new numbering above every earlier one (crate::seq_start).
-- No script deletes the seq key, so once it exists it stays for the rest of the script and
-- is checked once (a join called EXISTS twice: before its writes and before numbering).
local seq_ready = false
local function ensure_seq()
  if seq_ready then return end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    local since = now_ms() - SEQ_EPOCH_MS
    if since < 0 then since = 0 end
    redis.call('SET', KEYS[3], string.format('%.0f', since * SEQ_SPAN))
  end
  seq_ready = true
end
local function next_seq()
  ensure_seq()
  return redis.call('INCR', KEYS[3])
end
-- True inside the recovery window. A missing marker means Redis lost its data: start a new
-- generation whose window ends ARGV[9] ms from now.
local function recovering()
  local now = now_ms()
  local u = redis.call('HGET', KEYS[6], 'recovering_until')
  if not u then
    local t = string.format('%.0f', now)
    local e = string.format('%.0f', now + tonumber(ARGV[9]))
    redis.call('HSET', KEYS[6], 'id', t, 'recovering_until', e)
    return true
  end
  return now < tonumber(u)
end
local RECOVERING = 'RECOVERING store recovering after a reset; retry'
local FENCED = 'FENCED the edge lease does not hold this fencing token'
"#;

fn room_script(body: &str) -> Script {
    Script::new(&format!(
        "local SEQ_EPOCH_MS = {}\nlocal SEQ_SPAN = {}\n{LIB}\n{body}",
        crate::SEQ_EPOCH_UNIX_MS,
        1u64 << crate::SEQ_COUNTER_BITS
    ))
}

/// `KEYS[7]` group of the new edge, `KEYS[8]` rooms index of the new edge.
/// `ARGV[10]` uid, `ARGV[11]` edge, `ARGV[12]` onAdd body ('' = none), `ARGV[13]` '1' for a resume,
/// `ARGV[14]` seq floor ('0' = none: used when re-registering after Redis lost its data),
/// `ARGV[15]` presence limit (members above which joins are silent and no member list is
/// returned; '0' = none), `ARGV[16]` fenced edge ('' = none), `ARGV[17]` its fencing token.
/// A join that would push onAdd fails with RECOVERING inside the recovery window; silent ones
/// (re-registration) are applied. A join through the fenced edge fails with FENCED unless its
/// lease holds the token.
/// Returns {status, seq, users, members}: status 0 already a member through this edge, 1 added
/// (onAdd pushed), 2 added or moved silently (a resume, no body, or a room over the limit);
/// users is empty when the room is over the limit.
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
local uid, edge = ARGV[10], ARGV[11]
local floor = tonumber(ARGV[14])
local limit = tonumber(ARGV[15])
local rec = recovering()
local function users(n)
  if limit > 0 and n > limit then return {} end
  return redis.call('HKEYS', KEYS[1])
end
local old = redis.call('HGET', KEYS[1], uid)
local after = redis.call('HLEN', KEYS[1])
if not old then after = after + 1 end
local silent = (old and ARGV[13] == '1') or ARGV[12] == '' or (limit > 0 and after > limit)
if rec and old ~= edge and not silent then return redis.error_reply(RECOVERING) end
if ARGV[16] == edge and redis.call('HGET', ARGV[4] .. edge, 'fence') ~= ARGV[17] then
  return redis.error_reply(FENCED)
end
if old == edge then
  if floor > seq_now() then redis.call('SET', KEYS[3], ARGV[14]) end
  local n = redis.call('HLEN', KEYS[1])
  return {0, seq_now(), users(n), n}
end
ensure_seq()
if floor > seq_now() then redis.call('SET', KEYS[3], ARGV[14]) end
if old then ungroup(old, uid) end
redis.call('HSET', KEYS[1], uid, edge)
redis.call('SADD', KEYS[7], uid)
redis.call('SADD', KEYS[2], edge)
redis.call('SADD', KEYS[8], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('PERSIST', KEYS[3])
local n = redis.call('HLEN', KEYS[1])
if silent then
  return {2, seq_now(), users(n), n}
end
local seq = next_seq()
push(seq, ARGV[12])
return {1, seq, users(n), n}
"#,
    )
});

/// `ARGV[10]` uid, `ARGV[11]` edge ('' = whichever), `ARGV[12]` onLeave body ('' = none),
/// `ARGV[13]` presence limit (members above which leaves are silent; '0' = none), `ARGV[14]` the
/// caller's fenced edge ('' = none). A leave that would push onLeave fails with RECOVERING
/// inside the recovery window; a fenced caller's leave through another edge (a reap) does
/// nothing if that edge's lease is live again.
/// Returns {1, seq}: removed, seq of the onLeave push (the room's current seq when silent);
/// {0, 0}: uid was not a member (through that edge).
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
local uid = ARGV[10]
local limit = tonumber(ARGV[13])
local rec = recovering()
if ARGV[14] ~= '' and ARGV[11] ~= '' and ARGV[11] ~= ARGV[14]
  and redis.call('EXISTS', ARGV[4] .. ARGV[11]) == 1 then
  return {0, 0}
end
local old = redis.call('HGET', KEYS[1], uid)
if not old then return {0, 0} end
if ARGV[11] ~= '' and old ~= ARGV[11] then return {0, 0} end
local silent = ARGV[12] == '' or (limit > 0 and redis.call('HLEN', KEYS[1]) > limit)
if rec and not silent then return redis.error_reply(RECOVERING) end
redis.call('HDEL', KEYS[1], uid)
ungroup(old, uid)
local seq = seq_now()
if not silent then
  seq = next_seq()
  push(seq, ARGV[12])
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
return {1, seq}
"#,
    )
});

/// `KEYS[7]` dedupe key. `ARGV[10]` sender ('' = no membership check), `ARGV[11]` body,
/// `ARGV[12]` dedupe TTL ('0' = no dedupe). Fails with RECOVERING inside the recovery window
/// (before the membership check: a sender missing then may just not be written back yet).
/// Returns {0, seq} published, {1, 0} sender not a member, {2, seq} already published as seq.
pub static PUBLISH_ROOM: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
if recovering() then return redis.error_reply(RECOVERING) end
if ARGV[10] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[10]) == 0 then return {1, 0} end
if ARGV[12] ~= '0' then
  local prev = redis.call('GET', KEYS[7])
  if prev then return {2, tonumber(prev)} end
end
local seq = next_seq()
if ARGV[12] ~= '0' then redis.call('SET', KEYS[7], seq, 'EX', ARGV[12]) end
push(seq, ARGV[11])
-- A push to a room nobody is in (a backend's, without a sender): its seq expires as an
-- emptied room's does, instead of staying forever.
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('EXPIRE', KEYS[3], ARGV[8]) end
return {0, seq}
"#,
    )
});

/// `ARGV[10]` destroyed body. Returns how many members were removed; RECOVERING inside the
/// recovery window.
pub static DESTROY: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
if recovering() then return redis.error_reply(RECOVERING) end
for _, e in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. e)
  redis.call('SREM', ARGV[4] .. e .. ARGV[5], ARGV[1])
end
local n = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[4], ARGV[1])
local seq = next_seq()
push(seq, ARGV[10])
redis.call('EXPIRE', KEYS[3], ARGV[8])
return n
"#,
    )
});

/// KEYS: members, generation marker. ARGV: sender ('' = no check), target, payload, edge
/// channel prefix, suffix. Returns 0 sent, 1 sender not a member, 2 target not in the room,
/// 3 one of them missing while the store recovers from a reset (not written back yet?), or
/// the marker gone (then the recovery window is opened by the next room script or refresh).
pub static PUBLISH_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function recovering()
  local u = redis.call('HGET', KEYS[2], 'recovering_until')
  if not u then return true end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) < tonumber(u)
end
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  if recovering() then return 3 end
  return 1
end
local e = redis.call('HGET', KEYS[1], ARGV[2])
if not e then
  if recovering() then return 3 end
  return 2
end
redis.call('PUBLISH', ARGV[4] .. e .. ARGV[5], ARGV[3])
return 0
"#,
    )
});

/// KEYS: session. ARGV: edge, session, since (ms), edge-key prefix, sessions-index suffix,
/// resume token ('' = none), uid, fenced edge ('' = none), its fencing token.
/// Returns {0, old edge, old session} granted (old ones empty unless a session was replaced),
/// {1, edge, ''} taken by a live session, {2, '', ''} fenced (the edge's lease does not hold
/// the token).
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[8] == ARGV[1] and redis.call('HGET', ARGV[4] .. ARGV[1], 'fence') ~= ARGV[9] then
  return {2, '', ''}
end
local cur = redis.call('HMGET', KEYS[1], 'edge', 'session')
if cur[1] then
  if cur[1] == ARGV[1] and cur[2] == ARGV[2] then return {0, '', ''} end
  local alive = redis.call('EXISTS', ARGV[4] .. cur[1]) == 1
  if alive and (ARGV[6] == '' or cur[2] ~= ARGV[6]) then return {1, cur[1], ''} end
  redis.call('SREM', ARGV[4] .. cur[1] .. ARGV[5], ARGV[7])
end
redis.call('HSET', KEYS[1], 'edge', ARGV[1], 'session', ARGV[2], 'since', ARGV[3])
redis.call('SADD', ARGV[4] .. ARGV[1] .. ARGV[5], ARGV[7])
return {0, cur[1] or '', cur[2] or ''}
"#,
    )
});

/// KEYS: session. ARGV: field ('session' or 'edge'), expected value, edge-key prefix,
/// sessions-index suffix, uid. Deletes the claim only if that field still has that value.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('HMGET', KEYS[1], 'edge', 'session')
local v = cur[2]
if ARGV[1] == 'edge' then v = cur[1] end
if v ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[3] .. cur[1] .. ARGV[4], ARGV[5])
return 1
"#,
    )
});

/// KEYS: the edge's lease, the edge index. ARGV: TTL (ms), a new fencing token, the edge id,
/// then field/value pairs. Writes the lease; a lease written anew gets the new token, a live
/// one keeps its own. Returns {existed (0/1), the lease's token}.
pub static REGISTER_EDGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local existed = redis.call('EXISTS', KEYS[1])
if existed == 0 or not redis.call('HGET', KEYS[1], 'fence') then
  redis.call('HSET', KEYS[1], 'fence', ARGV[2])
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return {existed, redis.call('HGET', KEYS[1], 'fence')}
"#,
    )
});

/// KEYS: generation marker. ARGV: now (ms). Creates the marker of a new store (no recovery
/// window: nothing was lost) unless there is one; returns its id.
pub static INIT_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'recovering_until', '0')
end
return redis.call('HGET', KEYS[1], 'id')
"#,
    )
});

/// KEYS: generation marker. ARGV: recovery window (ms). The marker's id and whether the
/// recovery window is open, opening a new generation and window if the marker is gone.
pub static GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local u = redis.call('HGET', KEYS[1], 'recovering_until')
if not u then
  u = string.format('%.0f', now + tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'id', string.format('%.0f', now), 'recovering_until', u)
end
local rec = 0
if now < tonumber(u) then rec = 1 end
return {redis.call('HGET', KEYS[1], 'id'), rec}
"#,
    )
});

/// KEYS: settings hash. ARGV: name1, value1, name2, value2, … Sets each field not set yet
/// (the first process's values win) and returns the stored value of each name, in order.
pub static INIT_SETTINGS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
end
return out
"#,
    )
});
