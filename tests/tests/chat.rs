//! The chat system end to end: real redis-server, real edge and backend processes, real QUIC.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use redis::AsyncCommands;
use roomcast_client::{ClientError, Push};
use support::{body, collect_route, next_push, Env, WAIT};

fn room_seqs(pushes: &[Push]) -> Vec<u64> {
    pushes
        .iter()
        .filter(|p| p.rid == "lobby")
        .map(|p| p.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_flow_across_two_edges_and_two_backends() {
    let env = Env::start(&["edge-a", "edge-b"], &["chat-a", "chat-b"]);
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();

    // The gate spreads users over both edges.
    let mut clients = Vec::new();
    for u in &users {
        clients.push(env.connect(u).await);
    }
    let on: HashSet<String> = clients.iter().map(|c| c.edge().to_string()).collect();
    assert_eq!(
        on,
        HashSet::from(["edge-a".into(), "edge-b".into()]),
        "gate used one edge only"
    );
    let mut rxs: Vec<_> = clients
        .iter_mut()
        .map(|c| c.pushes().expect("pushes"))
        .collect();

    // Enter returns the users so far; onAdd goes to the others, never to the joiner.
    let mut join_seq = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let entered = c.enter("lobby").await.expect("enter");
        let mut want: Vec<String> = users[..=i].to_vec();
        want.sort();
        assert_eq!(entered.users, want);
        join_seq.push(entered.seq);
    }
    let mut received: Vec<Vec<Push>> = vec![Vec::new(); users.len()];
    for (i, rx) in rxs.iter_mut().enumerate() {
        let expected_adds = users.len() - 1 - i;
        if expected_adds > 0 {
            received[i] = collect_route(rx, "onAdd", expected_adds).await;
        }
        let added: Vec<String> = received[i]
            .iter()
            .map(|p| body(p)["user"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(added, users[i + 1..].to_vec(), "onAdd seen by {}", users[i]);
    }

    // A room message reaches every member on both edges exactly once.
    let sent = clients[0]
        .send("lobby", "hello everyone")
        .await
        .expect("send");
    let msg_seq = sent.seq.expect("room messages have a seq");
    for (i, rx) in rxs.iter_mut().enumerate() {
        let got = collect_route(rx, "onChat", 1).await;
        let chat = got.last().unwrap();
        assert_eq!(chat.seq, msg_seq);
        let b = body(chat);
        assert_eq!(
            (b["msg"].as_str(), b["from"].as_str(), b["target"].as_str()),
            (Some("hello everyone"), Some("user0"), Some("*"))
        );
        received[i].extend(got);
    }

    // A private message reaches only its target (not even the sender).
    clients[1]
        .send_to("lobby", "user5", "psst")
        .await
        .expect("private send");
    let private = collect_route(&mut rxs[5], "onChat", 1).await;
    let p = private.last().unwrap();
    assert_eq!((p.rid.as_str(), p.seq), ("", 0));
    assert_eq!(body(p)["from"], "user1");
    assert_eq!(body(p)["target"], "user5");
    // Everyone's next push is the next room message: nobody else got the private one.
    let sent = clients[2].send("lobby", "after").await.expect("send");
    for (i, rx) in rxs.iter_mut().enumerate() {
        let got = collect_route(rx, "onChat", 1).await;
        assert_eq!(got.len(), 1, "{} received extra pushes: {got:?}", users[i]);
        assert_eq!(got[0].seq, sent.seq.unwrap());
        received[i].extend(got);
    }

    // Each member saw every room seq after its join exactly once, in order.
    for (i, pushes) in received.iter().enumerate() {
        let seqs = room_seqs(pushes);
        let want: Vec<u64> = (join_seq[i] + 1..=sent.seq.unwrap()).collect();
        assert_eq!(seqs, want, "room seqs seen by {}", users[i]);
    }

    // Redis holds records and groups a person can read.
    let mut r = env.redis().await;
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(members.len(), 8);
    for c in &clients {
        let uid = c.uid().to_string();
        assert_eq!(members[&uid], c.edge());
        let in_group: bool = r
            .sismember(format!("rc:room:{{lobby}}:edge:{}", c.edge()), &uid)
            .await
            .unwrap();
        assert!(in_group);
        let edge: String = r.hget(format!("rc:session:{uid}"), "edge").await.unwrap();
        assert_eq!(edge, c.edge());
    }

    // Disconnect: onLeave to the room, member gone from Redis.
    let leaver = clients.pop().unwrap();
    rxs.pop();
    let leaver_edge = leaver.edge().to_string();
    leaver.close().await;
    for (i, rx) in rxs.iter_mut().enumerate() {
        let got = collect_route(rx, "onLeave", 1).await;
        assert_eq!(
            body(got.last().unwrap())["user"],
            "user7",
            "onLeave seen by user{i}"
        );
    }
    let gone: Option<String> = r.hget("rc:room:{lobby}:members", "user7").await.unwrap();
    assert_eq!(gone, None);
    let in_group: bool = r
        .sismember(format!("rc:room:{{lobby}}:edge:{leaver_edge}"), "user7")
        .await
        .unwrap();
    assert!(!in_group);
    let session: bool = r.exists("rc:session:user7").await.unwrap();
    assert!(!session, "the uid is released at disconnect");

    // connector.leave: the same, without disconnecting.
    clients[6].leave("lobby").await.expect("leave");
    for rx in rxs.iter_mut().take(6) {
        let got = collect_route(rx, "onLeave", 1).await;
        assert_eq!(body(got.last().unwrap())["user"], "user6");
    }
    let rooms: HashSet<String> = r.smembers("rc:rooms").await.unwrap();
    assert_eq!(rooms, HashSet::from(["lobby".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_login_through_another_edge_is_refused() {
    let env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    alice.enter("lobby").await.expect("first login");

    let other_edge = env.connect_to(1, "alice").await;
    match other_edge.enter("lobby").await {
        Err(ClientError::Request { code, message }) => {
            assert_eq!(code, 409);
            assert!(message.contains("already logged in"), "{message}");
        }
        other => panic!("duplicate login through another edge was not refused: {other:?}"),
    }
    let same_edge = env.connect_to(0, "alice").await;
    let err = same_edge.enter("hall").await.unwrap_err();
    assert_eq!(err.code(), Some(409));

    // Once the first session ends, the uid is free again.
    alice.close().await;
    // Retried until a deadline (not a count), so a slow machine gets the same time.
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        match other_edge.enter("lobby").await {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "login after the first session closed was still refused: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_observe_one_order() {
    let env = Env::start(&["edge-a", "edge-b"], &["chat-a", "chat-b"]);
    const MEMBERS: usize = 6;
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 25;
    let mut clients = Vec::new();
    for i in 0..MEMBERS {
        let c = env.connect_to(i % 2, &format!("m{i}")).await;
        clients.push(c);
    }
    let mut rxs: Vec<_> = clients.iter_mut().map(|c| c.pushes().unwrap()).collect();
    for c in &clients {
        c.enter("race").await.unwrap();
    }
    let last_join: u64 = {
        let mut r = env.redis().await;
        r.get("rc:room:{race}:seq").await.unwrap()
    };
    let clients: Vec<_> = clients.into_iter().map(std::sync::Arc::new).collect();
    let mut tasks = Vec::new();
    for (s, sender) in clients.iter().take(SENDERS).enumerate() {
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..PER_SENDER {
                sender
                    .send("race", &format!("s{s}-{k}"))
                    .await
                    .unwrap_or_else(|e| panic!("sender {s} message {k}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = SENDERS * PER_SENDER;
    let mut views = Vec::new();
    for rx in rxs.iter_mut() {
        let got = collect_route(rx, "onChat", total).await;
        let view: Vec<(u64, String)> = got
            .iter()
            .filter(|p| p.route == "onChat")
            .map(|p| (p.seq, body(p)["msg"].as_str().unwrap().to_string()))
            .collect();
        views.push(view);
    }
    for v in &views[1..] {
        assert_eq!(v, &views[0], "members disagree on the order");
    }
    let seqs: Vec<u64> = views[0].iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (last_join + 1..=last_join + total as u64).collect();
    assert_eq!(seqs, want, "sequence numbers are consecutive");
    // Each sender's own messages appear in the order it sent them.
    let mut per_sender: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, m) in &views[0] {
        let (s, k) = m.split_once('-').unwrap();
        per_sender
            .entry(s.into())
            .or_default()
            .push(k.parse().unwrap());
    }
    for ks in per_sender.values() {
        assert_eq!(ks, &(0..PER_SENDER).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_loses_no_room() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a", "chat-b"]);
    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_to(1, "bob").await;
    let mut arx = alice.pushes().unwrap();
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    collect_route(&mut arx, "onAdd", 1).await;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            alice
                .send("lobby", &format!("before {i}"))
                .await
                .unwrap()
                .seq
                .unwrap(),
        );
    }
    env.backends[0].kill();
    // The conversation goes on: every message is accepted and delivered, within the deadline.
    for i in 0..10 {
        let sender = if i % 2 == 0 { &alice } else { &bob };
        let started = std::time::Instant::now();
        let s = sender
            .send("lobby", &format!("after {i}"))
            .await
            .unwrap_or_else(|e| panic!("message {i} after the kill failed: {e}"));
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "a request outlived the deadline"
        );
        sent.push(s.seq.unwrap());
    }
    for rx in [&mut arx, &mut brx] {
        let got = collect_route(rx, "onChat", sent.len()).await;
        let seqs: Vec<u64> = got
            .iter()
            .filter(|p| p.route == "onChat")
            .map(|p| p.seq)
            .collect();
        assert_eq!(
            seqs, sent,
            "every accepted message delivered once, in order"
        );
    }
    // No room or member was lost.
    let mut r = env.redis().await;
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(members.len(), 2);
    // The dead backend leaves the registry when its entry expires.
    let mut gone = false;
    for _ in 0..100 {
        let ids: HashSet<String> = r.smembers("rc:backends").await.unwrap();
        let alive: bool = r.exists("rc:backend:chat-a").await.unwrap();
        if !alive && ids.contains("chat-b") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the killed backend's registry entry did not expire");
    assert!(next_push(&mut arx, Duration::from_millis(200))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_over_the_presence_limit_join_silently_and_answer_with_a_count() {
    let env = Env::start_with(
        &["edge-a", "edge-b"],
        &["chat-a"],
        &["--presence-max-members", "2"],
        &["--presence-max-members", "2"],
    );
    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_to(1, "bob").await;
    let carol = env.connect_to(0, "carol").await;
    let mut arx = alice.pushes().unwrap();
    let mut crx = carol.pushes().unwrap();
    alice.enter("hall").await.unwrap();
    let b = bob.enter("hall").await.unwrap();
    assert_eq!((b.users.len(), b.members), (2, 2));
    assert_eq!(collect_route(&mut arx, "onAdd", 1).await.len(), 1);
    // The third member takes the room over the limit: only a count, and nobody is told.
    let c = carol.enter("hall").await.unwrap();
    assert!(
        c.users.is_empty(),
        "no member list above the limit: {:?}",
        c.users
    );
    assert_eq!(c.members, 3);
    // Messages still reach everyone, the silent joiner included, with no seq skipped.
    let sent = bob.send("hall", "to all three").await.unwrap().seq.unwrap();
    assert_eq!(sent, c.seq + 1, "a silent join consumes no seq");
    for rx in [&mut arx, &mut crx] {
        let got = next_push(rx, WAIT).await.expect("a push");
        assert_eq!((got.route.as_str(), got.seq), ("onChat", sent));
    }
    // Leaving a room over the limit is silent too; back at the limit, leaves are pushed.
    carol.leave("hall").await.unwrap();
    bob.leave("hall").await.unwrap();
    let got = next_push(&mut arx, WAIT).await.expect("onLeave");
    assert_eq!(got.route, "onLeave");
    assert_eq!(body(&got)["user"], "bob");
}

/// The presence limit is applied by the join/leave scripts with the *calling* node's value, so a
/// backend's own joins and leaves (`ChannelService::add`/`leave`) must use
/// `--presence-max-members` too. A backend with the store's default (1000) would push an
/// `onLeave` (and consume a seq) in a room the edges keep silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_applies_its_presence_limit_to_its_own_leaves() {
    use clap::Parser;
    let env = Env::start_with(&["edge-a"], &[], &["--presence-max-members", "2"], &[]);
    // A real backend, in this process, with a route that makes a member leave.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: roomcast_backend::BackendConfig,
    }
    let certs = &env.cluster.certs;
    let redis_url = env.redis.url();
    let args = [
        "backend",
        "--id",
        "chat-presence",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        &redis_url,
        "--cert",
        certs.backend_cert.to_str().unwrap(),
        "--key",
        certs.backend_key.to_str().unwrap(),
        "--ca",
        certs.ca.to_str().unwrap(),
        "--presence-max-members",
        "2",
    ];
    let cfg = Cli::try_parse_from(args).unwrap().cfg;
    let router = roomcast_backend::chat::router().route("chat.kick", |ctx, body| async move {
        let req: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| roomcast_backend::HandlerError::bad_request(e.to_string()))?;
        let (rid, uid) = (
            req["rid"].as_str().unwrap_or(""),
            req["uid"].as_str().unwrap_or(""),
        );
        ctx.channels.leave(rid, uid).await?;
        Ok(bytes::Bytes::from_static(b"{}"))
    });
    let backend = roomcast_backend::start(cfg, router).await.unwrap();
    assert_eq!(backend.presence.max_members, 2);

    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_to(0, "bob").await;
    let carol = env.connect_to(0, "carol").await;
    let mut brx = bob.pushes().unwrap();
    alice.enter("hall").await.unwrap();
    bob.enter("hall").await.unwrap();
    let c = carol.enter("hall").await.unwrap();
    assert_eq!(c.members, 3, "the room is over the limit");
    // The edge finds the backend once its registry cache has it: 502 until then.
    let deadline = std::time::Instant::now() + WAIT * 2;
    let before = loop {
        match alice.send("hall", "before").await {
            Ok(s) => break s.seq.unwrap(),
            Err(e) if e.code() == Some(502) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("sending failed: {e}"),
        }
    };
    let kick = serde_json::json!({"rid": "hall", "uid": "carol"});
    alice
        .request("chat.kick", bytes::Bytes::from(kick.to_string()))
        .await
        .unwrap();
    let mut r = env.redis().await;
    let members: HashMap<String, String> = r.hgetall("rc:room:{hall}:members").await.unwrap();
    assert!(!members.contains_key("carol"), "the backend's leave ran");
    let after = alice.send("hall", "after").await.unwrap().seq.unwrap();
    assert_eq!(after, before + 1, "a silent leave consumes no seq");
    let got = collect_route(&mut brx, "onChat", 2).await;
    let routes: Vec<(&str, u64)> = got.iter().map(|p| (p.route.as_str(), p.seq)).collect();
    assert_eq!(
        routes,
        vec![("onChat", before), ("onChat", after)],
        "bob was told about a leave in a room over the presence limit"
    );
    backend.shutdown().await;
}

/// `chat.send` as a notify (no answer): each one is published. Notifies carry no request id,
/// and all of a session's notifies once shared one request key, so the backend took every one
/// after the first as a retry of it and dropped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notify_is_published_once() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let (alice, _bob, mut brx) = env.alice_and_bob_in_lobby(0, 0).await;
    // A request first: the backends are known to the edge from then on.
    alice.send("lobby", "first").await.unwrap();
    let notice = bytes::Bytes::from_static(br#"{"rid":"lobby","content":"same","target":"*"}"#);
    for _ in 0..3 {
        alice.notify("chat.send", notice.clone()).await.unwrap();
    }
    let got = collect_route(&mut brx, "onChat", 4).await;
    let texts: Vec<String> = got
        .iter()
        .filter(|p| p.route == "onChat")
        .map(|p| body(p)["msg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["first", "same", "same", "same"]);
    assert!(
        next_push(&mut brx, Duration::from_millis(300))
            .await
            .is_none(),
        "each notify once"
    );
}
