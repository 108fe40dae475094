//! The shared state of a running edge.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use quinn::Connection;
use roomcast_store::keys::Keys;
use roomcast_store::{EdgeInfo, Store};

use crate::backends::BackendPool;
use crate::bus::Bus;
use crate::config::EdgeConfig;
use crate::outbound::Outbound;
use crate::rooms::{LocalRooms, SessionId};

pub struct EdgeState {
    pub id: String,
    pub cfg: EdgeConfig,
    /// host:port the gate hands out for this edge.
    pub advertise: String,
    pub store: Store,
    pub keys: Keys,
    /// Local sessions and room memberships. A std mutex: it is held only for map look-ups,
    /// never across an await, so the fan-out never waits on IO while holding it.
    pub local: Mutex<Local>,
    pub bus: Bus,
    pub backends: BackendPool,
    /// Live edges as last read from the registry (refreshed every second); the gate answers
    /// from this cache so a gate query costs no Redis round trip.
    pub edges: RwLock<Vec<EdgeInfo>>,
    next_sid: AtomicU64,
    draining: AtomicBool,
    /// Verifies client tokens.
    pub verifier: roomcast_common::auth::Verifier,
    /// Set in development mode only: mints tokens for `gate.devToken`.
    pub minter: Option<roomcast_common::auth::Minter>,
    /// Signalled by an admin drain request arriving on the edge's channel.
    pub drain_requested: tokio::sync::Notify,
}

#[derive(Default)]
pub struct Local {
    pub rooms: LocalRooms,
    pub sessions: HashMap<SessionId, Arc<SessionHandle>>,
    /// uid → session, for pushes addressed to uids.
    pub by_uid: HashMap<String, SessionId>,
    /// Sessions whose connection ended less than the resume grace period ago, by uid: their
    /// members stay in their rooms (no onLeave) until the grace period ends or they resume.
    pub detached: HashMap<String, Detached>,
}

/// A session between the loss of its connection and the end of its grace period.
#[derive(Debug, Clone)]
pub struct Detached {
    pub token: String,
    pub rooms: Vec<String>,
}

/// One client connection.
pub struct SessionHandle {
    pub sid: SessionId,
    /// Globally unique session name recorded in Redis (`rc:session:<uid>` → `session`), so
    /// that an edge only ever releases a claim it made itself.
    pub token: String,
    pub conn: Connection,
    pub outbound: Outbound,
    /// Set by the first `connector.enter`; never changes afterwards.
    pub uid: Mutex<Option<String>>,
    /// Rooms the session is in (mirrors `Local::rooms`, for cleanup and limits).
    pub rooms: Mutex<BTreeSet<String>>,
    /// Serialises this session's membership changes (enter/leave/close), which span several
    /// awaits, so two concurrent requests cannot interleave them.
    pub ops: tokio::sync::Mutex<()>,
    /// Set when another connection resumed this session: cleanup then leaves nothing.
    pub replaced: AtomicBool,
    /// The session's request rate limit.
    pub limiter: Mutex<crate::limits::TokenBucket>,
    /// The control stream's send side, for notices to the client (drain).
    pub control: tokio::sync::Mutex<Option<quinn::SendStream>>,
}

impl SessionHandle {
    pub fn uid(&self) -> Option<String> {
        self.uid.lock().expect("uid lock").clone()
    }
}

impl EdgeState {
    pub fn new(
        id: String,
        cfg: EdgeConfig,
        advertise: String,
        store: Store,
        backends: BackendPool,
        auth: (
            roomcast_common::auth::Verifier,
            Option<roomcast_common::auth::Minter>,
        ),
    ) -> EdgeState {
        let keys = store.keys().clone();
        EdgeState {
            bus: Bus::new(store.clone(), id.clone()),
            id,
            cfg,
            advertise,
            keys,
            store,
            local: Mutex::new(Local::default()),
            backends,
            edges: RwLock::new(Vec::new()),
            next_sid: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            drain_requested: tokio::sync::Notify::new(),
            verifier: auth.0,
            minter: auth.1,
        }
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_sid.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the edge is draining (the gate stops choosing it, clients are moved).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn session_count(&self) -> usize {
        self.local.lock().expect("local lock").sessions.len()
    }
}
