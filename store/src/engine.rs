//! The store interface: what every engine (Redis, in-memory, Redis Cluster next) must do, and
//! the contract callers rely on. [`crate::conformance`] checks an engine against it.
//!
//! # Contract shared by every trait
//!
//! - **Atomic room changes.** Each room operation ([`Rooms::join_with`], [`Rooms::leave`],
//!   [`Rooms::publish_room`], [`Rooms::destroy`]) is one indivisible step: membership in both
//!   directions (uid → edge, edge → uids), the room and edge indexes, the room's seq, the
//!   publish of the resulting push and its history entry change together. No reader sees half
//!   of one, and two of them on one room are ordered.
//! - **Seqs never repeat.** Every room push gets the room's next seq (`+1`, gapless as seen in
//!   the history), and a number is never handed out twice for a room. Numbering continues
//!   across a room emptying and filling again. A room with no seq (new, left empty for
//!   [`crate::EMPTY_ROOM_SEQ_TTL_SECS`], or lost with the store's state) starts a new numbering
//!   at [`crate::seq_start`] of the engine's clock, the first time a join or push touches it:
//!   above every earlier numbering of that room, with no one having to remember a floor. The
//!   engine's clock must not go back, and a numbering must not issue more than 2048 seqs per
//!   millisecond of its life.
//! - **Request keys.** A publish with a request key is published at most once per room within
//!   [`crate::REQUEST_DEDUPE_TTL_SECS`]; a retry with the same key publishes nothing and
//!   returns the first publish's seq. This is what lets an edge retry a request on another
//!   backend without duplicating a message.
//! - **Pub/sub is at-most-once.** A published payload reaches the subscriptions that exist at
//!   the moment of the publish, or is lost (connection drop, slow subscriber). Room pushes are
//!   also in the room's history, so a subscriber that sees a seq jump fills the gap with
//!   [`Rooms::history`]; other pushes (to uids, broadcasts) are simply lost.
//! - **Losing state: seqs are still never reused, rooms are whole again.** An engine may lose
//!   everything (Redis restarted empty, a Redis failover to a replica that missed the last
//!   writes, a memory engine's process restarted). A lost room's next numbering starts above
//!   the old one (above), and edges hold the truth about who is where, so the store must not
//!   announce anything until they wrote it back. Every engine keeps a *generation
//!   marker* ([`Generation`]), created when a handle connects to a store that has none (a new
//!   deployment). A room operation or [`Registry::generation`] that finds the marker gone
//!   knows the state was lost: it creates a new generation and opens a *recovery window* of
//!   [`crate::RECOVERY_WINDOW`]. Inside the window, every operation that would number a room
//!   push (a join or leave with a presence push, [`Rooms::publish_room`], [`Rooms::destroy`])
//!   fails with [`crate::StoreError::Recovering`] (503 "store recovering after a reset; retry")
//!   and changes nothing, and a sender or target missing from a room is reported as
//!   `Recovering` too, never as "not a member" (the membership may just not be written back
//!   yet). Silent writes are accepted: claims, and [`Rooms::join_with`] with `resume` and a
//!   `seq_floor`, which is how an edge writes back what it owns. An edge notices the loss
//!   through a new [`Generation::id`] (or its lease gone) on its next refresh, at most a second
//!   later, and writes back each session's claim ([`Sessions::claim_session`], resuming its own
//!   session name) and each local membership ([`Rooms::join_with`], `resume = true`, no push,
//!   `seq_floor` = the highest seq it delivered in that room). The floors are not what keeps
//!   seqs unique (a lost room starts a new numbering above the old one, see above): the window
//!   exists so that a joiner's member list is complete and nobody is told "not a member" while
//!   memberships are written back. Floors only help a store that kept a room's seq but lost its
//!   last increments (a failover to a replica that missed writes), and come from edges only:
//!   a client's word never moves a room's numbering. (One marker per store: under Redis
//!   Cluster it would be one per shard, carried in each room script's slot.)
//! - **Fencing.** An edge's lease carries a fencing token, new each time the lease is written
//!   anew ([`Registry::register_edge_fenced`]). Through a handle with a [`crate::Fence`] (the
//!   edge's own), [`Rooms::join_with`] and [`Sessions::claim_session`] through that edge fail
//!   with [`crate::StoreError::Fenced`] and change nothing unless the edge's live lease holds
//!   the handle's token, and [`Rooms::leave`] through *another* edge (a reaper's) does nothing
//!   when that edge's lease is live again. Handles without a fence are not checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use roomcast_protocol::bus::BusMessage;

use crate::keys::Keys;
use crate::{HistoryConfig, PresenceConfig, Result};

/// Result of [`Rooms::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room's seq right after the join (the onAdd push, if any, carries it).
    pub seq: u64,
    /// Every member's uid, the joiner included, sorted; empty when the room has more members
    /// than the presence limit ([`PresenceConfig`]).
    pub users: Vec<String>,
    /// How many members the room has, the joiner included.
    pub members: u64,
    /// False when nothing was pushed: the uid was already a member through this edge, the
    /// join was a resume that moved an existing member, or the room is over the presence limit.
    pub added: bool,
}

/// The store's generation: which life of the store this is (see "Losing state" above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Changes each time the store is found to have lost its state.
    pub id: String,
    /// Inside the recovery window: numbered room pushes are refused.
    pub recovering: bool,
}

/// One recorded room push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub seq: u64,
    pub message: BusMessage,
}

/// Result of [`Sessions::claim_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claim is ours. `replaced` names the (edge, session) it was taken from, when a resume
    /// took over a session that is still registered somewhere.
    Granted { replaced: Option<(String, String)> },
    /// The uid has a live session on `edge` (which may be this edge).
    Taken { edge: String },
}

/// An edge's registry entry.
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
    /// host:port of the edge's Pomelo listener, if it runs one (the Pomelo gate hands it out).
    pub pomelo: Option<String>,
}

/// A backend's registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub id: String,
    /// host:port edges connect to.
    pub addr: String,
    /// Route prefixes it serves, e.g. `chat.`.
    pub routes: Vec<String>,
}

/// Room state and the pushes that go with it.
///
/// `push` arguments are `(route, body)` of the presence push (onAdd/onLeave); `None` makes the
/// change silent. Room pushes are published on the room's channel and recorded in its history
/// with their seq; pushes to members and uids go to the channel of the edge hosting them.
#[async_trait]
pub trait Rooms: Send + Sync {
    /// Adds `uid` (on `edge`) to `rid` and pushes `push` (onAdd) to the members that were there
    /// before. Idempotent: joining again through the same edge changes nothing and pushes
    /// nothing.
    async fn join(
        &self,
        rid: &str,
        uid: &str,
        edge: &str,
        push: Option<(&str, &[u8])>,
    ) -> Result<Joined> {
        self.join_with(rid, uid, edge, push, false, 0).await
    }

    /// [`Rooms::join`] with the resume options: `resume` moves an existing member to `edge`
    /// without a push; `seq_floor` first raises the room's seq to at least that value (an edge
    /// re-registering after the store lost its state writes back the highest seq it
    /// delivered; never a value a client sent).
    /// No push either when the room would exceed the presence limit; the join still happens.
    async fn join_with(
        &self,
        rid: &str,
        uid: &str,
        edge: &str,
        push: Option<(&str, &[u8])>,
        resume: bool,
        seq_floor: u64,
    ) -> Result<Joined>;

    /// Removes `uid` from `rid` and pushes `push` (onLeave) to the remaining members (silently
    /// when the room was over the presence limit). With `edge`, only a member still registered
    /// through that edge is removed (a reaper never removes a user who moved elsewhere).
    /// Returns the seq of the leave (the current seq when silent), `None` if not a member.
    async fn leave(
        &self,
        rid: &str,
        uid: &str,
        edge: Option<&str>,
        push: Option<(&str, &[u8])>,
    ) -> Result<Option<u64>>;

    /// Uids of the room's members, sorted.
    async fn members(&self, rid: &str) -> Result<Vec<String>>;

    /// The edge a member is connected through, or `None` if `uid` is not a member.
    async fn member(&self, rid: &str, uid: &str) -> Result<Option<String>>;

    /// Members grouped by edge (Pomelo's groups), each group sorted.
    async fn members_by_edge(&self, rid: &str) -> Result<HashMap<String, Vec<String>>>;

    /// Uids of the room's members on one edge (any order).
    async fn group(&self, rid: &str, edge: &str) -> Result<Vec<String>>;

    /// Ids of rooms that have members, sorted.
    async fn rooms(&self) -> Result<Vec<String>>;

    /// The room's current seq (0 if nothing was ever pushed).
    async fn room_seq(&self, rid: &str) -> Result<u64>;

    /// Pushes to every member of the room with the next seq, which it returns. `sender`: refuse
    /// with [`crate::StoreError::NotMember`] unless this uid is a member. `request_key`:
    /// published at most once per room within the dedupe TTL; a retry returns the first seq.
    async fn publish_room(
        &self,
        rid: &str,
        route: &str,
        body: &[u8],
        sender: Option<&str>,
        request_key: Option<&str>,
    ) -> Result<u64>;

    /// Pushes to one member of the room, through that member's edge, in one atomic step:
    /// [`crate::StoreError::NotMember`] if `sender` is given and not a member,
    /// [`crate::StoreError::TargetNotInRoom`] if `target` is not a member. No seq, no history.
    async fn publish_to_member(
        &self,
        rid: &str,
        sender: Option<&str>,
        target: &str,
        route: &str,
        body: &[u8],
    ) -> Result<()>;

    /// Pushes to the given uids wherever they are logged in (their session claim): one publish
    /// per edge hosting any of them. Returns the uids with no live session, in input order.
    async fn push_to_uids(&self, uids: &[String], route: &str, body: &[u8]) -> Result<Vec<String>>;

    /// Publishes an edge-addressed message (kicks, drains) on that edge's channel; returns how
    /// many subscriptions received it (0: the edge is not running).
    async fn publish_to_edge(&self, edge: &str, msg: &BusMessage) -> Result<i64>;

    /// Pushes to every session on every edge (the broadcast channel).
    async fn broadcast(&self, route: &str, body: &[u8]) -> Result<()>;

    /// Removes every member of the room and publishes `RoomDestroyed` with the next seq, so
    /// edges drop the room. Returns how many members were removed.
    async fn destroy(&self, rid: &str) -> Result<u64>;

    /// Recorded pushes of the room with `after < seq <= upto`, oldest first. Entries beyond the
    /// history bounds (this handle's [`HistoryConfig`]) are left out, so a caller tells a gap
    /// from the seqs.
    async fn history(&self, rid: &str, after: u64, upto: u64) -> Result<Vec<HistoryEntry>>;
}

/// The global uid → session claims: one live session per uid in the whole deployment.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Records that `uid` is logged in through `session` on `edge`, unless a session on an edge
    /// with a live lease already holds it ([`Claim::Taken`]). A holder whose edge has no lease
    /// is replaced, and so is the holder whose session name is `resume`. Claiming again with
    /// the same (edge, session) is granted with nothing replaced. The edge's session index
    /// follows the claim.
    async fn claim_session(
        &self,
        uid: &str,
        edge: &str,
        session: &str,
        resume: Option<&str>,
    ) -> Result<Claim>;

    /// Forgets the uid's claim if it is still `session` (only the owner releases).
    async fn release_session(&self, uid: &str, session: &str) -> Result<bool>;

    /// Forgets the uid's claim if it is held through `edge` (cleanup after a dead edge).
    async fn release_session_of_edge(&self, uid: &str, edge: &str) -> Result<bool>;

    /// The edge the uid is logged in through.
    async fn session_edge(&self, uid: &str) -> Result<Option<String>>;

    /// The session name holding the uid.
    async fn session_name(&self, uid: &str) -> Result<Option<String>>;
}

/// The registry of edges and backends. Entries are leases: they vanish `ttl` after the last
/// write unless rewritten; ids stay in the edge index until the edge is reaped
/// ([`Registry::forget_edge`]), so a dead edge's state can be found and cleaned up.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Writes (or refreshes) an edge's lease. Returns whether it existed before (false after a
    /// lease expiry, or when the store lost its state: see the module doc) and the lease's
    /// fencing token: kept while the lease lives, new when the lease is written anew.
    async fn register_edge_fenced(&self, e: &EdgeInfo, ttl: Duration) -> Result<(bool, String)>;

    /// [`Registry::register_edge_fenced`] without the token.
    async fn register_edge(&self, e: &EdgeInfo, ttl: Duration) -> Result<bool> {
        Ok(self.register_edge_fenced(e, ttl).await?.0)
    }

    /// Removes the edge's lease and its id from the index.
    async fn unregister_edge(&self, id: &str) -> Result<()>;

    /// Ids in the edge index, alive or not.
    async fn edge_ids(&self) -> Result<Vec<String>>;

    /// Whether the edge holds a live lease.
    async fn edge_alive(&self, id: &str) -> Result<bool>;

    /// Live edges, sorted by id.
    async fn list_edges(&self) -> Result<Vec<EdgeInfo>>;

    /// Writes (or refreshes) a backend's lease.
    async fn register_backend(&self, b: &BackendInfo, ttl: Duration) -> Result<()>;

    async fn unregister_backend(&self, id: &str) -> Result<()>;

    /// Live backends, sorted by id; dead ids are pruned (a backend has nothing to clean up).
    async fn list_backends(&self) -> Result<Vec<BackendInfo>>;

    /// Rooms in which `edge` has members (maintained by the room operations).
    async fn edge_room_ids(&self, edge: &str) -> Result<Vec<String>>;

    /// Uids whose claims `edge` holds (maintained by the claim operations).
    async fn edge_session_uids(&self, edge: &str) -> Result<Vec<String>>;

    /// Takes the lock to clean up after `edge`: true for exactly one caller until `ttl` passes
    /// or [`Registry::forget_edge`] runs (a crashed reaper holds it at most `ttl`).
    async fn lock_reaper(&self, edge: &str, me: &str, ttl: Duration) -> Result<bool>;

    /// After a dead edge was cleaned up: drops its indexes, its id and the reaper lock.
    async fn forget_edge(&self, edge: &str) -> Result<()>;

    /// The store's generation. Finding the marker gone (the store lost its state) creates a new
    /// generation and opens the recovery window, as a room operation would.
    async fn generation(&self) -> Result<Generation>;
}

/// The bus, subscribing side. Publishing is part of the room operations (atomic with the
/// state change); an edge receives what is published for it through one [`Subscription`].
#[async_trait]
pub trait Broker: Send + Sync {
    /// Opens a subscription for `edge` on its own channel, the broadcast channel and the
    /// channels of `rooms`, all confirmed when this returns. The subscription may drop (its
    /// stream ends or [`SubscriptionControl::ping`] fails); the edge then opens a new one with
    /// its current rooms and fills from history what it missed meanwhile.
    async fn subscribe_edge(&self, edge: &str, rooms: &[String]) -> Result<Subscription>;
}

/// Controls a live subscription (cheap to clone, usable while the stream is being read).
#[async_trait]
pub trait SubscriptionControl: Send + Sync {
    /// Adds the room's channel. When this returns, every later push of the room reaches the
    /// subscription (an edge subscribes before joining, so it sees every push after its join).
    async fn subscribe_room(&self, rid: &str) -> Result<()>;

    /// Removes the room's channel; its pushes stop arriving (a few already in flight may).
    async fn unsubscribe_room(&self, rid: &str) -> Result<()>;

    /// Round trip through the subscription: fails if it is dead or deaf.
    async fn ping(&self) -> Result<()>;

    /// Payloads this subscription lost so far because its queue was full (the edge read too
    /// slowly; see [`crate::BUS_QUEUE_LEN`]): counted by both engines, for logs and tests.
    fn dropped(&self) -> u64;
}

/// Raw bus payloads ([`roomcast_protocol::bus`] format), in publish order per channel.
pub type Payloads = BoxStream<'static, Bytes>;

/// A live subscription: its control and its payload stream. The stream ends when the
/// subscription drops.
pub struct Subscription {
    pub control: Arc<dyn SubscriptionControl>,
    pub payloads: Payloads,
}

/// A complete engine: every trait, its configuration, and the shared settings.
#[async_trait]
pub trait Engine: Rooms + Sessions + Registry + Broker {
    /// The key (and channel) names; the memory engine uses the same names for its channels so
    /// that logs read the same.
    fn keys(&self) -> &Keys;

    /// History bounds applied by this handle's writes and reads.
    fn history_config(&self) -> HistoryConfig;

    /// Presence limit applied by this handle's joins and leaves.
    fn presence_config(&self) -> PresenceConfig;

    /// A handle on the same state (same connection, same data) with other bounds.
    fn reconfigured(&self, history: HistoryConfig, presence: PresenceConfig) -> Arc<dyn Engine>;

    /// A handle on the same state whose writes are fenced by `fence` (see "Fencing").
    fn fenced(&self, fence: Arc<crate::Fence>) -> Arc<dyn Engine>;

    /// Writes each `(name, value)` that is not set yet, then returns the stored value of each
    /// name, in the same order, in one atomic step (the first process's values win).
    async fn init_settings(&self, settings: &[(String, String)]) -> Result<Vec<String>>;

    /// Forgets every piece of state under this handle's prefix, the generation marker included:
    /// what a Redis restart without persistence does. For tests and drills; live subscriptions
    /// of the memory engine stay open (Redis drops them, and edges resubscribe).
    async fn forget_everything(&self) -> Result<()>;
}
