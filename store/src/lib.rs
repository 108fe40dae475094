//! Room state, sessions and the node registry in Redis.
//!
//! Every room change is one Lua script (one round trip, atomic): membership in both directions
//! (uid → edge and edge → uids), the room and edge indexes, the room's sequence number, the
//! publish of the resulting push and its entry in the room's history all change together, so no
//! reader sees half a join and every push carries a gapless per-room seq assigned by Redis.
//! Values are plain strings a person can read in redis-cli; only pub/sub payloads and history
//! entries are binary (see [`roomcast_protocol::bus`]).
//!
//! Files: [`scripts`] (all Lua), `rooms.rs` (membership, pushes, history), `sessions.rs` (the
//! global uid → session claims), `registry.rs` (edges and backends).

pub mod keys;
mod registry;
mod rooms;
pub mod scripts;
mod sessions;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thiserror::Error;

use roomcast_protocol::protocol::Status;

use crate::keys::Keys;

pub use registry::{BackendInfo, EdgeInfo};
pub use rooms::{HistoryEntry, Joined};
pub use sessions::Claim;

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

/// Every store failure as the status a client understands, the same on the edge and in backends:
/// the store unreachable → 503 (retry later); membership problems → 403 / 410.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::Redis(e) => Status::store_unavailable(e),
            StoreError::NotMember { rid, uid } => Status::not_member(&rid, &uid),
            StoreError::TargetNotInRoom { rid, uid } => Status::target_not_in_room(&rid, &uid),
            e @ StoreError::Reply(_) => Status::internal(e.to_string()),
        }
    }
}

/// Bounds of each room's history (what resume and gap filling can recover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Pushes kept per room.
    pub max_len: u64,
    /// Pushes older than this are gone (the whole history also expires when a room is quiet
    /// for this long).
    pub max_age: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            max_len: 1000,
            max_age: Duration::from_secs(300),
        }
    }
}

/// Presence events in large rooms. Every join and leave pushes `onAdd`/`onLeave` to the whole
/// room and every `connector.enter` answers with the member list, so a room filling up to N
/// members costs O(N²) pushes and bytes (Pomelo's all-to-all problem). Above `max_members`
/// joins and leaves are silent and answers carry only the member count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Largest room (members) that still gets join/leave pushes and member lists; 0 = no limit.
    pub max_members: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig { max_members: 1000 }
    }
}

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
    history: HistoryConfig,
    presence: PresenceConfig,
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
        Ok(Store {
            keys,
            conn,
            client,
            history: HistoryConfig::default(),
            presence: PresenceConfig::default(),
        })
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

    /// Uses `history` as the bounds of room histories written and read through this handle.
    pub fn with_history(mut self, history: HistoryConfig) -> Store {
        self.history = history;
        self
    }

    /// Uses `presence` for joins and leaves made through this handle.
    pub fn with_presence(mut self, presence: PresenceConfig) -> Store {
        self.presence = presence;
        self
    }

    pub fn history_config(&self) -> HistoryConfig {
        self.history
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
}
