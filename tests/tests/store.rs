//! The Redis engine against a real redis-server: the state a person sees in redis-cli after
//! each operation (key names, types, TTLs), the raw pub/sub channels, and hostile ids in key
//! names. What every engine must do is in the conformance suite (`store_conformance.rs`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use roomcast_e2e::redis_server::RedisServer;
use roomcast_protocol::bus::{self, BusMessage};
use roomcast_store::keys::Keys;
use roomcast_store::{BackendInfo, Claim, EdgeInfo, Store, StoreError};

async fn setup() -> (RedisServer, Store, redis::aio::MultiplexedConnection) {
    let r = RedisServer::start().expect("redis-server");
    let store = Store::connect(&r.url(), Keys::default()).await.unwrap();
    let conn = redis::Client::open(r.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (r, store, conn)
}

fn set(v: &[&str]) -> HashSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn join_and_leave_keep_records_and_groups_consistent() {
    let (_r, s, mut c) = setup().await;
    let j = s
        .join("lobby", "alice", "e1", Some(("onAdd", b"{}")))
        .await
        .unwrap();
    assert_eq!(
        (j.added, j.users.clone()),
        (true, vec!["alice".to_string()])
    );
    // A new room's numbering starts at the millisecond it began (see `seq_start`).
    let base = j.seq - 1;
    assert_eq!(base % (1 << roomcast_store::SEQ_COUNTER_BITS), 0);
    let began = roomcast_store::seq_start(roomcast_store::now_ms());
    assert!(base <= began && began - base < 60_000 << roomcast_store::SEQ_COUNTER_BITS);
    // Idempotent: same edge again changes nothing.
    let again = s
        .join("lobby", "alice", "e1", Some(("onAdd", b"{}")))
        .await
        .unwrap();
    assert_eq!((again.seq, again.added), (base + 1, false));
    let j = s
        .join("lobby", "bob", "e2", Some(("onAdd", b"{}")))
        .await
        .unwrap();
    assert_eq!(j.seq, base + 2);
    assert_eq!(j.users, vec!["alice", "bob"]);

    let members: HashMap<String, String> = c.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(members.get("alice").map(String::as_str), Some("e1"));
    assert_eq!(members.get("bob").map(String::as_str), Some("e2"));
    let edges: HashSet<String> = c.smembers("rc:room:{lobby}:edges").await.unwrap();
    assert_eq!(edges, set(&["e1", "e2"]));
    let g1: HashSet<String> = c.smembers("rc:room:{lobby}:edge:e1").await.unwrap();
    assert_eq!(g1, set(&["alice"]));
    let rooms: HashSet<String> = c.smembers("rc:rooms").await.unwrap();
    assert_eq!(rooms, set(&["lobby"]));
    assert_eq!(
        s.member("lobby", "bob").await.unwrap().as_deref(),
        Some("e2")
    );
    let by_edge = s.members_by_edge("lobby").await.unwrap();
    assert_eq!(by_edge["e1"], vec!["alice"]);

    // An edge cannot remove a member registered through another edge.
    assert_eq!(
        s.leave("lobby", "bob", Some("e1"), Some(("onLeave", b"{}")))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.leave("lobby", "bob", Some("e2"), Some(("onLeave", b"{}")))
            .await
            .unwrap(),
        Some(base + 3)
    );
    let edges: HashSet<String> = c.smembers("rc:room:{lobby}:edges").await.unwrap();
    assert_eq!(edges, set(&["e1"]));
    let exists: bool = c.exists("rc:room:{lobby}:edge:e2").await.unwrap();
    assert!(!exists, "empty group must be removed");
    assert_eq!(s.leave("lobby", "nobody", None, None).await.unwrap(), None);

    assert_eq!(
        s.leave("lobby", "alice", None, Some(("onLeave", b"{}")))
            .await
            .unwrap(),
        Some(base + 4)
    );
    let rooms: HashSet<String> = c.smembers("rc:rooms").await.unwrap();
    assert!(rooms.is_empty(), "an empty room leaves the index");
    let ttl: i64 = c.ttl("rc:room:{lobby}:seq").await.unwrap();
    assert!(ttl > 0, "the seq of an empty room expires, got ttl {ttl}");
    // Re-joining continues the numbering and clears the expiry.
    let j = s
        .join("lobby", "carol", "e1", Some(("onAdd", b"{}")))
        .await
        .unwrap();
    assert_eq!(j.seq, base + 5);
    let ttl: i64 = c.ttl("rc:room:{lobby}:seq").await.unwrap();
    assert_eq!(ttl, -1);
}

/// A backend's push to a room nobody is in numbers it, and that seq expires as an emptied
/// room's does (it once stayed forever: one key per such room).
#[tokio::test]
async fn room_scripts_are_loaded_again_after_redis_forgets_them() {
    // A restarted Redis (or SCRIPT FLUSH) answers NOSCRIPT to the first call of each script.
    let (_r, s, mut c) = setup().await;
    s.join("lobby", "alice", "e1", None).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let j = s.join("lobby", "bob", "e1", None).await.unwrap();
    assert_eq!(j.users, vec!["alice", "bob"]);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let seq = s
        .publish_room("lobby", "onChat", b"{}", Some("alice"), None)
        .await
        .unwrap();
    assert_eq!(seq, j.seq + 1);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(s.leave("lobby", "bob", None, None).await.unwrap().is_some());
}

#[tokio::test]
async fn a_push_to_an_empty_room_leaves_a_seq_that_expires() {
    let (_r, s, mut c) = setup().await;
    s.publish_room("nobody-here", "onChat", b"x", None, None)
        .await
        .unwrap();
    let ttl: i64 = c.ttl("rc:room:{nobody-here}:seq").await.unwrap();
    assert!(
        ttl > 0,
        "the seq of a room without members expires, got ttl {ttl}"
    );
    // Once somebody is in it, the seq stays.
    s.join("nobody-here", "alice", "e1", None).await.unwrap();
    let ttl: i64 = c.ttl("rc:room:{nobody-here}:seq").await.unwrap();
    assert_eq!(ttl, -1);
}

/// A seq key that is gone (expired after 24 h empty, or lost with the data) starts a numbering
/// above the old one: the store needs no one to remember a floor.
#[tokio::test]
async fn a_lost_seq_key_starts_a_numbering_above_the_old_one() {
    let (_r, s, mut c) = setup().await;
    s.join("lobby", "alice", "e1", None).await.unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let seq = s
            .publish_room("lobby", "onChat", b"x", Some("alice"), None)
            .await
            .unwrap();
        assert!(seq > last, "{seq} after {last}");
        last = seq;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let _: () = c.del("rc:room:{lobby}:seq").await.unwrap();
    }
}

#[tokio::test]
async fn pushes_carry_gapless_room_sequence_numbers() {
    let (r, s, _c) = setup().await;
    let mut pubsub = redis::Client::open(r.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe("rc:room:{lobby}:push").await.unwrap();
    let first = s
        .join(
            "lobby",
            "alice",
            "e1",
            Some(("onAdd", b"{\"user\":\"alice\"}")),
        )
        .await
        .unwrap()
        .seq;
    let seq = s
        .publish_room("lobby", "onChat", b"hello", Some("alice"), None)
        .await
        .unwrap();
    assert_eq!(seq, first + 1);
    let mut stream = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap();
        got.push(bus::decode(msg.get_payload_bytes()).unwrap());
    }
    assert_eq!(
        got,
        vec![
            (
                first,
                BusMessage::Room {
                    rid: "lobby".into(),
                    route: "onAdd".into(),
                    body: b"{\"user\":\"alice\"}".to_vec()
                }
            ),
            (
                first + 1,
                BusMessage::Room {
                    rid: "lobby".into(),
                    route: "onChat".into(),
                    body: b"hello".to_vec()
                }
            ),
        ]
    );
}

#[tokio::test]
async fn dedupe_markers_and_presence_limits_are_visible_keys() {
    let (_r, s, mut c) = setup().await;
    s.join("lobby", "alice", "e1", None).await.unwrap();
    let a = s
        .publish_room("lobby", "onChat", b"x", Some("alice"), Some("sess/7"))
        .await
        .unwrap();
    let marker: u64 = c.get("rc:room:{lobby}:req:sess%2F7").await.unwrap();
    assert_eq!(marker, a);
    let ttl: i64 = c.ttl("rc:room:{lobby}:req:sess%2F7").await.unwrap();
    assert!(ttl > 0 && ttl <= 300, "dedupe marker ttl {ttl}");
    let seq: u64 = c.get("rc:room:{lobby}:seq").await.unwrap();
    assert_eq!(seq, a);

    let s = s.with_presence(roomcast_store::PresenceConfig { max_members: 1 });
    s.join("big", "a", "e1", Some(("onAdd", &b"{}"[..])))
        .await
        .unwrap();
    s.join("big", "b", "e1", Some(("onAdd", &b"{}"[..])))
        .await
        .unwrap();
    let history: u64 = c.zcard("rc:room:{big}:history").await.unwrap();
    assert_eq!(history, 1, "only the first onAdd recorded");
}

#[tokio::test]
async fn settings_are_a_readable_hash() {
    let (_r, s, mut c) = setup().await;
    s.check_settings(&roomcast_store::Settings::default())
        .await
        .unwrap();
    let h: HashMap<String, String> = c.hgetall("rc:settings").await.unwrap();
    assert_eq!(h["history_len"], "1000");
    assert_eq!(h["history_age_ms"], "300000");
    assert_eq!(h["presence_max_members"], "1000");
    assert_eq!(h["max_id_bytes"], "128");
    assert_eq!(h["ascii_ids"], "0");
    // An operator can change a setting with redis-cli; processes started afterwards check it.
    let _: () = c.hset("rc:settings", "history_len", "5").await.unwrap();
    let err = s
        .check_settings(&roomcast_store::Settings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SettingsMismatch { .. }), "{err}");
}

#[tokio::test]
async fn hostile_ids_stay_in_their_own_keys() {
    let (_r, s, mut c) = setup().await;
    let first = s
        .join("lobby", "alice", "e1", Some(("onAdd", b"{}")))
        .await
        .unwrap()
        .seq;
    let evil_room = "lobby}:members {x";
    let evil_user = "bob' .. redis.call('FLUSHALL') .. '\"*";
    s.join(evil_room, evil_user, "e1", None).await.unwrap();
    s.publish_room(evil_room, "onChat", b"x", Some(evil_user), None)
        .await
        .unwrap();
    // The real lobby is untouched.
    assert_eq!(s.members("lobby").await.unwrap(), vec!["alice"]);
    assert_eq!(s.room_seq("lobby").await.unwrap(), first);
    assert_eq!(s.members(evil_room).await.unwrap(), vec![evil_user]);
    let key = Keys::default().room_members(evil_room);
    assert_eq!(key, "rc:room:{lobby%7D%3Amembers%20%7Bx}:members");
    let n: usize = c.hlen(&key).await.unwrap();
    assert_eq!(n, 1);
    let rooms: HashSet<String> = c.smembers("rc:rooms").await.unwrap();
    assert_eq!(rooms, set(&["lobby", evil_room]));
    // Non-ASCII ids round-trip.
    s.join("salón ☕", "zoë", "e1", None).await.unwrap();
    assert_eq!(s.members("salón ☕").await.unwrap(), vec!["zoë"]);
}

#[tokio::test]
async fn session_claims_are_global_and_owned() {
    let (_r, s, mut c) = setup().await;
    let edge = |id: &str| EdgeInfo {
        id: id.into(),
        addr: "127.0.0.1:1".into(),
        region: "r".into(),
        load: 0,
        draining: false,
        pomelo: None,
    };
    s.register_edge(&edge("e1"), Duration::from_secs(30))
        .await
        .unwrap();
    let granted = Claim::Granted { replaced: None };
    assert_eq!(
        s.claim_session("alice", "e1", "s1", None).await.unwrap(),
        granted
    );
    assert_eq!(
        s.claim_session("alice", "e1", "s1", None).await.unwrap(),
        granted
    );
    assert_eq!(
        s.claim_session("alice", "e2", "s2", None).await.unwrap(),
        Claim::Taken { edge: "e1".into() }
    );
    assert_eq!(
        s.claim_session("alice", "e1", "s3", None).await.unwrap(),
        Claim::Taken { edge: "e1".into() }
    );
    assert!(!s.release_session("alice", "s2").await.unwrap());
    assert_eq!(
        s.session_edge("alice").await.unwrap().as_deref(),
        Some("e1")
    );
    // A resume names the session it continues: it may take over a live claim.
    assert_eq!(
        s.claim_session("alice", "e1", "s4", Some("s1"))
            .await
            .unwrap(),
        Claim::Granted {
            replaced: Some(("e1".into(), "s1".into()))
        }
    );
    let holders: HashSet<String> = c.smembers("rc:edge:e1:sessions").await.unwrap();
    assert_eq!(holders, set(&["alice"]));
    // A claim held by an edge that is no longer registered is taken over.
    s.unregister_edge("e1").await.unwrap();
    assert_eq!(
        s.claim_session("alice", "e2", "s2", None).await.unwrap(),
        Claim::Granted {
            replaced: Some(("e1".into(), "s4".into()))
        }
    );
    let holders: HashSet<String> = c.smembers("rc:edge:e1:sessions").await.unwrap();
    assert!(
        holders.is_empty(),
        "the old edge's session index is updated"
    );
    assert!(s.release_session("alice", "s2").await.unwrap());
    assert_eq!(s.session_edge("alice").await.unwrap(), None);
}

#[tokio::test]
async fn registry_entries_expire_and_are_pruned() {
    let (_r, s, mut c) = setup().await;
    let e = EdgeInfo {
        id: "e1".into(),
        addr: "127.0.0.1:7001".into(),
        region: "eu".into(),
        load: 3,
        draining: false,
        // The Pomelo listener's address round-trips through the registry.
        pomelo: Some("127.0.0.1:3014".into()),
    };
    s.register_edge(&e, Duration::from_millis(300))
        .await
        .unwrap();
    s.register_backend(
        &BackendInfo {
            id: "b1".into(),
            addr: "127.0.0.1:9000".into(),
            routes: vec!["chat.".into()],
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(s.list_edges().await.unwrap(), vec![e]);
    let region: String = c.hget("rc:edge:e1", "region").await.unwrap();
    assert_eq!(region, "eu");
    let pomelo: String = c.hget("rc:edge:e1", "pomelo").await.unwrap();
    assert_eq!(pomelo, "127.0.0.1:3014");
    assert_eq!(s.list_backends().await.unwrap()[0].routes, vec!["chat."]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(s.list_edges().await.unwrap().is_empty());
    let ids: HashSet<String> = c.smembers("rc:edges").await.unwrap();
    assert_eq!(
        ids,
        set(&["e1"]),
        "a dead edge stays in the index until it is reaped"
    );
}

#[tokio::test]
async fn destroy_removes_everything_and_tells_edges() {
    let (r, s, mut c) = setup().await;
    let mut pubsub = redis::Client::open(r.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe("rc:room:{lobby}:push").await.unwrap();
    s.join("lobby", "alice", "e1", None).await.unwrap();
    s.join("lobby", "bob", "e2", None).await.unwrap();
    let base = s.room_seq("lobby").await.unwrap();
    assert_eq!(
        base % (1 << roomcast_store::SEQ_COUNTER_BITS),
        0,
        "a join without a push starts the numbering but takes no seq"
    );
    assert_eq!(s.destroy("lobby").await.unwrap(), 2);
    for key in [
        "rc:room:{lobby}:members",
        "rc:room:{lobby}:edges",
        "rc:room:{lobby}:edge:e1",
        "rc:room:{lobby}:edge:e2",
    ] {
        let exists: bool = c.exists(key).await.unwrap();
        assert!(!exists, "{key} survived destroy");
    }
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bus::decode(msg.get_payload_bytes()).unwrap(),
        (
            base + 1,
            BusMessage::RoomDestroyed {
                rid: "lobby".into()
            }
        )
    );
}

#[tokio::test]
async fn push_to_uids_groups_by_edge_and_reports_missing() {
    let (r, s, _c) = setup().await;
    let mut pubsub = redis::Client::open(r.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe("rc:edge:e1:push").await.unwrap();
    s.register_edge(
        &EdgeInfo {
            id: "e1".into(),
            addr: "x:1".into(),
            region: "r".into(),
            load: 0,
            draining: false,
            pomelo: None,
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    s.claim_session("alice", "e1", "s1", None).await.unwrap();
    s.claim_session("bob", "e1", "s2", None).await.unwrap();
    let missing = s
        .push_to_uids(&["alice".into(), "bob".into(), "ghost".into()], "onX", b"1")
        .await
        .unwrap();
    assert_eq!(missing, vec!["ghost"]);
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let (_, m) = bus::decode(msg.get_payload_bytes()).unwrap();
    let BusMessage::Users { mut uids, .. } = m else {
        panic!("expected Users, got {m:?}");
    };
    uids.sort();
    assert_eq!(
        uids,
        vec!["alice", "bob"],
        "one publish for both uids on e1"
    );
}

#[tokio::test]
async fn history_is_a_bounded_sorted_set_with_an_expiry() {
    let r = RedisServer::start().expect("redis-server");
    let s = Store::connect(&r.url(), Keys::default())
        .await
        .unwrap()
        .with_history(roomcast_store::HistoryConfig {
            max_len: 5,
            max_age: Duration::from_secs(60),
        });
    let mut c = redis::Client::open(r.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut published = Vec::new();
    for i in 0..9 {
        published.push(
            s.publish_room("lobby", "onChat", format!("m{i}").as_bytes(), None, None)
                .await
                .unwrap(),
        );
    }
    let base = published[0] - 1;
    assert_eq!(published, (base + 1..=base + 9).collect::<Vec<u64>>());
    let scored: Vec<(Vec<u8>, u64)> = c
        .zrange_withscores("rc:room:{lobby}:history", 0, -1)
        .await
        .unwrap();
    let scores: Vec<u64> = scored.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        scores,
        (base + 5..=base + 9).collect::<Vec<u64>>(),
        "scored by seq, last 5 kept"
    );
    // Member = 8-byte ms timestamp + the bus payload.
    let (seq, msg) = bus::decode(&scored[4].0[8..]).unwrap();
    assert_eq!(
        (seq, msg),
        (
            base + 9,
            BusMessage::Room {
                rid: "lobby".into(),
                route: "onChat".into(),
                body: b"m8".to_vec()
            }
        )
    );
    let pttl: i64 = c.pttl("rc:room:{lobby}:history").await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "history pttl {pttl}");
    // The resume path leaves the index keys consistent.
    s.join("lobby", "alice", "e1", None).await.unwrap();
    s.join_with("lobby", "alice", "e2", None, true, 0)
        .await
        .unwrap();
    let e1: HashSet<String> = c.smembers("rc:edge:e1:rooms").await.unwrap();
    let e2: HashSet<String> = c.smembers("rc:edge:e2:rooms").await.unwrap();
    assert!(e1.is_empty());
    assert_eq!(e2, set(&["lobby"]));
}
