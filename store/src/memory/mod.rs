//! The in-memory engine: roomcast without Redis, for one process that runs edges and the chat
//! service together. Same semantics as the Redis scripts (checked by [`crate::conformance`]):
//! every operation runs under one mutex, so each is atomic and pushes are published in seq
//! order; expiring things (leases, reaper locks, dedupe markers, seqs of empty rooms, histories)
//! carry a deadline on a monotonic clock and are ignored once it passed, and swept at most once
//! a second so that memory does not grow with dead entries.
//!
//! Bounds: room history as configured ([`crate::HistoryConfig`], length and age); dedupe
//! markers [`crate::REQUEST_DEDUPE_TTL_SECS`]; each subscription's queue [`BUS_QUEUE_LEN`]
//! payloads (a subscriber that falls behind loses payloads, like a Redis pub/sub client, and
//! fills room gaps from history).
//!
//! Files: `rooms.rs` (membership, pushes, history), `sessions.rs` (claims), `registry.rs`
//! (edges, backends, reaper locks), `bus.rs` (in-process pub/sub on tokio channels).

mod bus;
mod registry;
mod rooms;
mod sessions;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::engine::{BackendInfo, EdgeInfo, Engine, Generation};
use crate::keys::Keys;
use crate::{HistoryConfig, PresenceConfig, Result, RECOVERY_WINDOW};

pub use crate::BUS_QUEUE_LEN;

/// Makes generation ids distinct even when two resets fall in one millisecond.
static RESET_COUNT: AtomicU64 = AtomicU64::new(0);

/// How often expired entries are swept (lazily, by the next operation).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A handle on one in-memory state. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct MemoryEngine {
    keys: Keys,
    state: Arc<Mutex<State>>,
    history: HistoryConfig,
    presence: PresenceConfig,
    /// Set on an edge's own handle: its joins and claims carry the fencing token.
    fence: Option<Arc<crate::Fence>>,
    /// Payloads queued per subscription opened through this handle ([`BUS_QUEUE_LEN`];
    /// smaller in tests, so that overflowing it is quick).
    bus_queue_len: usize,
}

impl MemoryEngine {
    /// Whether a join or claim through `edge` is refused by this handle's fence.
    fn fenced_out(&self, state: &State, edge: &str, now: Instant) -> bool {
        self.fence.as_ref().is_some_and(|f| {
            f.edge() == edge
                && !(state.edge_alive(edge, now)
                    && state.edge_fences.get(edge).is_some_and(|t| *t == f.token()))
        })
    }

    /// Whether this (fenced) handle's leave through `edge` is a reap of an edge that is alive
    /// again, which must not happen.
    fn reaping_a_live_edge(&self, state: &State, edge: Option<&str>, now: Instant) -> bool {
        match (&self.fence, edge) {
            (Some(f), Some(e)) => f.edge() != e && state.edge_alive(e, now),
            _ => false,
        }
    }
    /// A new, empty state. `keys` names the channels (as on Redis, for readable logs).
    pub fn new(keys: Keys) -> MemoryEngine {
        MemoryEngine {
            keys,
            state: Arc::new(Mutex::new(State {
                generation: Some(Gen {
                    id: crate::now_ms().to_string(),
                    recovering_until: None,
                }),
                ..State::default()
            })),
            history: HistoryConfig::default(),
            presence: PresenceConfig::default(),
            fence: None,
            bus_queue_len: BUS_QUEUE_LEN,
        }
    }

    /// Subscriptions opened through this handle queue `len` payloads (at least 1) instead of
    /// [`BUS_QUEUE_LEN`].
    pub fn with_bus_queue_len(mut self, len: usize) -> MemoryEngine {
        self.bus_queue_len = len.max(1);
        self
    }

    /// What the state holds now (expired entries swept first), for metrics and tests.
    pub fn stats(&self) -> MemoryStats {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.sweep(now);
        state.last_sweep = Some(now);
        MemoryStats {
            rooms: state.rooms.len(),
            sessions: state.sessions.len(),
            edges: state.edge_index.len(),
            subscriptions: state.bus.len(),
        }
    }

    /// Ends every bus subscription, as a Redis restart drops pub/sub connections: edges see
    /// their stream end and subscribe again (operators use it to test that path).
    pub fn disconnect_subscriptions(&self) {
        self.lock().0.bus.close_all();
    }

    /// Locks the state (never held across an await) after sweeping expired entries if due.
    fn lock(&self) -> (MutexGuard<'_, State>, Instant) {
        // A panic while holding the lock cannot leave a half-applied operation visible to
        // callers that matter more than availability: keep serving.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            state.sweep(now);
            state.last_sweep = Some(now);
        }
        (state, now)
    }
}

/// Counts of what a [`MemoryEngine`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Rooms with members, a live seq, history or dedupe markers.
    pub rooms: usize,
    /// Session claims.
    pub sessions: usize,
    /// Edge ids in the index (alive or not yet reaped).
    pub edges: usize,
    /// Open bus subscriptions.
    pub subscriptions: usize,
}

/// Something that vanishes at `expires`.
#[derive(Debug, Clone)]
struct Lease<T> {
    value: T,
    expires: Instant,
}

impl<T> Lease<T> {
    fn live(&self, now: Instant) -> bool {
        now < self.expires
    }
}

/// The generation marker (Redis: `rc:generation`).
struct Gen {
    id: String,
    /// End of the recovery window opened when the marker was found gone.
    recovering_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// `None` once [`Engine::forget_everything`] ran, until an operation notices it.
    generation: Option<Gen>,
    /// Every room with members, a seq, history or dedupe markers.
    rooms: HashMap<String, rooms::Room>,
    /// uid → claim.
    sessions: HashMap<String, sessions::SessionClaim>,
    /// Edge ids, alive or not, until reaped.
    edge_index: BTreeSet<String>,
    edge_leases: HashMap<String, Lease<EdgeInfo>>,
    /// edge → the fencing token of its lease (meaningful while the lease is live).
    edge_fences: HashMap<String, String>,
    /// edge → rooms where it has members (entries removed when empty, as Redis does).
    edge_rooms: HashMap<String, BTreeSet<String>>,
    /// edge → uids whose claims it holds.
    edge_sessions: HashMap<String, BTreeSet<String>>,
    /// edge → (reaper id, deadline).
    reaper_locks: HashMap<String, Lease<String>>,
    backend_index: BTreeSet<String>,
    backend_leases: HashMap<String, Lease<BackendInfo>>,
    settings: HashMap<String, String>,
    bus: bus::Channels,
    last_sweep: Option<Instant>,
}

impl State {
    fn sweep(&mut self, now: Instant) {
        self.rooms.retain(|_, room| room.sweep(now));
        self.edge_leases.retain(|_, l| l.live(now));
        self.backend_leases.retain(|_, l| l.live(now));
        self.reaper_locks.retain(|_, l| l.live(now));
        self.bus.sweep();
    }

    /// Whether the recovery window is open; a missing marker (the state was lost) opens a new
    /// generation and its window, as the Redis scripts' `recovering()` does.
    fn recovering(&mut self, now: Instant) -> bool {
        let generation = self.generation.get_or_insert_with(|| Gen {
            id: format!(
                "{}.{}",
                crate::now_ms(),
                RESET_COUNT.fetch_add(1, Ordering::Relaxed)
            ),
            recovering_until: Some(now + RECOVERY_WINDOW),
        });
        generation.recovering_until.is_some_and(|t| now < t)
    }

    /// Whether the window is open, without opening one (a missing marker counts as open).
    fn recovering_now(&self, now: Instant) -> bool {
        self.generation
            .as_ref()
            .is_none_or(|g| g.recovering_until.is_some_and(|t| now < t))
    }

    fn generation(&mut self, now: Instant) -> Generation {
        let recovering = self.recovering(now);
        Generation {
            id: self
                .generation
                .as_ref()
                .map(|g| g.id.clone())
                .unwrap_or_default(),
            recovering,
        }
    }

    fn edge_alive(&self, edge: &str, now: Instant) -> bool {
        self.edge_leases.get(edge).is_some_and(|l| l.live(now))
    }
}

/// Adds `value` to the set at `key`, creating it.
fn set_add(map: &mut HashMap<String, BTreeSet<String>>, key: &str, value: &str) {
    map.entry(key.to_string())
        .or_default()
        .insert(value.to_string());
}

/// Removes `value` from the set at `key`, dropping the set when it empties (as Redis does).
fn set_remove(map: &mut HashMap<String, BTreeSet<String>>, key: &str, value: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn history_config(&self) -> HistoryConfig {
        self.history
    }

    fn presence_config(&self) -> PresenceConfig {
        self.presence
    }

    fn reconfigured(&self, history: HistoryConfig, presence: PresenceConfig) -> Arc<dyn Engine> {
        Arc::new(MemoryEngine {
            history,
            presence,
            ..self.clone()
        })
    }

    fn fenced(&self, fence: Arc<crate::Fence>) -> Arc<dyn Engine> {
        Arc::new(MemoryEngine {
            fence: Some(fence),
            ..self.clone()
        })
    }

    async fn init_settings(&self, settings: &[(String, String)]) -> Result<Vec<String>> {
        let (mut state, _) = self.lock();
        Ok(settings
            .iter()
            .map(|(name, value)| {
                state
                    .settings
                    .entry(name.clone())
                    .or_insert_with(|| value.clone())
                    .clone()
            })
            .collect())
    }

    async fn forget_everything(&self) -> Result<()> {
        let (mut state, _) = self.lock();
        let bus = std::mem::take(&mut state.bus);
        *state = State {
            bus,
            ..State::default()
        };
        Ok(())
    }
}
