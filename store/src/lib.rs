//! Room state, sessions, the node registry and the bus, behind one interface with two engines.
//!
//! Layout:
//! - [`engine`]: the traits ([`Rooms`], [`Sessions`], [`Registry`], [`Broker`], [`Engine`]) and
//!   the contract every engine keeps (atomicity, seqs, request keys, at-most-once bus, recovery).
//! - [`redis`]: the Redis engine (Lua scripts in `redis/scripts.rs`, readable key names).
//! - [`memory`]: the in-memory engine (one process, no Redis; same semantics, bounded queues).
//! - [`settings`]: settings every process must share, written once and checked by each.
//! - [`keys`]: every Redis key and channel name.
//! - `bus_queue.rs`: the bounded queue of each subscription ([`BUS_QUEUE_LEN`]) and its drop
//!   policy, shared by both engines.
//! - [`conformance`]: the test bodies every engine must pass, and [`conformance_tests!`].
//!
//! [`Store`] is the handle callers hold: a cheap clone of an `Arc<dyn Engine>` that derefs to
//! it, so `store.join(..)` works on either engine without importing a trait.

mod bus_queue;
pub mod conformance;
pub mod engine;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod settings;

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use roomcast_protocol::protocol::{code, Status};

use crate::keys::Keys;

pub use bus_queue::BUS_QUEUE_LEN;
pub use engine::{
    BackendInfo, Broker, Claim, EdgeInfo, Engine, Generation, HistoryEntry, Joined, Payloads,
    Registry, Rooms, Sessions, Subscription, SubscriptionControl,
};
pub use settings::Settings;

/// How long a room's seq counter survives after its last member left, so that a room that is
/// re-joined soon continues its numbering while abandoned rooms do not leak keys forever (a
/// room that comes back later starts a new numbering above the old one: [`seq_start`]).
pub const EMPTY_ROOM_SEQ_TTL_SECS: u64 = 24 * 3600;
/// How long a published request id is remembered for deduplication of retries.
pub const REQUEST_DEDUPE_TTL_SECS: u64 = 300;
/// How long the store refuses numbered room pushes after it found its generation marker gone
/// (it lost its state): long enough for every live edge to notice on its next lease refresh
/// (every second) and write back its members with their seq floors (the default lease TTL,
/// 5 s, plus one refresh). See the engine contract ("Losing state").
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(6);
/// The origin of seq numberings: 2026-01-01T00:00:00Z in Unix milliseconds.
pub const SEQ_EPOCH_UNIX_MS: u64 = 1_767_225_600_000;
/// Low bits of a seq that count within one numbering; the bits above are the millisecond
/// ([`SEQ_EPOCH_UNIX_MS`] on) at which the numbering began.
pub const SEQ_COUNTER_BITS: u32 = 11;

/// Where a room's numbering starts when the store has no seq for it (a new room, a room left
/// empty longer than [`EMPTY_ROOM_SEQ_TTL_SECS`], or a store that lost its state): the
/// millisecond it begins, shifted above [`SEQ_COUNTER_BITS`] counter bits. A numbering that
/// began earlier stays below it as long as it issued fewer than 2048 seqs per millisecond of
/// its life (2 million pushes a second in one room, sustained), so no seq is ever reused,
/// whatever the store forgets and whoever wrote back what. Seqs stay below 2^53 (exact in a
/// JavaScript number and a Lua double) until the year 2165.
pub fn seq_start(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(SEQ_EPOCH_UNIX_MS) << SEQ_COUNTER_BITS
}

/// The reason of the 503 answered while the store recovers (clients retry it).
pub const RECOVERING_REASON: &str = "store recovering after a reset; retry";
/// The reason of the 503 answered when an edge's write was fenced (clients retry it).
pub const FENCED_REASON: &str = "this edge is re-registering after losing its lease; retry";

/// An edge's fencing token: the edge's own store handle ([`Store::with_fence`]) carries it to
/// the join and claim operations, which refuse ([`StoreError::Fenced`]) unless the edge's live
/// lease holds the same token. A lease written anew (after it expired, or after the store lost
/// its state) gets a new token ([`Registry::register_edge_fenced`]), so writes still in flight
/// from before — a paused edge's queued requests — cannot undo what a reaper decided.
#[derive(Debug)]
pub struct Fence {
    edge: String,
    token: std::sync::RwLock<String>,
}

impl Fence {
    /// No token yet: the edge's writes are refused until its first registration.
    pub fn new(edge: &str) -> Fence {
        Fence {
            edge: edge.to_string(),
            token: std::sync::RwLock::new(String::new()),
        }
    }

    pub fn edge(&self) -> &str {
        &self.edge
    }

    pub fn token(&self) -> String {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The token [`Registry::register_edge_fenced`] returned.
    pub fn set(&self, token: String) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

/// A fencing token unique to this process and moment.
pub(crate) fn new_fence_token() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}.{:x}.{n}", std::process::id())
}

/// Every Redis command fails after this long instead of hanging.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The engine cannot serve the call (e.g. a subscription that was closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store lost its state and is inside its recovery window: the operation would number
    /// a room push, which could reuse a seq clients already saw (see the engine contract).
    #[error("{}", RECOVERING_REASON)]
    Recovering,
    /// The edge's lease does not hold its fencing token: the lease expired (the edge was
    /// paused or cut off, and may have been reaped) and was not written again yet.
    #[error("{}", FENCED_REASON)]
    Fenced,
    #[error("`{uid}` is not a member of room `{rid}`")]
    NotMember { rid: String, uid: String },
    #[error("user `{uid}` is not in room `{rid}`")]
    TargetNotInRoom { rid: String, uid: String },
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// This process's value of a shared setting differs from the one in the store.
    #[error(
        "setting `{name}` is {ours} in this process but {stored} in the store (written by the \
         first process); every process must use the same value"
    )]
    SettingsMismatch {
        name: String,
        ours: String,
        stored: String,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Every store failure as the status a client understands, the same on the edge and in backends:
/// the store unreachable → 503 (retry later); membership problems → 403 / 410.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::Redis(e) => Status::store_unavailable(e),
            StoreError::Unavailable(e) => Status::store_unavailable(e),
            StoreError::Recovering => Status::new(code::STORE_UNAVAILABLE, RECOVERING_REASON),
            StoreError::Fenced => Status::new(code::STORE_UNAVAILABLE, FENCED_REASON),
            StoreError::NotMember { rid, uid } => Status::not_member(&rid, &uid),
            StoreError::TargetNotInRoom { rid, uid } => Status::target_not_in_room(&rid, &uid),
            e @ (StoreError::Reply(_) | StoreError::SettingsMismatch { .. }) => {
                Status::internal(e.to_string())
            }
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

/// The handle on roomcast's shared state, whichever engine holds it. Cheap to clone; derefs to
/// the [`Engine`], so every trait method is called on it directly.
#[derive(Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
}

impl Deref for Store {
    type Target = dyn Engine;

    fn deref(&self) -> &(dyn Engine + 'static) {
        &*self.engine
    }
}

impl Store {
    /// Wraps any engine (a third one, e.g. Redis Cluster, plugs in here).
    pub fn new(engine: Arc<dyn Engine>) -> Store {
        Store { engine }
    }

    /// The Redis engine: connects to `url` (fails at once if Redis is unreachable now).
    pub async fn connect(url: &str, keys: Keys) -> Result<Store> {
        Ok(Store::new(Arc::new(
            redis::RedisEngine::connect(url, keys).await?,
        )))
    }

    /// The Redis engine, retrying the connection with backoff until `deadline` passes.
    pub async fn connect_retrying(url: &str, keys: Keys, deadline: Duration) -> Result<Store> {
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match Store::connect(url, keys.clone()).await {
                Ok(s) => return Ok(s),
                // A URL that does not parse will not parse later either: say so at once.
                Err(StoreError::Redis(e))
                    if e.kind() == ::redis::ErrorKind::InvalidClientConfig =>
                {
                    return Err(StoreError::Redis(e))
                }
                Err(e) if start.elapsed() + delay < deadline => {
                    tracing::warn!(%url, error = %e, "redis not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The in-memory engine: every process that should share state must share this handle
    /// (clones of it), e.g. edges and the chat service in one process.
    pub fn memory(keys: Keys) -> Store {
        Store::new(Arc::new(memory::MemoryEngine::new(keys)))
    }

    /// Uses `history` as the bounds of room histories written and read through this handle
    /// (the state is shared with the original handle).
    pub fn with_history(self, history: HistoryConfig) -> Store {
        let presence = self.engine.presence_config();
        Store::new(self.engine.reconfigured(history, presence))
    }

    /// The edge's own handle: joins and claims through `fence.edge()` carry its token (see
    /// [`Fence`]), and its leaves through another edge (reaping) skip an edge whose lease is
    /// live again.
    pub fn with_fence(self, fence: Arc<Fence>) -> Store {
        Store::new(self.engine.fenced(fence))
    }

    /// Uses `presence` for joins and leaves made through this handle.
    pub fn with_presence(self, presence: PresenceConfig) -> Store {
        let history = self.engine.history_config();
        Store::new(self.engine.reconfigured(history, presence))
    }

    /// The engine, for callers that want the trait object itself.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Writes `settings` if this is the first process, else checks them against the stored
    /// ones: a process whose value differs must not start ([`StoreError::SettingsMismatch`]).
    pub async fn check_settings(&self, settings: &Settings) -> Result<()> {
        settings.check(self).await
    }
}
