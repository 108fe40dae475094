//! `ChannelService`: Pomelo's channel service, with every channel in Redis.
//!
//! In Pomelo a channel is an object inside one chat-server process (groups
//! `connectorId → [uid]`, records `uid → sid`); restart the process and its rooms are gone.
//! Here a channel is a set of Redis keys, and this type is a thin facade over
//! [`Store`]: each call is one atomic Redis script or pipeline, so any backend can serve any
//! room and a backend keeps no state of its own. Edges fan room pushes out to their local
//! sessions, so a room push costs the backend one Redis publish, whatever the room's size.
//!
//! Method names follow Pomelo (`add`, `leave`, `pushMessage` → [`ChannelService::push_to_room`],
//! `pushMessageByUids` → [`ChannelService::push_to_uids`], `broadcast`, `destroyChannel` →
//! [`ChannelService::destroy`]).

use roomcast_protocol::protocol::{route, OnUser};
use roomcast_store::{Joined, Result, Store};

/// Room operations for handlers. Cheap to clone (it shares the store's connection).
#[derive(Clone)]
pub struct ChannelService {
    store: Store,
}

impl ChannelService {
    pub fn new(store: Store) -> ChannelService {
        ChannelService { store }
    }

    /// The underlying store, for operations this facade does not wrap (idempotent or
    /// membership-checked publishes, history, sessions).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Adds `uid`, connected through `edge`, to the room and pushes `onAdd {"user": uid}` to
    /// the members that were already there (the recipient list is taken inside the same
    /// script, so the joiner never receives its own onAdd, unlike Pomelo on a cold RPC link).
    /// Adding a member twice through the same edge changes nothing and pushes nothing.
    pub async fn add(&self, rid: &str, uid: &str, edge: &str) -> Result<Joined> {
        let body = OnUser::body(uid);
        self.store
            .join(rid, uid, edge, Some((route::ON_ADD, &body)))
            .await
    }

    /// Removes `uid` from the room and pushes `onLeave {"user": uid}` to the remaining
    /// members. Returns the seq of the onLeave push, or `None` if `uid` was not a member.
    pub async fn leave(&self, rid: &str, uid: &str) -> Result<Option<u64>> {
        let body = OnUser::body(uid);
        self.store
            .leave(rid, uid, None, Some((route::ON_LEAVE, &body)))
            .await
    }

    /// Uids of the room's members, sorted.
    pub async fn members(&self, rid: &str) -> Result<Vec<String>> {
        self.store.members(rid).await
    }

    /// The edge a member is connected through, or `None` if `uid` is not a member.
    pub async fn member(&self, rid: &str, uid: &str) -> Result<Option<String>> {
        self.store.member(rid, uid).await
    }

    /// Pushes `route`/`body` to every member of the room, with the room's next sequence
    /// number, which it returns. No membership check and no deduplication: for a push on
    /// behalf of a user, use [`Rooms::publish_room`](roomcast_store::Rooms::publish_room) with the sender and the request key.
    pub async fn push_to_room(&self, rid: &str, route: &str, body: &[u8]) -> Result<u64> {
        self.store.publish_room(rid, route, body, None, None).await
    }

    /// Pushes to the given uids wherever they are connected (one publish per edge hosting any
    /// of them). Returns the uids that have no live session, Pomelo's "failed ids"; they are
    /// not an error.
    pub async fn push_to_uids(
        &self,
        uids: &[String],
        route: &str,
        body: &[u8],
    ) -> Result<Vec<String>> {
        self.store.push_to_uids(uids, route, body).await
    }

    /// Pushes to every session on every edge.
    pub async fn broadcast(&self, route: &str, body: &[u8]) -> Result<()> {
        self.store.broadcast(route, body).await
    }

    /// Removes every member of the room; edges push `onDestroy` to their local members.
    /// Returns how many members were removed.
    pub async fn destroy(&self, rid: &str) -> Result<u64> {
        self.store.destroy(rid).await
    }
}
