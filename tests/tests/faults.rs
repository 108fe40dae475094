//! Failures the system survives, each injected into real processes: an edge killed, a backend
//! killed under load, Redis restarted empty, a client connection lost, pub/sub messages lost, an
//! edge drained, a client changing address. Each test checks what members actually received
//! (seqs, counts) and what Redis holds afterwards.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::AsyncCommands;
use roomcast_client::{Client, ClientError, Push};
use support::{body, collect_route, next_push, Env, WAIT};
use tokio::sync::mpsc::Receiver;

/// Simulates a lost connection (as opposed to a close on purpose, code 0).
fn drop_connection(c: &Client) {
    c.connection()
        .quic()
        .close(quinn::VarInt::from_u32(99), b"simulated network loss");
}

/// Collects `onChat` pushes of `rid` until `n` arrived; returns (seq, msg) in arrival order.
async fn chats(rx: &mut Receiver<Push>, n: usize, wait: Duration) -> Vec<(u64, String)> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_push(rx, left).await {
            Some(p) if p.route == "onChat" => {
                out.push((p.seq, body(&p)["msg"].as_str().unwrap().to_string()))
            }
            Some(p) if p.route == "onGap" => panic!("unexpected gap: {p:?}"),
            Some(_) => {}
            None => panic!("only {} of {n} messages arrived: {out:?}", out.len()),
        }
    }
    out
}

fn assert_consecutive(seqs: &[u64], who: &str) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{who} saw a gap or a duplicate: {seqs:?}");
    }
}

/// Subscribers of `channel` (`PUBSUB NUMSUB`), on the real Redis.
async fn numsub(r: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let v: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(r)
        .await
        .unwrap();
    v.1
}

/// Polls `check` until it holds; fails the test after `wait`.
async fn wait_until<F, Fut>(what: &str, wait: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + wait;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_is_reaped_and_its_members_leave() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let mut opts = env.options(1);
    opts.reconnect = false;
    let bob = Client::connect_direct(opts, env.edges[1].addr, "bob")
        .await
        .unwrap();
    let mut arx = alice.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    bob.enter("hall").await.unwrap();
    collect_route(&mut arx, "onAdd", 1).await;

    let killed = Instant::now();
    env.edges[1].kill();
    // Lease TTL (5 s) + one sweep (1 s) + slack.
    let got = collect_route(&mut arx, "onLeave", 1).await;
    assert_eq!(body(got.last().unwrap())["user"], "bob");
    println!("onLeave after the kill: {:?}", killed.elapsed());
    assert!(
        killed.elapsed() < Duration::from_secs(9),
        "reaping took {:?}",
        killed.elapsed()
    );

    let mut r = env.redis().await;
    // The reaper works room by room and forgets the edge last: the onLeave above may arrive
    // while it is still on the next room, so wait for the end of the reap before looking.
    let reap_deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let edges: HashSet<String> = r.smembers("rc:edges").await.unwrap();
        if !edges.contains("edge-b") || Instant::now() > reap_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(
        members.keys().collect::<Vec<_>>(),
        vec!["alice"],
        "live members stay"
    );
    for key in [
        "rc:room:{hall}:members",
        "rc:session:bob",
        "rc:edge:edge-b:rooms",
        "rc:edge:edge-b:sessions",
        "rc:room:{lobby}:edge:edge-b",
    ] {
        let exists: bool = r.exists(key).await.unwrap();
        assert!(!exists, "{key} survived the reaper");
    }
    let edges: HashSet<String> = r.smembers("rc:edges").await.unwrap();
    assert_eq!(edges, HashSet::from(["edge-a".to_string()]));
    let session: bool = r.exists("rc:session:alice").await.unwrap();
    assert!(session);
    // Exactly one onLeave for bob.
    assert!(next_push(&mut arx, Duration::from_millis(500))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_loses_and_duplicates_nothing() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a", "chat-b"]);
    let alice = Arc::new(env.connect_to(0, "alice").await);
    let bob = Arc::new(env.connect_to(1, "bob").await);
    let carol = env.connect_to(1, "carol").await;
    let mut crx = carol.pushes().unwrap();
    for c in [&*alice, &*bob, &carol] {
        c.enter("lobby").await.unwrap();
    }
    const PER_SENDER: usize = 120;
    let progress = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (name, c) in [("a", alice.clone()), ("b", bob.clone())] {
        let progress = progress.clone();
        senders.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..PER_SENDER {
                let msg = format!("{name}{i}");
                match c.send("lobby", &msg).await {
                    Ok(s) => accepted.push((s.seq.unwrap(), msg)),
                    Err(e) => println!("not accepted: {msg}: {e}"),
                }
                progress.fetch_add(1, Ordering::SeqCst);
            }
            accepted
        }));
    }
    // Kill mid-stream: once traffic demonstrably flows, however slowly the machine runs it.
    wait_until("traffic before the kill", WAIT * 2, || {
        let n = progress.load(Ordering::SeqCst);
        async move { n >= 20 }
    })
    .await;
    env.backends[0].kill();
    println!(
        "backend killed after {} of {} sends",
        progress.load(Ordering::SeqCst),
        2 * PER_SENDER
    );
    let mut accepted = Vec::new();
    for s in senders {
        accepted.extend(s.await.unwrap());
    }
    accepted.sort();
    println!("accepted {} of {}", accepted.len(), 2 * PER_SENDER);
    assert!(accepted.len() >= 2 * PER_SENDER - 2, "too many refusals");
    let got = chats(&mut crx, accepted.len(), WAIT * 2).await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_consecutive(&seqs, "carol");
    let unique: BTreeSet<&String> = got.iter().map(|(_, m)| m).collect();
    assert_eq!(unique.len(), got.len(), "a message was published twice");
    assert_eq!(
        got, accepted,
        "every accepted message exactly once, with its seq"
    );
    assert!(next_push(&mut crx, Duration::from_millis(500))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_is_survived() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_to(1, "bob").await;
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    let before = alice.send("lobby", "before").await.unwrap().seq.unwrap();
    chats(&mut brx, 1, WAIT).await;

    env.redis.kill();
    // While Redis is down, requests fail fast with a clear error; nothing hangs.
    let started = Instant::now();
    let err = alice.send("lobby", "during").await.unwrap_err();
    println!("during the outage: {err} after {:?}", started.elapsed());
    assert!(matches!(err.code(), Some(503) | Some(504)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(7));

    env.redis.restart().unwrap();
    let back = Instant::now();
    let mut r = redis::Client::open(env.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    wait_until("rooms re-registered", Duration::from_secs(8), || {
        let mut r = r.clone();
        async move {
            let m: HashMap<String, String> = r
                .hgetall("rc:room:{lobby}:members")
                .await
                .unwrap_or_default();
            let s: bool = r.exists("rc:session:alice").await.unwrap_or(false);
            m.len() == 2 && s
        }
    })
    .await;
    println!(
        "rooms complete again {:?} after redis came back",
        back.elapsed()
    );
    assert!(back.elapsed() < Duration::from_secs(6));
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(members["alice"], "edge-a");
    assert_eq!(members["bob"], "edge-b");

    // The conversation continues, numbered after what members already saw, once the store's
    // recovery window (numbering stopped while edges write back, 6 s) is over.
    let mut sent = None;
    let deadline = Instant::now() + WAIT * 2;
    while Instant::now() < deadline {
        match alice.send("lobby", "after").await {
            Ok(s) => {
                sent = s.seq;
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Some(503), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    println!(
        "sending works again {:?} after redis came back",
        back.elapsed()
    );
    let sent = sent.expect("sending works again");
    assert!(sent > before);
    // The room's new numbering starts above the old one: bob is told of the jump by one onGap
    // (history from before the restart is gone), then gets the message.
    let gap = next_push(&mut brx, WAIT)
        .await
        .expect("the onGap of the new numbering");
    assert_eq!(gap.route, "onGap", "{gap:?}");
    assert_eq!(body(&gap)["from"], before + 1);
    assert_eq!(gap.seq, sent - 1);
    let got = chats(&mut brx, 1, WAIT).await;
    assert_eq!(got, vec![(sent, "after".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_resumes_without_gap_duplicate_or_leave() {
    let env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = Arc::new(env.connect_to(0, "alice").await);
    let bob = env.connect_via(1, 0, "bob").await;
    let mut arx = alice.pushes().unwrap();
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    collect_route(&mut arx, "onAdd", 1).await;

    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..60 {
                seqs.push(
                    alice
                        .send("lobby", &format!("m{i}"))
                        .await
                        .unwrap()
                        .seq
                        .unwrap(),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seqs
        })
    };
    chats(&mut brx, 5, WAIT).await;
    drop_connection(&bob);
    let reconnects = bob.reconnected(0, WAIT).await.expect("bob reconnects");
    assert_eq!(reconnects, 1);
    let sent = sender.await.unwrap();
    // Bob sees every message after the ones he already had, once, in order.
    let mut got: Vec<u64> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.last() != sent.last() {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_push(&mut brx, left)
            .await
            .expect("bob's messages arrive");
        assert_ne!(p.route, "onGap", "{p:?}");
        if p.route == "onChat" {
            got.push(p.seq);
        }
    }
    let mut all = sent[..5].to_vec();
    all.extend(got);
    assert_eq!(
        all, sent,
        "bob missed or repeated messages across the resume"
    );
    // Alice never saw bob leave and come back.
    let others: Vec<Push> = std::iter::from_fn(|| arx.try_recv().ok())
        .filter(|p| p.route != "onChat")
        .collect();
    assert!(
        others.is_empty(),
        "resume was visible to the room: {others:?}"
    );
    let mut r = env.redis().await;
    let session: String = r.hget("rc:session:bob", "session").await.unwrap();
    assert_eq!(session, bob.connection().welcome().session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_history_is_told_explicitly() {
    let env = Env::start_with(
        &["edge-a"],
        &["chat-a"],
        &["--history-len", "5"],
        &["--history-len", "5"],
    );
    let alice = env.connect_to(0, "alice").await;
    let mut opts = env.options(0);
    opts.reconnect = false;
    let bob = Client::connect_direct(opts.clone(), env.edges[0].addr, "bob")
        .await
        .unwrap();
    alice.enter("lobby").await.unwrap();
    let joined = bob.enter("lobby").await.unwrap();
    let old_session = bob.connection().welcome().session.clone();
    drop_connection(&bob);
    let mut last = 0;
    for i in 0..20 {
        last = alice
            .send("lobby", &format!("m{i}"))
            .await
            .unwrap()
            .seq
            .unwrap();
    }
    let again = Client::connect_direct(opts, env.edges[0].addr, "bob")
        .await
        .unwrap();
    let mut rx = again.pushes().unwrap();
    let answer = support::resume_by_hand(&again, "bob", old_session, "lobby", joined.seq).await;
    let lobby = &answer.rooms["lobby"];
    assert_eq!(
        lobby.users,
        vec!["alice", "bob"],
        "the current member list comes along"
    );
    assert_eq!(lobby.gap, Some((joined.seq + 1, last - 5)));
    let gap = next_push(&mut rx, WAIT).await.unwrap();
    assert_eq!(gap.route, "onGap");
    assert_eq!(gap.seq, last - 5);
    let rest = chats(&mut rx, 5, WAIT).await;
    let seqs: Vec<u64> = rest.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (last - 4..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pubsub_messages_are_filled_from_history() {
    let env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let (alice, _bob, mut brx) = env.alice_and_bob_in_lobby(0, 1).await;
    let alice = Arc::new(alice);
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut n = 0;
            for i in 0..150 {
                if alice.send("lobby", &format!("m{i}")).await.is_ok() {
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };
    let mut r = env.redis().await;
    let store = roomcast_store::Store::connect(&env.redis.url(), Default::default())
        .await
        .unwrap();
    let lobby_channel = "rc:room:{lobby}:push";
    let mut in_gap = 0;
    for round in 0..3 {
        // Both edges are subscribed to the room (again, after the previous round's kill): the
        // subscriber confirms all its channels in one SUBSCRIBE, so this also means each edge's
        // pub/sub connection is back. Waited for, not assumed: on a busy machine a reconnect
        // can take far longer than its 100 ms backoff.
        wait_until(
            &format!("both edges subscribed to the lobby before round {round}"),
            WAIT * 2,
            || {
                let mut r = r.clone();
                async move { numsub(&mut r, lobby_channel).await == 2 }
            },
        )
        .await;
        // Kill every pub/sub connection (both edges'), while traffic flows...
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut r)
            .await
            .unwrap();
        assert!(killed >= 2, "round {round}: killed {killed}");
        // ...and publish while no edge can hear it (edges wait 100 ms before reconnecting).
        for k in 0..3 {
            let body =
                serde_json::json!({"msg": format!("gap{round}-{k}"), "from": "x", "target": "*"});
            store
                .publish_room("lobby", "onChat", body.to_string().as_bytes(), None, None)
                .await
                .unwrap();
            in_gap += 1;
        }
    }
    let accepted = sender.await.unwrap();
    assert!(accepted >= 140, "only {accepted} messages accepted");
    let got = chats(&mut brx, accepted + in_gap, WAIT).await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_consecutive(&seqs, "bob");
    let gap_msgs = got.iter().filter(|(_, m)| m.starts_with("gap")).count();
    assert_eq!(
        gap_msgs, in_gap,
        "messages published while the edge was deaf were filled in"
    );
    assert!(next_push(&mut brx, Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_edge_moves_its_clients_without_loss() {
    let mut env = Env::start_with(
        &["edge-a", "edge-b"],
        &["chat-a"],
        &["--drain-secs", "5"],
        &[],
    );
    let alice = Arc::new(env.connect_to(0, "alice").await);
    let bob = env.connect_via(1, 0, "bob").await;
    let mut arx = alice.pushes().unwrap();
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    collect_route(&mut arx, "onAdd", 1).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = {
        let alice = alice.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..80 {
                if let Ok(s) = alice.send("lobby", &format!("m{i}")).await {
                    seqs.push(s.seq.unwrap());
                }
                progress.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seqs
        })
    };
    // Drain while traffic flows.
    wait_until("traffic before the drain", WAIT * 2, || {
        let n = progress.load(Ordering::SeqCst);
        async move { n >= 5 }
    })
    .await;
    let started = Instant::now();
    let edge_b = &mut env.edges[1];
    tokio::task::block_in_place(|| edge_b.terminate(Duration::from_secs(15)));
    println!("edge-b exited {:?} after SIGTERM", started.elapsed());
    assert_eq!(bob.reconnected(0, WAIT).await.unwrap(), 1);
    assert_eq!(bob.edge(), "edge-a", "bob moved to the other edge");
    let sent = sender.await.unwrap();
    let got = chats(&mut brx, sent.len(), WAIT).await;
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), sent);
    let others: Vec<Push> = std::iter::from_fn(|| arx.try_recv().ok())
        .filter(|p| p.route != "onChat")
        .collect();
    assert!(
        others.is_empty(),
        "the move was visible to the room: {others:?}"
    );
    let mut r = env.redis().await;
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(members["bob"], "edge-a");
    let edges: HashSet<String> = r.smembers("rc:edges").await.unwrap();
    assert!(!edges.contains("edge-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_drains_an_edge() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_via(1, 0, "bob").await;
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    let out = std::process::Command::new(&env.cluster.bin)
        .args([
            "edge",
            "drain",
            "--id",
            "edge-b",
            "--redis-url",
            &env.redis.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bob.reconnected(0, WAIT).await.unwrap(), 1);
    assert_eq!(bob.edge(), "edge-a");
    let edge_b = &mut env.edges[1];
    let status = tokio::task::block_in_place(|| edge_b.wait_exit(WAIT));
    assert!(
        status.is_some_and(|s| s.success()),
        "edge-b did not exit cleanly: {status:?}"
    );
    let s = alice
        .send("lobby", "still with us?")
        .await
        .unwrap()
        .seq
        .unwrap();
    assert_eq!(
        chats(&mut brx, 1, WAIT).await,
        vec![(s, "still with us?".to_string())]
    );
    // Draining an edge that is not running is an error that says so.
    let out = std::process::Command::new(&env.cluster.bin)
        .args([
            "edge",
            "drain",
            "--id",
            "edge-b",
            "--redis-url",
            &env.redis.url(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_changing_address_keeps_its_session() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let (alice, bob, mut brx) = env.alice_and_bob_in_lobby(0, 0).await;
    let session = bob.connection().welcome().session.clone();
    let new_addr = bob.connection().rebind().unwrap();
    println!("bob's connection moved to local address {new_addr}");
    // Bob's own request goes out from the new address; pushes follow him there.
    bob.send("lobby", "from my new address").await.unwrap();
    let s = alice.send("lobby", "hi bob").await.unwrap().seq.unwrap();
    let got = chats(&mut brx, 2, WAIT).await;
    assert_eq!(got.last().unwrap(), &(s, "hi bob".to_string()));
    assert_eq!(bob.reconnects(), 0, "migration must not need a reconnect");
    assert_eq!(bob.connection().welcome().session, session);
    let err: Result<Bytes, ClientError> = bob.request("nope.route", Bytes::new()).await;
    assert_eq!(
        err.unwrap_err().code(),
        Some(404),
        "the session still answers"
    );
}

// One thread: the QUIC driver cannot send anything before the test has queued both the Hello and
// the request, so both surely travel in the first flight, as 0-RTT data.
#[tokio::test(flavor = "current_thread")]
async fn zero_rtt_carries_only_replay_safe_requests() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let opts = env.options(0);
    // A first contact cannot use 0-RTT; it leaves a TLS session to resume.
    let (first, _) = roomcast_client::client::query_entry_early(&opts, "alice")
        .await
        .unwrap();
    // The next gate query travels as 0-RTT data and is answered.
    let (again, early) = roomcast_client::client::query_entry_early(&opts, "alice")
        .await
        .unwrap();
    assert_eq!(again, first);
    assert!(early, "the gate query was not sent as accepted 0-RTT data");

    // A state-changing request sent as early data is refused, never executed. (The SDK never
    // sends one; a raw QUIC client does, to prove the edge checks.)
    use roomcast_net::stream::{read_frame, write_frame};
    use roomcast_protocol::codec::Frame;
    let config =
        support::raw_client_config(&env, roomcast_protocol::protocol::CLIENT_ALPN, None, true);
    let endpoint = support::raw_endpoint();
    let first = endpoint
        .connect_with(config.clone(), env.edges[0].addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut hello, mut welcome) = first.open_bi().await.unwrap();
    write_frame(
        &mut hello,
        &Frame::Hello {
            version: 1,
            client: "raw".into(),
        },
    )
    .await
    .unwrap();
    // The edge sends its session tickets as the handshake completes, before it can answer the
    // Hello: once the Welcome is here, so are they (no fixed sleep that a busy machine outlasts).
    let mut buf = bytes::BytesMut::new();
    let w = read_frame(&mut welcome, &mut buf, 1 << 16).await.unwrap();
    assert!(matches!(w, Some(Frame::Welcome { .. })), "{w:?}");
    first.close(0u32.into(), b"");
    // quinn marks a stream as 0-RTT when the edge *accepts* it while the handshake is still in
    // progress. On a busy machine the edge may accept it only after the client's Finished has
    // arrived: it is then an ordinary request (safe: a completed handshake proves the sender
    // is not replaying someone's early data), here refused 401 for its missing token. So try a
    // few 0-RTT connections: one must be refused with 425, and none may change room state.
    let mut refused = None;
    for attempt in 0..5 {
        let (conn, accepted) = endpoint
            .connect_with(config.clone(), env.edges[0].addr, "localhost")
            .unwrap()
            .into_0rtt()
            .unwrap_or_else(|_| panic!("no resumable session for 0-RTT (attempt {attempt})"));
        let (mut ctrl, ctrl_recv) = conn.open_bi().await.unwrap();
        write_frame(
            &mut ctrl,
            &Frame::Hello {
                version: 1,
                client: "raw".into(),
            },
        )
        .await
        .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_frame(
            &mut send,
            &Frame::Request {
                id: 1,
                route: "connector.enter".into(),
                body: Bytes::from_static(br#"{"username":"mallory","rid":"lobby"}"#),
            },
        )
        .await
        .unwrap();
        send.finish().unwrap();
        assert!(accepted.await, "early data was not accepted");
        let mut buf = bytes::BytesMut::new();
        match read_frame(&mut recv, &mut buf, 1 << 16).await.unwrap() {
            Some(Frame::Response {
                code: 425, message, ..
            }) => {
                assert!(message.contains("0-RTT"), "{message}");
                refused = Some((conn, ctrl, ctrl_recv));
                break;
            }
            Some(Frame::Response {
                code: 401, message, ..
            }) => {
                println!("attempt {attempt}: accepted after the handshake ({message}); again");
                conn.close(0u32.into(), b"");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let (conn, _ctrl, _ctrl_recv) =
        refused.expect("no 0-RTT enter was refused with 425 in 5 attempts");
    let mut r = env.redis().await;
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert!(members.is_empty(), "a 0-RTT enter changed room state");
    // After the handshake the same connection may do it.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let body = serde_json::json!({"rid": "lobby", "token": support::token("mallory", &["*"])});
    write_frame(
        &mut send,
        &Frame::Request {
            id: 2,
            route: "connector.enter".into(),
            body: Bytes::from(body.to_string()),
        },
    )
    .await
    .unwrap();
    send.finish().unwrap();
    let mut buf = bytes::BytesMut::new();
    let answer = read_frame(&mut recv, &mut buf, 1 << 16).await.unwrap();
    assert!(
        matches!(answer, Some(Frame::Response { code: 200, .. })),
        "{answer:?}"
    );
}
