//! The conformance suite: what every engine must do, as test bodies that take a fresh, empty
//! [`Store`]. [`conformance_tests!`](crate::conformance_tests) stamps out one `#[tokio::test]`
//! per body for an engine factory, so a new engine only has to pass it:
//!
//! ```ignore
//! roomcast_store::conformance_tests!(|| async { ((), Store::memory(Keys::default())) });
//! ```
//!
//! The factory returns `(guard, store)`; the guard (e.g. a redis-server child) lives until the
//! test ends. Bodies panic on failure, as tests do. They only use the traits, never key names:
//! engine-specific state (what redis-cli shows) is checked by each engine's own tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use roomcast_protocol::bus::{self, BusMessage};
use roomcast_protocol::ids::IdRules;

use crate::Fence;
use crate::{
    BackendInfo, Claim, EdgeInfo, HistoryConfig, Payloads, PresenceConfig, Settings, Store,
    StoreError, RECOVERY_WINDOW,
};

/// Stamps out one `#[tokio::test]` per conformance body, each on a fresh store from `$factory`
/// (an expression callable as `$factory().await -> (guard, Store)`).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            join_and_leave_are_idempotent_and_numbered,
            presence_pushes_carry_their_seqs,
            seqs_never_repeat_and_are_gapless,
            request_keys_publish_once,
            private_messages_reach_members_only,
            history_keeps_the_last_pushes_in_range,
            history_forgets_old_pushes,
            resume_moves_silently_and_the_seq_floor_holds,
            rooms_over_the_presence_limit_are_silent,
            session_claims_are_global_and_owned,
            release_of_edge_only_frees_that_edges_claims,
            registry_leases_expire,
            reaper_lock_is_exclusive,
            edge_indexes_follow_members_and_claims,
            bus_delivers_a_room_only_after_a_confirmed_subscription,
            unsubscribe_stops_room_delivery,
            push_to_uids_groups_by_edge_and_reports_missing,
            destroy_removes_everything_and_tells_edges,
            hostile_ids_stay_apart,
            settings_are_written_once_and_checked,
            a_reset_store_never_reuses_a_seq,
            a_lost_lease_fences_the_edges_writes,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (guard, store) = ($factory)().await;
                $crate::conformance::$name(store).await;
                drop(guard);
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to conclude that nothing arrives.
const QUIET: Duration = Duration::from_millis(200);

fn edge(id: &str) -> EdgeInfo {
    EdgeInfo {
        id: id.into(),
        addr: "127.0.0.1:1".into(),
        region: "r".into(),
        load: 0,
        draining: false,
        pomelo: None,
    }
}

fn room(rid: &str, route: &str, body: &[u8]) -> BusMessage {
    BusMessage::Room {
        rid: rid.into(),
        route: route.into(),
        body: body.to_vec(),
    }
}

/// A seq's place in its room's numbering: 1 for the first push (a numbering starts at
/// [`crate::seq_start`], with the counter bits clear), 0 for pushes that are not room messages.
fn nth(seq: u64) -> u64 {
    seq & ((1 << crate::SEQ_COUNTER_BITS) - 1)
}

/// The next payload, decoded, with its seq as [`nth`], or `None` after `wait`.
async fn next(p: &mut Payloads, wait: Duration) -> Option<(u64, BusMessage)> {
    let payload = tokio::time::timeout(wait, p.next()).await.ok()??;
    let (seq, msg) = bus::decode(&payload).expect("decodable payload");
    Some((nth(seq), msg))
}

/// The room's history, as [`nth`] seqs.
async fn seqs(s: &Store, rid: &str) -> Vec<u64> {
    let h = s.history(rid, 0, u64::MAX).await.expect("history");
    h.iter().map(|e| nth(e.seq)).collect()
}

pub async fn join_and_leave_are_idempotent_and_numbered(s: Store) {
    let add = Some(("onAdd", &b"{}"[..]));
    let gone = Some(("onLeave", &b"{}"[..]));
    let j = s.join("lobby", "alice", "e1", add).await.expect("join");
    assert_eq!(
        (nth(j.seq), j.added, j.users, j.members),
        (1, true, vec!["alice".into()], 1)
    );
    // Idempotent: the same edge again changes nothing and pushes nothing.
    let again = s.join("lobby", "alice", "e1", add).await.expect("join");
    assert_eq!((nth(again.seq), again.added, again.members), (1, false, 1));
    let base = again.seq - 1;
    let j = s.join("lobby", "bob", "e2", add).await.expect("join");
    assert_eq!(
        (j.seq, j.users),
        (base + 2, vec!["alice".into(), "bob".into()])
    );
    assert_eq!(
        s.member("lobby", "bob").await.expect("member").as_deref(),
        Some("e2")
    );
    assert_eq!(s.members("lobby").await.expect("members"), ["alice", "bob"]);
    let by_edge = s.members_by_edge("lobby").await.expect("by edge");
    assert_eq!(
        (by_edge["e1"].clone(), by_edge["e2"].clone()),
        (vec!["alice".into()], vec!["bob".into()])
    );
    assert_eq!(s.group("lobby", "e1").await.expect("group"), ["alice"]);
    assert_eq!(s.rooms().await.expect("rooms"), ["lobby"]);

    // An edge cannot remove a member registered through another edge.
    assert_eq!(
        s.leave("lobby", "bob", Some("e1"), gone)
            .await
            .expect("leave"),
        None
    );
    assert_eq!(
        s.leave("lobby", "bob", Some("e2"), gone)
            .await
            .expect("leave"),
        Some(base + 3)
    );
    assert_eq!(
        s.leave("lobby", "bob", None, gone).await.expect("leave"),
        None,
        "left twice"
    );
    assert!(s.group("lobby", "e2").await.expect("group").is_empty());
    assert!(!s
        .members_by_edge("lobby")
        .await
        .expect("by edge")
        .contains_key("e2"));
    assert_eq!(
        s.leave("lobby", "nobody", None, None).await.expect("leave"),
        None
    );
    assert_eq!(
        s.leave("lobby", "alice", None, gone).await.expect("leave"),
        Some(base + 4)
    );
    assert!(
        s.rooms().await.expect("rooms").is_empty(),
        "an empty room leaves the index"
    );
    assert!(s.members("lobby").await.expect("members").is_empty());
    // Re-joining continues the numbering.
    let j = s.join("lobby", "carol", "e1", add).await.expect("join");
    assert_eq!(j.seq, base + 5);
    assert_eq!(seqs(&s, "lobby").await, [1, 2, 3, 4, 5]);
}

pub async fn presence_pushes_carry_their_seqs(s: Store) {
    let mut sub = s
        .subscribe_edge("e9", &["lobby".into()])
        .await
        .expect("subscribe");
    s.join(
        "lobby",
        "alice",
        "e1",
        Some(("onAdd", b"{\"user\":\"alice\"}")),
    )
    .await
    .expect("join");
    let seq = s
        .publish_room("lobby", "onChat", b"hello", Some("alice"), None)
        .await
        .expect("publish");
    assert_eq!(nth(seq), 2);
    s.leave("lobby", "alice", None, Some(("onLeave", b"bye")))
        .await
        .expect("leave");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut sub.payloads, WAIT).await.expect("a push"));
    }
    assert_eq!(
        got,
        vec![
            (1, room("lobby", "onAdd", b"{\"user\":\"alice\"}")),
            (2, room("lobby", "onChat", b"hello")),
            (3, room("lobby", "onLeave", b"bye")),
        ]
    );
    // The history holds the same pushes.
    let h = s.history("lobby", 0, seq + 1).await.expect("history");
    let h: Vec<(u64, BusMessage)> = h.into_iter().map(|e| (nth(e.seq), e.message)).collect();
    assert_eq!(h, got);
}

pub async fn seqs_never_repeat_and_are_gapless(s: Store) {
    let s = s.with_history(HistoryConfig {
        max_len: 10_000,
        max_age: Duration::from_secs(60),
    });
    let base = s.join("r", "sender", "e1", None).await.expect("join").seq;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..25 {
                let uid = format!("u{t}-{i}");
                let push = Some(("onAdd", &b"{}"[..]));
                mine.push(s.join("r", &uid, "e1", push).await.expect("join").seq);
                mine.push(
                    s.publish_room("r", "onChat", b"x", None, None)
                        .await
                        .expect("publish"),
                );
                let leave = s.leave("r", &uid, None, Some(("onLeave", b"{}"))).await;
                mine.push(leave.expect("leave").expect("was a member"));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a seq was handed out twice");
    all.sort();
    assert_eq!(
        all,
        (base + 1..=base + 300).collect::<Vec<u64>>(),
        "gapless"
    );
    assert_eq!(seqs(&s, "r").await, (1..=300).collect::<Vec<u64>>());
    assert_eq!(s.room_seq("r").await.expect("seq"), base + 300);
}

pub async fn request_keys_publish_once(s: Store) {
    let mut sub = s
        .subscribe_edge("e9", &["lobby".into()])
        .await
        .expect("subscribe");
    s.join("lobby", "alice", "e1", None).await.expect("join");
    let err = s
        .publish_room("lobby", "onChat", b"x", Some("mallory"), None)
        .await
        .expect_err("not a member");
    assert!(matches!(err, StoreError::NotMember { .. }), "{err}");
    let a = s
        .publish_room("lobby", "onChat", b"x", Some("alice"), Some("sess/7"))
        .await
        .expect("publish");
    let b = s
        .publish_room("lobby", "onChat", b"x", Some("alice"), Some("sess/7"))
        .await
        .expect("retry");
    assert_eq!(a, b, "a retried request returns the first seq");
    assert_eq!(s.room_seq("lobby").await.expect("seq"), a);
    // The same key in another room is another request.
    s.join("other", "alice", "e1", None).await.expect("join");
    let o = s
        .publish_room("other", "onChat", b"x", Some("alice"), Some("sess/7"))
        .await
        .expect("publish");
    assert_eq!(nth(o), 1);
    let c = s
        .publish_room("lobby", "onChat", b"x", Some("alice"), Some("sess/8"))
        .await
        .expect("publish");
    assert_eq!(c, a + 1);
    // Published once: the subscriber sees a, then c, and nothing else.
    assert_eq!(
        next(&mut sub.payloads, WAIT).await.map(|m| m.0),
        Some(nth(a))
    );
    assert_eq!(
        next(&mut sub.payloads, WAIT).await.map(|m| m.0),
        Some(nth(c))
    );
    assert_eq!(next(&mut sub.payloads, QUIET).await, None);
    assert_eq!(seqs(&s, "lobby").await, [nth(a), nth(c)]);
}

pub async fn private_messages_reach_members_only(s: Store) {
    let mut e2 = s.subscribe_edge("e2", &[]).await.expect("subscribe");
    s.join("lobby", "alice", "e1", None).await.expect("join");
    let err = s
        .publish_to_member("lobby", Some("alice"), "bob", "onChat", b"x")
        .await
        .expect_err("bob is not in the room");
    assert!(matches!(err, StoreError::TargetNotInRoom { .. }), "{err}");
    s.join("lobby", "bob", "e2", None).await.expect("join");
    let err = s
        .publish_to_member("lobby", Some("mallory"), "bob", "onChat", b"x")
        .await
        .expect_err("mallory is not in the room");
    assert!(matches!(err, StoreError::NotMember { .. }), "{err}");
    s.publish_to_member("lobby", Some("alice"), "bob", "onChat", b"psst")
        .await
        .expect("private message");
    let got = next(&mut e2.payloads, WAIT).await.expect("a push on e2");
    assert_eq!(
        got,
        (
            0,
            BusMessage::Users {
                uids: vec!["bob".into()],
                route: "onChat".into(),
                body: b"psst".to_vec()
            }
        )
    );
    assert_eq!(
        nth(s.room_seq("lobby").await.expect("seq")),
        0,
        "no push, no history"
    );
    assert!(seqs(&s, "lobby").await.is_empty());
}

pub async fn history_keeps_the_last_pushes_in_range(s: Store) {
    let s = s.with_history(HistoryConfig {
        max_len: 5,
        max_age: Duration::from_secs(60),
    });
    let base = s
        .join("lobby", "alice", "e1", Some(("onAdd", b"a")))
        .await
        .expect("join")
        .seq
        - 1;
    for i in 0..9 {
        let body = format!("m{i}");
        s.publish_room("lobby", "onChat", body.as_bytes(), None, None)
            .await
            .expect("publish");
    }
    // seqs 1..=10 were pushed; the last 5 are kept.
    let h = s.history("lobby", 0, base + 10).await.expect("history");
    assert_eq!(
        h.iter().map(|e| nth(e.seq)).collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    assert_eq!(h[4].message, room("lobby", "onChat", b"m8"));
    let range = |after, upto| {
        let s = s.clone();
        async move {
            let h = s
                .history("lobby", base + after, base + upto)
                .await
                .expect("history");
            h.iter().map(|e| nth(e.seq)).collect::<Vec<u64>>()
        }
    };
    assert_eq!(range(8, 9).await, [9]);
    assert_eq!(range(7, 100).await, [8, 9, 10]);
    assert!(range(9, 9).await.is_empty());
    assert!(range(10, 5).await.is_empty());
    assert!(s
        .history("elsewhere", 0, 10)
        .await
        .expect("history")
        .is_empty());
}

pub async fn history_forgets_old_pushes(s: Store) {
    let s = s.with_history(HistoryConfig {
        max_len: 100,
        max_age: Duration::from_millis(300),
    });
    s.publish_room("lobby", "onChat", b"old", None, None)
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seq = s
        .publish_room("lobby", "onChat", b"new", None, None)
        .await
        .expect("publish");
    assert_eq!(nth(seq), 2, "the seq outlives the history");
    assert_eq!(
        seqs(&s, "lobby").await,
        [2],
        "pushes older than the age bound are gone"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        seqs(&s, "lobby").await.is_empty(),
        "a quiet room's history expires"
    );
}

pub async fn resume_moves_silently_and_the_seq_floor_holds(s: Store) {
    s.join("lobby", "alice", "e1", Some(("onAdd", b"a")))
        .await
        .expect("join");
    // A resume through another edge moves the member without a push.
    let j = s
        .join_with("lobby", "alice", "e2", Some(("onAdd", b"a")), true, 0)
        .await
        .expect("resume");
    assert_eq!((j.added, nth(j.seq), j.members), (false, 1, 1));
    let base = j.seq - 1;
    assert_eq!(
        s.member("lobby", "alice").await.expect("member").as_deref(),
        Some("e2")
    );
    assert!(s.edge_room_ids("e1").await.expect("index").is_empty());
    assert_eq!(s.edge_room_ids("e2").await.expect("index"), ["lobby"]);
    assert!(s.group("lobby", "e1").await.expect("group").is_empty());
    // Without `resume`, moving to another edge is a join that is pushed.
    let j = s
        .join_with("lobby", "alice", "e3", Some(("onAdd", b"a")), false, 0)
        .await
        .expect("move");
    assert_eq!((j.added, j.seq), (true, base + 2));
    // A seq floor raises the numbering (an edge writing back what it delivered), never lowers
    // it.
    let j = s
        .join_with("lobby", "bob", "e2", None, true, base + 42)
        .await
        .expect("floor");
    assert_eq!(j.seq, base + 42);
    let j = s
        .join_with("lobby", "carol", "e2", None, true, base + 7)
        .await
        .expect("floor");
    assert_eq!(j.seq, base + 42);
    let seq = s
        .publish_room("lobby", "onChat", b"x", None, None)
        .await
        .expect("publish");
    assert_eq!(seq, base + 43);
}

pub async fn rooms_over_the_presence_limit_are_silent(s: Store) {
    let s = s.with_presence(PresenceConfig { max_members: 2 });
    let add = Some(("onAdd", &b"{}"[..]));
    let gone = Some(("onLeave", &b"{}"[..]));
    assert!(s.join("big", "a", "e1", add).await.expect("join").added);
    let b = s.join("big", "b", "e1", add).await.expect("join");
    assert_eq!(
        (b.added, nth(b.seq), b.members, b.users.len()),
        (true, 2, 2, 2)
    );
    // The third member makes the room larger than the limit: no push, no list, only a count.
    let c = s.join("big", "c", "e2", add).await.expect("join");
    assert_eq!(
        (c.added, nth(c.seq), c.members, c.users.len()),
        (false, 2, 3, 0)
    );
    assert_eq!(
        s.member("big", "c").await.expect("member").as_deref(),
        Some("e2")
    );
    // Idempotent re-join above the limit: still no list.
    let again = s.join("big", "c", "e2", add).await.expect("join");
    assert_eq!(
        (again.added, again.users.len(), again.members),
        (false, 0, 3)
    );
    // Leaving a room over the limit is silent too, and consumes no seq.
    assert_eq!(
        s.leave("big", "c", None, gone)
            .await
            .expect("leave")
            .map(nth),
        Some(2)
    );
    // Back at the limit: leaves are pushed again.
    assert_eq!(
        s.leave("big", "b", None, gone)
            .await
            .expect("leave")
            .map(nth),
        Some(3)
    );
    assert_eq!(
        seqs(&s, "big").await,
        [1, 2, 3],
        "two onAdd and one onLeave recorded"
    );
    // 0 = no limit.
    let s = s.with_presence(PresenceConfig { max_members: 0 });
    for uid in ["d", "e", "f"] {
        assert!(s.join("big", uid, "e1", add).await.expect("join").added);
    }
}

pub async fn session_claims_are_global_and_owned(s: Store) {
    s.register_edge(&edge("e1"), Duration::from_secs(30))
        .await
        .expect("register");
    let granted = Claim::Granted { replaced: None };
    let claim = |uid: &'static str, e: &'static str, sess: &'static str, resume| {
        let s = s.clone();
        async move { s.claim_session(uid, e, sess, resume).await.expect("claim") }
    };
    assert_eq!(claim("alice", "e1", "s1", None).await, granted);
    assert_eq!(
        claim("alice", "e1", "s1", None).await,
        granted,
        "claiming again is granted"
    );
    let taken = Claim::Taken { edge: "e1".into() };
    assert_eq!(claim("alice", "e2", "s2", None).await, taken);
    assert_eq!(
        claim("alice", "e1", "s3", None).await,
        taken,
        "another session on the same edge"
    );
    assert_eq!(
        claim("alice", "e2", "s2", Some("s9")).await,
        taken,
        "resume of another session"
    );
    assert!(
        !s.release_session("alice", "s2").await.expect("release"),
        "only the owner releases"
    );
    assert_eq!(
        s.session_edge("alice").await.expect("edge").as_deref(),
        Some("e1")
    );
    assert_eq!(
        s.session_name("alice").await.expect("name").as_deref(),
        Some("s1")
    );
    // A resume names the session it continues: it may take over a live claim.
    assert_eq!(
        claim("alice", "e1", "s4", Some("s1")).await,
        Claim::Granted {
            replaced: Some(("e1".into(), "s1".into()))
        }
    );
    assert_eq!(s.edge_session_uids("e1").await.expect("index"), ["alice"]);
    // A claim held through an edge without a lease is taken over.
    s.unregister_edge("e1").await.expect("unregister");
    assert_eq!(
        claim("alice", "e2", "s2", None).await,
        Claim::Granted {
            replaced: Some(("e1".into(), "s4".into()))
        }
    );
    assert!(
        s.edge_session_uids("e1").await.expect("index").is_empty(),
        "old index updated"
    );
    assert_eq!(s.edge_session_uids("e2").await.expect("index"), ["alice"]);
    assert!(s.release_session("alice", "s2").await.expect("release"));
    assert_eq!(s.session_edge("alice").await.expect("edge"), None);
    assert_eq!(s.session_name("alice").await.expect("name"), None);
    assert!(s.edge_session_uids("e2").await.expect("index").is_empty());
    assert!(
        !s.release_session("alice", "s2").await.expect("release"),
        "released once"
    );
}

pub async fn release_of_edge_only_frees_that_edges_claims(s: Store) {
    s.register_edge(&edge("e1"), Duration::from_secs(30))
        .await
        .expect("register");
    s.register_edge(&edge("e2"), Duration::from_secs(30))
        .await
        .expect("register");
    s.claim_session("alice", "e1", "s1", None)
        .await
        .expect("claim");
    s.claim_session("bob", "e2", "s2", None)
        .await
        .expect("claim");
    assert!(!s
        .release_session_of_edge("alice", "e2")
        .await
        .expect("release"));
    assert!(s
        .release_session_of_edge("alice", "e1")
        .await
        .expect("release"));
    assert!(!s
        .release_session_of_edge("alice", "e1")
        .await
        .expect("release"));
    assert_eq!(s.session_edge("alice").await.expect("edge"), None);
    assert_eq!(
        s.session_edge("bob").await.expect("edge").as_deref(),
        Some("e2")
    );
    assert!(s.edge_session_uids("e1").await.expect("index").is_empty());
}

pub async fn registry_leases_expire(s: Store) {
    let e = EdgeInfo {
        id: "e1".into(),
        addr: "127.0.0.1:7001".into(),
        region: "eu".into(),
        load: 3,
        draining: false,
        pomelo: None,
    };
    let ttl = Duration::from_millis(300);
    assert!(
        !s.register_edge(&e, ttl).await.expect("register"),
        "new lease"
    );
    assert!(
        s.register_edge(&e, ttl).await.expect("register"),
        "refresh of a live lease"
    );
    let b = BackendInfo {
        id: "b1".into(),
        addr: "127.0.0.1:9000".into(),
        routes: vec!["chat.".into(), "game.".into()],
    };
    s.register_backend(&b, ttl).await.expect("register");
    let long = BackendInfo {
        id: "b2".into(),
        ..b.clone()
    };
    s.register_backend(&long, Duration::from_secs(30))
        .await
        .expect("register");
    assert_eq!(s.list_edges().await.expect("edges"), vec![e.clone()]);
    assert!(s.edge_alive("e1").await.expect("alive"));
    assert_eq!(
        s.list_backends().await.expect("backends"),
        vec![b, long.clone()]
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(s.list_edges().await.expect("edges").is_empty());
    assert!(!s.edge_alive("e1").await.expect("alive"));
    assert_eq!(
        s.edge_ids().await.expect("ids"),
        ["e1"],
        "a dead edge stays until reaped"
    );
    assert_eq!(s.list_backends().await.expect("backends"), vec![long]);
    assert!(
        !s.register_edge(&e, ttl).await.expect("register"),
        "an expired lease is new again"
    );
    s.unregister_edge("e1").await.expect("unregister");
    s.unregister_backend("b2").await.expect("unregister");
    assert!(s.edge_ids().await.expect("ids").is_empty());
    assert!(s.list_backends().await.expect("backends").is_empty());
}

pub async fn reaper_lock_is_exclusive(s: Store) {
    let ttl = Duration::from_millis(300);
    assert!(s.lock_reaper("dead", "a", ttl).await.expect("lock"));
    assert!(!s.lock_reaper("dead", "b", ttl).await.expect("lock"));
    assert!(
        !s.lock_reaper("dead", "a", ttl).await.expect("lock"),
        "not reentrant"
    );
    assert!(
        s.lock_reaper("other", "b", ttl).await.expect("lock"),
        "one lock per edge"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.lock_reaper("dead", "b", ttl).await.expect("lock"),
        "a crashed reaper's lock expires"
    );
    s.forget_edge("dead").await.expect("forget");
    assert!(
        s.lock_reaper("dead", "c", ttl).await.expect("lock"),
        "forget_edge drops the lock"
    );
}

pub async fn edge_indexes_follow_members_and_claims(s: Store) {
    s.register_edge(&edge("e1"), Duration::from_secs(30))
        .await
        .expect("register");
    s.join("b-room", "alice", "e1", None).await.expect("join");
    s.join("a-room", "alice", "e1", None).await.expect("join");
    s.join("a-room", "bob", "e1", None).await.expect("join");
    s.join("a-room", "carol", "e2", None).await.expect("join");
    s.claim_session("alice", "e1", "s1", None)
        .await
        .expect("claim");
    s.claim_session("bob", "e1", "s2", None)
        .await
        .expect("claim");
    let mut rooms = s.edge_room_ids("e1").await.expect("index");
    rooms.sort();
    assert_eq!(rooms, ["a-room", "b-room"]);
    let mut uids = s.edge_session_uids("e1").await.expect("index");
    uids.sort();
    assert_eq!(uids, ["alice", "bob"]);
    let mut group = s.group("a-room", "e1").await.expect("group");
    group.sort();
    assert_eq!(group, ["alice", "bob"]);
    s.leave("b-room", "alice", None, None).await.expect("leave");
    assert_eq!(s.edge_room_ids("e1").await.expect("index"), ["a-room"]);
    s.leave("a-room", "alice", None, None).await.expect("leave");
    assert_eq!(
        s.edge_room_ids("e1").await.expect("index"),
        ["a-room"],
        "bob is still there"
    );
    // The edge dies; a reaper cleans up through the indexes, then forgets the edge.
    s.unregister_edge("e1").await.expect("unregister");
    s.register_edge(&edge("e1"), Duration::from_secs(30))
        .await
        .expect("register");
    s.forget_edge("e1").await.expect("forget");
    assert!(s.edge_room_ids("e1").await.expect("index").is_empty());
    assert!(s.edge_session_uids("e1").await.expect("index").is_empty());
    assert!(!s.edge_ids().await.expect("ids").contains(&"e1".to_string()));
    assert_eq!(
        s.edge_room_ids("e2").await.expect("index"),
        ["a-room"],
        "other edges untouched"
    );
}

pub async fn bus_delivers_a_room_only_after_a_confirmed_subscription(s: Store) {
    let mut sub = s.subscribe_edge("e1", &[]).await.expect("subscribe");
    sub.control.ping().await.expect("ping");
    s.publish_room("lobby", "onChat", b"before", None, None)
        .await
        .expect("publish");
    sub.control
        .subscribe_room("lobby")
        .await
        .expect("subscribe room");
    s.publish_room("lobby", "onChat", b"after", None, None)
        .await
        .expect("publish");
    assert_eq!(
        next(&mut sub.payloads, WAIT).await,
        Some((2, room("lobby", "onChat", b"after"))),
        "only pushes after the confirmed subscription"
    );
    // The edge's own channel and the broadcast channel come with every subscription.
    let drain = BusMessage::Drain {
        reason: "test".into(),
    };
    assert_eq!(s.publish_to_edge("e1", &drain).await.expect("publish"), 1);
    assert_eq!(next(&mut sub.payloads, WAIT).await, Some((0, drain)));
    assert_eq!(
        s.publish_to_edge("e7", &BusMessage::Drain { reason: "x".into() })
            .await
            .expect("publish"),
        0
    );
    s.broadcast("onNews", b"all").await.expect("broadcast");
    let news = BusMessage::Broadcast {
        route: "onNews".into(),
        body: b"all".to_vec(),
    };
    assert_eq!(next(&mut sub.payloads, WAIT).await, Some((0, news)));
    // Rooms named at subscribe time are confirmed too.
    let mut sub2 = s
        .subscribe_edge("e2", &["lobby".into()])
        .await
        .expect("subscribe");
    let seq = s
        .publish_room("lobby", "onChat", b"both", None, None)
        .await
        .expect("publish");
    for p in [&mut sub.payloads, &mut sub2.payloads] {
        assert_eq!(next(p, WAIT).await.map(|m| m.0), Some(nth(seq)));
    }
}

/// Not in [`conformance_tests!`] (it needs a small queue): `s` must open subscriptions whose
/// queue holds `bound` payloads (`with_bus_queue_len` on either engine). A subscriber that stops
/// reading while 4 × `bound` pushes are published keeps exactly `bound` of them, the oldest, in
/// order; the rest are dropped and counted rather than buffered; once drained it receives new
/// pushes in order again.
pub async fn a_slow_subscriber_loses_payloads_not_memory(s: Store, bound: usize) {
    let mut sub = s
        .subscribe_edge("e1", &["lobby".into()])
        .await
        .expect("subscribe");
    let published = 4 * bound as u64;
    for i in 0..published {
        s.publish_room("lobby", "onChat", i.to_string().as_bytes(), None, None)
            .await
            .expect("publish");
    }
    // Every push has reached the queue once the counter says so (the Redis engine forwards
    // them from its connection asynchronously); wait for that, however slow the machine.
    let dropped = published - bound as u64;
    let deadline = tokio::time::Instant::now() + 4 * WAIT;
    while sub.control.dropped() < dropped {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dropped {} of {published} pushes, expected {dropped}",
            sub.control.dropped()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What is queued is all there is: no other buffer holds the dropped pushes.
    let mut got = Vec::new();
    while let Some(Some(p)) = sub.payloads.next().now_or_never() {
        let (seq, msg) = bus::decode(&p).expect("decodable payload");
        assert_eq!(
            msg,
            room("lobby", "onChat", (nth(seq) - 1).to_string().as_bytes())
        );
        got.push(nth(seq));
    }
    assert_eq!(
        got,
        (1..=bound as u64).collect::<Vec<_>>(),
        "the queue keeps the oldest pushes, in order"
    );
    assert_eq!(
        next(&mut sub.payloads, QUIET).await,
        None,
        "nothing beyond the bound"
    );
    assert_eq!(
        sub.control.dropped(),
        dropped,
        "every overflow counted once"
    );
    // Drained: new pushes arrive again, in order, the gap visible in their seqs.
    for i in 0..3 {
        let body = format!("again {i}");
        s.publish_room("lobby", "onChat", body.as_bytes(), None, None)
            .await
            .expect("publish");
    }
    for i in 0..3 {
        let body = format!("again {i}");
        assert_eq!(
            next(&mut sub.payloads, WAIT).await,
            Some((published + 1 + i, room("lobby", "onChat", body.as_bytes())))
        );
    }
    assert_eq!(sub.control.dropped(), dropped);
    sub.control
        .ping()
        .await
        .expect("the subscription is still live");
}

pub async fn unsubscribe_stops_room_delivery(s: Store) {
    let mut sub = s
        .subscribe_edge("e1", &["lobby".into(), "hall".into()])
        .await
        .expect("subscribe");
    sub.control
        .unsubscribe_room("lobby")
        .await
        .expect("unsubscribe");
    s.publish_room("lobby", "onChat", b"gone", None, None)
        .await
        .expect("publish");
    s.publish_room("hall", "onChat", b"kept", None, None)
        .await
        .expect("publish");
    // Payloads of one subscription arrive in publish order: the first one is the hall's.
    assert_eq!(
        next(&mut sub.payloads, WAIT).await,
        Some((1, room("hall", "onChat", b"kept")))
    );
    assert_eq!(next(&mut sub.payloads, QUIET).await, None);
    sub.control.ping().await.expect("still alive");
}

pub async fn push_to_uids_groups_by_edge_and_reports_missing(s: Store) {
    let mut e1 = s.subscribe_edge("e1", &[]).await.expect("subscribe");
    let mut e2 = s.subscribe_edge("e2", &[]).await.expect("subscribe");
    s.register_edge(&edge("e1"), Duration::from_secs(30))
        .await
        .expect("register");
    s.register_edge(&edge("e2"), Duration::from_secs(30))
        .await
        .expect("register");
    s.claim_session("alice", "e1", "s1", None)
        .await
        .expect("claim");
    s.claim_session("bob", "e1", "s2", None)
        .await
        .expect("claim");
    s.claim_session("carol", "e2", "s3", None)
        .await
        .expect("claim");
    let uids = ["ghost", "alice", "bob", "carol", "nobody"].map(String::from);
    let missing = s.push_to_uids(&uids, "onX", b"1").await.expect("push");
    assert_eq!(missing, ["ghost", "nobody"]);
    assert!(s
        .push_to_uids(&[], "onX", b"1")
        .await
        .expect("push")
        .is_empty());
    let Some((
        0,
        BusMessage::Users {
            mut uids,
            route,
            body,
        },
    )) = next(&mut e1.payloads, WAIT).await
    else {
        panic!("expected one Users push on e1");
    };
    uids.sort();
    assert_eq!(
        (uids, route, body),
        (
            vec!["alice".into(), "bob".into()],
            "onX".into(),
            b"1".to_vec()
        )
    );
    assert_eq!(
        next(&mut e1.payloads, QUIET).await,
        None,
        "one publish per edge"
    );
    let got = next(&mut e2.payloads, WAIT).await.expect("a push on e2");
    assert_eq!(
        got,
        (
            0,
            BusMessage::Users {
                uids: vec!["carol".into()],
                route: "onX".into(),
                body: b"1".to_vec()
            }
        )
    );
}

pub async fn destroy_removes_everything_and_tells_edges(s: Store) {
    let mut sub = s
        .subscribe_edge("e1", &["lobby".into()])
        .await
        .expect("subscribe");
    s.join("lobby", "alice", "e1", None).await.expect("join");
    s.join("lobby", "bob", "e2", None).await.expect("join");
    s.join("hall", "bob", "e2", None).await.expect("join");
    let base = s.room_seq("lobby").await.expect("seq");
    assert_eq!(nth(base), 0, "a join without a push takes no seq");
    assert_eq!(s.destroy("lobby").await.expect("destroy"), 2);
    assert!(s.members("lobby").await.expect("members").is_empty());
    assert!(s
        .members_by_edge("lobby")
        .await
        .expect("by edge")
        .is_empty());
    assert!(s.group("lobby", "e1").await.expect("group").is_empty());
    assert_eq!(s.rooms().await.expect("rooms"), ["hall"]);
    assert!(s.edge_room_ids("e1").await.expect("index").is_empty());
    assert_eq!(s.edge_room_ids("e2").await.expect("index"), ["hall"]);
    assert_eq!(
        next(&mut sub.payloads, WAIT).await,
        Some((
            1,
            BusMessage::RoomDestroyed {
                rid: "lobby".into()
            }
        ))
    );
    // The numbering goes on if the room is used again.
    let j = s
        .join("lobby", "alice", "e1", Some(("onAdd", b"{}")))
        .await
        .expect("join");
    assert_eq!((j.seq, j.members), (base + 2, 1));
    assert_eq!(s.destroy("empty").await.expect("destroy"), 0);
}

pub async fn hostile_ids_stay_apart(s: Store) {
    s.join("lobby", "alice", "e1", Some(("onAdd", b"{}")))
        .await
        .expect("join");
    let evil_room = "lobby}:members {x";
    let evil_user = "bob' .. redis.call('FLUSHALL') .. '\"*";
    s.join(evil_room, evil_user, "e1", None)
        .await
        .expect("join");
    s.publish_room(evil_room, "onChat", b"x", Some(evil_user), Some("a:b*"))
        .await
        .expect("publish");
    assert_eq!(s.members("lobby").await.expect("members"), ["alice"]);
    assert_eq!(nth(s.room_seq("lobby").await.expect("seq")), 1);
    assert_eq!(s.members(evil_room).await.expect("members"), [evil_user]);
    assert_eq!(s.rooms().await.expect("rooms"), ["lobby", evil_room]);
    // Ids that escape to the same-looking text stay distinct.
    s.join("a:b", "u", "e1", None).await.expect("join");
    assert!(s.members("a%3Ab").await.expect("members").is_empty());
    // Non-ASCII ids round-trip.
    s.join("salón ☕", "zoë", "e1", None).await.expect("join");
    assert_eq!(s.members("salón ☕").await.expect("members"), ["zoë"]);
    s.claim_session("zoë", "e1", "s", None)
        .await
        .expect("claim");
    assert_eq!(
        s.session_edge("zoë").await.expect("edge").as_deref(),
        Some("e1")
    );
}

pub async fn settings_are_written_once_and_checked(s: Store) {
    let first = Settings::default();
    s.check_settings(&first)
        .await
        .expect("the first process writes its settings");
    s.check_settings(&first)
        .await
        .expect("the same settings pass");
    let other = Settings {
        history: HistoryConfig {
            max_len: 5,
            ..first.history
        },
        ..first
    };
    let err = s
        .check_settings(&other)
        .await
        .expect_err("a different history length");
    match &err {
        StoreError::SettingsMismatch { name, ours, stored } => {
            assert_eq!(
                (name.as_str(), ours.as_str(), stored.as_str()),
                ("history_len", "5", "1000")
            );
        }
        e => panic!("expected a settings mismatch, got {e}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("history_len") && text.contains('5') && text.contains("1000"),
        "{text}"
    );
    let ascii = Settings {
        ids: IdRules {
            ascii_only: true,
            ..first.ids
        },
        ..first
    };
    let err = s
        .check_settings(&ascii)
        .await
        .expect_err("different id rules");
    assert!(
        matches!(err, StoreError::SettingsMismatch { ref name, .. } if name == "ascii_ids"),
        "{err}"
    );
    let presence = Settings {
        presence: PresenceConfig { max_members: 7 },
        ..first
    };
    let err = s
        .check_settings(&presence)
        .await
        .expect_err("a different presence limit");
    assert!(
        matches!(err, StoreError::SettingsMismatch { ref name, .. } if name == "presence_max_members"),
        "{err}"
    );
    // The mismatching processes wrote nothing: the first values still hold.
    s.check_settings(&first)
        .await
        .expect("still the first settings");
}

/// The store loses everything (Redis restarted empty): nothing is numbered until edges could
/// write back what they own, and the new numbering starts above the old one, so no seq a client
/// saw is handed out again.
pub async fn a_reset_store_never_reuses_a_seq(s: Store) {
    let add = Some(("onAdd", &b"{}"[..]));
    let fresh = s.generation().await.expect("generation");
    assert!(!fresh.recovering, "a new store is not recovering");
    s.join("lobby", "alice", "e1", add).await.expect("join");
    for i in 0..4 {
        s.publish_room(
            "lobby",
            "onChat",
            b"{}",
            Some("alice"),
            Some(&format!("k{i}")),
        )
        .await
        .expect("publish");
    }
    let old = s.room_seq("lobby").await.expect("seq");
    assert_eq!(nth(old), 5);

    // A numbering outlives its pushes by a millisecond per 2048 (`crate::seq_start`); a store
    // reset faster than that is only possible in a test.
    tokio::time::sleep(Duration::from_millis(2)).await;
    s.forget_everything().await.expect("forget");
    // Ordinary writes are refused with a distinct error, never "not a member".
    let refused = |r: crate::Result<_>| matches!(r, Err(StoreError::Recovering));
    assert!(refused(s.join("lobby", "bob", "e2", add).await.map(|_| ())));
    assert!(refused(
        s.publish_room("lobby", "onChat", b"{}", Some("alice"), None)
            .await
            .map(|_| ())
    ));
    assert!(refused(
        s.publish_to_member("lobby", Some("alice"), "bob", "onChat", b"{}")
            .await
    ));
    assert!(refused(s.destroy("lobby").await.map(|_| ())));
    // A resuming client's join that would push onAdd is refused too.
    assert!(refused(
        s.join_with("lobby", "carol", "e2", add, true, old - 2)
            .await
            .map(|_| ())
    ));
    let after = s.generation().await.expect("generation");
    assert!(after.recovering, "the reset opened the recovery window");
    assert_ne!(after.id, fresh.id, "a reset starts a new generation");
    // The edge's re-registration (silent) is accepted, and so are claims. It carries no floor
    // here: the new numbering starts above the old one by itself, so no seq is reused even
    // when no edge could write back what its clients saw (restarts in quick succession, a
    // paused edge).
    let j = s
        .join_with("lobby", "alice", "e1", None, true, 0)
        .await
        .expect("re-registration is accepted while recovering");
    assert!(!j.added);
    assert!(j.seq > old, "{} > {old}", j.seq);
    assert_eq!(nth(j.seq), 0);
    assert!(matches!(
        s.claim_session("alice", "e1", "s1", Some("s1"))
            .await
            .expect("claim"),
        Claim::Granted { .. }
    ));
    // A leave that would push is refused; the member stays.
    assert!(refused(
        s.leave("lobby", "alice", Some("e1"), Some(("onLeave", &b"{}"[..])))
            .await
            .map(|_| ())
    ));
    assert_eq!(s.members("lobby").await.expect("members"), ["alice"]);

    // The window closes by itself; numbering continues above what clients saw.
    let deadline = std::time::Instant::now() + RECOVERY_WINDOW + Duration::from_secs(10);
    while s.generation().await.expect("generation").recovering {
        assert!(
            std::time::Instant::now() < deadline,
            "recovery window never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = s.join("lobby", "bob", "e2", add).await.expect("join");
    assert!(j.added);
    assert!(j.seq > old);
    let seq = s
        .publish_room("lobby", "onChat", b"{}", Some("alice"), None)
        .await
        .expect("publish");
    assert_eq!(seq, j.seq + 1);
}

/// An edge paused past its lease: its writes still in flight are refused (fenced) once the
/// lease is gone, and stay refused after it registers again (a new token); a reaper's leave
/// does nothing once the edge is alive again.
pub async fn a_lost_lease_fences_the_edges_writes(s: Store) {
    let add = Some(("onAdd", &b"{}"[..]));
    let fenced = |r: crate::Result<()>| matches!(r, Err(StoreError::Fenced));
    let fence = Arc::new(Fence::new("e1"));
    let e1 = s.clone().with_fence(fence.clone());
    // No token before the first registration.
    assert!(fenced(
        e1.join("lobby", "alice", "e1", add).await.map(|_| ())
    ));
    let short = Duration::from_millis(300);
    let (existed, t1) = e1
        .register_edge_fenced(&edge("e1"), short)
        .await
        .expect("register");
    assert!(!existed);
    fence.set(t1.clone());
    e1.join("lobby", "alice", "e1", add)
        .await
        .expect("join with the token");
    assert!(matches!(
        e1.claim_session("alice", "e1", "s1", None)
            .await
            .expect("claim"),
        Claim::Granted { .. }
    ));
    // A refresh keeps the token.
    let (existed, again) = e1
        .register_edge_fenced(&edge("e1"), short)
        .await
        .expect("refresh");
    assert!(existed);
    assert_eq!(again, t1);

    // Paused: the lease expires.
    let deadline = std::time::Instant::now() + WAIT;
    while s.edge_alive("e1").await.expect("alive") {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fenced(e1.join("lobby", "bob", "e1", add).await.map(|_| ())));
    assert!(fenced(
        e1.claim_session("bob", "e1", "s2", None).await.map(|_| ())
    ));
    // Registered again: a new token; writes carrying the old one stay refused.
    let (existed, t2) = e1
        .register_edge_fenced(&edge("e1"), WAIT)
        .await
        .expect("register");
    assert!(!existed);
    assert_ne!(t2, t1, "a lease written anew gets a new token");
    let stale_fence = Arc::new(Fence::new("e1"));
    stale_fence.set(t1);
    let stale = s.clone().with_fence(stale_fence);
    assert!(fenced(
        stale.join("lobby", "bob", "e1", add).await.map(|_| ())
    ));
    fence.set(t2);
    e1.join("lobby", "bob", "e1", add)
        .await
        .expect("join with the new token");
    assert_eq!(s.members("lobby").await.expect("members"), ["alice", "bob"]);

    // Another edge's reaper (started while e1 was dead) leaves e1's members alone now.
    let reaper = s.clone().with_fence(Arc::new(Fence::new("e2")));
    let gone = reaper
        .leave("lobby", "alice", Some("e1"), Some(("onLeave", &b"{}"[..])))
        .await
        .expect("leave");
    assert_eq!(gone, None, "a reap of a live edge does nothing");
    assert_eq!(s.members("lobby").await.expect("members"), ["alice", "bob"]);
    // Unfenced handles (backends, tools) are not checked.
    s.join("lobby", "carol", "e9", add)
        .await
        .expect("unfenced join");
}
