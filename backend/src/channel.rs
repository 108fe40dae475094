//! `ChannelService`: Pomelo's channel service, with every channel in Redis.
//!
//! A thin facade over [`Store`]: each call is one atomic Redis script or pipeline, so any
//! backend can serve any room and a backend keeps no state of its own.

use roomcast_common::protocol::{route, OnUser};
use roomcast_common::store::{Joined, Result, Store};

#[derive(Clone)]
pub struct ChannelService {
    store: Store,
}

fn on_user(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&OnUser {
        user: uid.to_string(),
    })
    .unwrap_or_default()
}

impl ChannelService {
    pub fn new(store: Store) -> ChannelService {
        ChannelService { store }
    }

    /// The underlying store, for operations this facade does not wrap.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Adds `uid`, connected through `edge`, to the room and pushes `onAdd` to the members that
    /// were already there. Adding a member twice changes nothing (each message still arrives once).
    pub async fn add(&self, rid: &str, uid: &str, edge: &str) -> Result<Joined> {
        let body = on_user(uid);
        self.store
            .join(rid, uid, edge, Some((route::ON_ADD, &body)))
            .await
    }

    /// Removes `uid` from the room and pushes `onLeave` to the others. `None` if not a member.
    pub async fn leave(&self, rid: &str, uid: &str) -> Result<Option<u64>> {
        let body = on_user(uid);
        self.store
            .leave(rid, uid, None, Some((route::ON_LEAVE, &body)))
            .await
    }

    /// Uids of the room's members, sorted.
    pub async fn members(&self, rid: &str) -> Result<Vec<String>> {
        self.store.members(rid).await
    }

    /// The edge a member is connected through, or `None` if not a member.
    pub async fn member(&self, rid: &str, uid: &str) -> Result<Option<String>> {
        self.store.member(rid, uid).await
    }

    /// Pushes to every member of the room; returns the push's room sequence number.
    pub async fn push_to_room(&self, rid: &str, route: &str, body: &[u8]) -> Result<u64> {
        self.store.publish_room(rid, route, body, None, None).await
    }

    /// Pushes to the given uids wherever they are connected; returns the uids with no session.
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

    /// Removes every member; edges push `onDestroy` to their local members. Returns how many
    /// members were removed.
    pub async fn destroy(&self, rid: &str) -> Result<u64> {
        self.store.destroy(rid).await
    }
}
