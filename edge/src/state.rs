//! The shared state of a running edge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use roomcast_store::keys::Keys;
use roomcast_store::{EdgeInfo, Store};

use crate::backends::BackendPool;
use crate::bus::Bus;
use crate::config::EdgeConfig;
use crate::core::{CoreConfig, EdgeCore, Effect, SessionId};
use crate::outbound::{Outbound, StreamKey};

/// The edge core as the QUIC driver instantiates it: each session's handle is its connection.
pub type Core = EdgeCore<std::sync::Arc<SessionHandle>>;

pub struct EdgeState {
    pub id: String,
    pub cfg: EdgeConfig,
    /// host:port the gate hands out for this edge.
    pub advertise: String,
    pub store: Store,
    pub keys: Keys,
    /// Sessions, uids, rooms, grace periods, bus subscription counts, draining: see
    /// [`crate::core`]. A std mutex: it is held only while the core runs and its effects are
    /// queued (never across an await), so the fan-out never waits on IO while holding it, and
    /// pushes are queued in each room's seq order.
    core: Mutex<CoreCell>,
    /// Wakes the timer task when the core may have an earlier deadline.
    pub timer: tokio::sync::Notify,
    pub bus: Bus,
    pub backends: BackendPool,
    /// The service routes served here instead of on a backend (`--local-routes`).
    pub local: crate::local::LocalRoutes,
    /// Live edges as last read from the registry (refreshed every second); the gate answers
    /// from this cache so a gate query costs no Redis round trip.
    pub edges: RwLock<Vec<EdgeInfo>>,
    next_sid: AtomicU64,
    /// Numbers notifies (which carry no id) for their request keys.
    pub next_notify: AtomicU64,
    /// Verifies client tokens.
    pub verifier: roomcast_common::auth::Verifier,
    /// Set in development mode only: mints tokens for `gate.devToken`.
    pub minter: Option<roomcast_common::auth::Minter>,
    /// Signalled by an admin drain request arriving on the edge's channel.
    pub drain_requested: tokio::sync::Notify,
    /// This edge's fencing token, carried by `store` (the edge's own handle) to its joins and
    /// claims; replaced by each registration that wrote the lease anew.
    pub fence: std::sync::Arc<roomcast_store::Fence>,
    /// Wakes the registry refresh at once: a request met the store recovering from a reset
    /// (or disagreeing about a member), so the edge writes back its state now rather than at
    /// its next tick.
    pub registry_wake: tokio::sync::Notify,
    /// What the gate tells browsers (set at start unless `--no-webtransport`).
    pub webtransport: std::sync::OnceLock<crate::webtransport::Announce>,
    /// host:port of this edge's Pomelo listener, once it runs (registered for the gate).
    pub pomelo_advertise: std::sync::OnceLock<String>,
}

/// The core and a reused effect buffer, so running the core allocates nothing per event.
pub struct CoreCell {
    pub core: Core,
    scratch: Vec<Effect>,
}

impl CoreCell {
    /// Runs `f` on the core and hands its effects to `apply` (still under the lock), reusing
    /// the buffer.
    pub fn run<R>(
        &mut self,
        f: impl FnOnce(&mut Core, &mut Vec<Effect>) -> R,
        apply: impl FnOnce(&Core, &mut Vec<Effect>),
    ) -> R {
        let mut out = std::mem::take(&mut self.scratch);
        let r = f(&mut self.core, &mut out);
        if !out.is_empty() {
            apply(&self.core, &mut out);
        }
        out.clear();
        self.scratch = out;
        r
    }
}

/// One client connection: what the driver needs to carry out effects on it. Everything about
/// the session's state (uid, rooms, limiter) is in the core.
pub struct SessionHandle {
    pub sid: SessionId,
    /// Globally unique session name recorded in Redis (`rc:session:<uid>` → `session`), so
    /// that an edge only ever releases a claim it made itself.
    pub token: String,
    /// What carries the session's pushes: a QUIC connection, or a Pomelo connection.
    pub wire: Wire,
    /// Serialises this session's membership changes (enter/leave/close), which span several
    /// awaits, so two concurrent requests cannot interleave them.
    pub ops: tokio::sync::Mutex<()>,
    /// The control stream's send side, for notices to the client (drain).
    pub control: tokio::sync::Mutex<Option<crate::transport::Send>>,
    /// The session's span (edge, session, uid once bound).
    pub span: tracing::Span,
}

/// The transport of a session.
pub enum Wire {
    /// A native QUIC or a WebTransport connection ([`crate::transport::Conn`]).
    Quic {
        conn: crate::transport::Conn,
        outbound: Outbound,
    },
    /// A Pomelo client (WebSocket or TCP): one ordered byte stream, see [`crate::pomelo`].
    Pomelo(std::sync::Arc<crate::pomelo::link::Link>),
}

impl SessionHandle {
    /// Queues an encoded push (numbered `seq` in its room, 0 on the session stream).
    pub fn push(&self, key: &StreamKey, seq: u64, frame: bytes::Bytes) {
        match &self.wire {
            Wire::Quic { outbound, .. } => outbound.push(key, seq, frame),
            Wire::Pomelo(link) => link.push(seq, frame),
        }
    }

    /// A room's pushes are over (its stream finishes once drained).
    pub fn finish(&self, key: &StreamKey) {
        if let Wire::Quic { outbound, .. } = &self.wire {
            outbound.finish(key);
        }
    }

    pub fn close(&self, code: u32, reason: &str) {
        match &self.wire {
            Wire::Quic { conn, .. } => conn.close(code, reason.as_bytes()),
            Wire::Pomelo(link) => link.close(reason),
        }
    }
}

impl EdgeState {
    pub fn new(
        id: String,
        cfg: EdgeConfig,
        advertise: String,
        store: Store,
        backends: BackendPool,
        local: crate::local::LocalRoutes,
        auth: (
            roomcast_common::auth::Verifier,
            Option<roomcast_common::auth::Minter>,
        ),
    ) -> EdgeState {
        let keys = store.keys().clone();
        let fence = std::sync::Arc::new(roomcast_store::Fence::new(&id));
        let store = store.with_fence(fence.clone());
        let core_cfg = CoreConfig {
            resume_grace: cfg.resume_grace(),
            drain: std::time::Duration::from_secs(cfg.drain_secs),
            rate_limit: cfg.rate_limit,
            rate_burst: cfg.rate_burst,
            max_rooms_per_session: cfg.max_rooms_per_session,
        };
        EdgeState {
            bus: Bus::new(store.clone(), id.clone()),
            id,
            cfg,
            advertise,
            keys,
            store,
            core: Mutex::new(CoreCell {
                core: EdgeCore::new(core_cfg),
                scratch: Vec::new(),
            }),
            timer: tokio::sync::Notify::new(),
            backends,
            local,
            edges: RwLock::new(Vec::new()),
            next_sid: AtomicU64::new(1),
            next_notify: AtomicU64::new(1),
            drain_requested: tokio::sync::Notify::new(),
            registry_wake: tokio::sync::Notify::new(),
            pomelo_advertise: std::sync::OnceLock::new(),
            fence,
            verifier: auth.0,
            minter: auth.1,
            webtransport: std::sync::OnceLock::new(),
        }
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_sid.fetch_add(1, Ordering::Relaxed)
    }

    /// The core, locked. Poisoning is ignored: the core's methods keep it consistent at
    /// every return, and a panic in a driver callback must not take the edge down with it.
    pub fn cell(&self) -> MutexGuard<'_, CoreCell> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the edge is draining (the gate stops choosing it, clients are moved).
    pub fn draining(&self) -> bool {
        self.cell().core.draining()
    }

    pub fn session_count(&self) -> usize {
        self.cell().core.session_count()
    }
}
