//! Clients find a live edge: several gates in the SDK, a draining edge that still answers the
//! gate (pointing elsewhere) but refuses logins, a gate naming a dead edge, and how long a
//! client takes to notice that its edge was killed (`kill -9`) and resume on another one.
//! Real redis-server, real edge and backend processes, real QUIC.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use roomcast_client::{Client, ClientOptions, Connection, Push};
use roomcast_protocol::protocol::{code, route, Resume, DRAINING_MESSAGE};
use support::{body, expect_error, next_push, Env, WAIT};
use tokio::sync::mpsc::Receiver;

/// A uid the gate places on `want` rather than on `other` when both are live (rendezvous
/// hashing: the highest score wins).
fn uid_for(want: &str, other: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|u| roomcast_edge::gate::score(u, want) > roomcast_edge::gate::score(u, other))
        .expect("some uid prefers each edge")
}

/// A loopback UDP port where nothing answers: datagrams sent there vanish, as they do towards
/// a dead host. (Keep the socket alive while it is used.)
fn black_hole() -> (std::net::UdpSocket, SocketAddr) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    (s, addr)
}

/// The first `onChat` push with message `msg`, skipping others (presence, gaps); bounded.
async fn chat_with(rx: &mut Receiver<Push>, msg: &str, wait: Duration) -> Push {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_push(rx, left).await {
            Some(p) if p.route == "onChat" && body(&p)["msg"] == msg => return p,
            Some(_) => {}
            None => panic!("`{msg}` did not arrive within {wait:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_a_dead_gate_then_a_live_one_connects() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let (_hole, dead) = black_hole();
    let mut opts =
        ClientOptions::with_gates(vec![dead, env.edges[0].addr], env.cluster.certs.ca.clone());
    opts.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let alice = Client::connect(opts.clone(), "alice")
        .await
        .expect("the second gate answers");
    println!("connected past a dead gate in {:?}", started.elapsed());
    assert_eq!(alice.edge(), "edge-a");
    alice.enter("lobby").await.expect("enter");
    // The gate query alone also moves on to the next gate.
    let answer = roomcast_client::client::query_entry(&opts, "bob")
        .await
        .expect("answer");
    assert_eq!(answer.edge, "edge-a");
    // Only dead gates: a clear error naming the address, no hang and no panic.
    let (_hole2, dead2) = black_hole();
    let mut only_dead = ClientOptions::with_gates(vec![dead, dead2], opts.ca.clone());
    only_dead.connect_timeout = Duration::from_millis(500);
    match Client::connect(only_dead, "carol").await {
        Err(e @ roomcast_client::ClientError::Connect { .. }) => {
            assert!(e.to_string().contains(&dead2.to_string()), "{e}")
        }
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(_) => panic!("connected through dead gates"),
    }
    // No gate at all is a configuration error.
    let none = ClientOptions::with_gates(Vec::new(), opts.ca.clone());
    assert!(matches!(
        Client::connect(none, "dave").await,
        Err(roomcast_client::ClientError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_edge_answers_the_gate_elsewhere_and_refuses_logins() {
    // A long drain, and a session on edge-b that never resumes: edge-b stays draining for the
    // whole test.
    let env = Env::start_with(
        &["edge-a", "edge-b"],
        &["chat-a"],
        &["--drain-secs", "60"],
        &[],
    );
    let b = env.edges[1].addr;
    let uid = uid_for("edge-b", "edge-a", "user");
    let mut stay = env.options(1);
    stay.reconnect = false;
    let carol = Client::connect_direct(stay, b, "carol").await.unwrap();
    carol.enter("lobby").await.unwrap();
    let only_b = env.options(1);
    let before = roomcast_client::client::query_entry(&only_b, &uid)
        .await
        .unwrap();
    assert_eq!(
        before.edge, "edge-b",
        "{uid} belongs on edge-b while it is live"
    );

    // SIGTERM: edge-b starts draining.
    // SAFETY: kill(2) on the pid of a child this test started and still owns.
    let rc = unsafe { libc::kill(env.edges[1].pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    // Edge-b keeps answering gate queries, and soon names edge-a (its registry cache sees
    // its own draining flag within a refresh). Refusing the connection would fail here.
    let deadline = Instant::now() + WAIT;
    loop {
        match roomcast_client::client::query_entry(&only_b, &uid).await {
            Ok(answer) if answer.edge == "edge-a" => break,
            Ok(answer) => assert_eq!(answer.edge, "edge-b"),
            Err(e) => panic!("the draining edge did not answer the gate query: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the draining edge kept naming itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A client whose only gate is the draining edge lands on edge-a and works there.
    let client = Client::connect(env.options(1), &uid)
        .await
        .expect("connect through the draining edge's gate");
    assert_eq!(client.edge(), "edge-a");
    let mut rx = client.pushes().unwrap();
    client.enter("hall").await.expect("enter on edge-a");
    let sent = client.send("hall", "landed").await.unwrap();
    assert_eq!(
        chat_with(&mut rx, "landed", WAIT).await.seq,
        sent.seq.unwrap()
    );

    // On the draining edge itself: the gate routes are served, logins get 503 with the
    // documented message, and so does anything else.
    let opts = env.options(1);
    let direct = Connection::connect(&opts, b)
        .await
        .expect("a draining edge accepts the connection");
    assert_eq!(direct.welcome().edge, "edge-b");
    let token = support::token("zoe", &["*"]);
    let enter = serde_json::json!({"rid": "lobby", "token": token});
    let r: Result<serde_json::Value, _> = direct.request_json(route::ENTER, &enter).await;
    expect_error(r, code::EDGE_DRAINING, DRAINING_MESSAGE);
    let resume = Resume {
        username: String::new(),
        session: "edge-b.1.00000000".into(),
        rooms: Default::default(),
        token: token.clone(),
    };
    let r: Result<serde_json::Value, _> = direct.request_json(route::RESUME, &resume).await;
    expect_error(r, code::EDGE_DRAINING, DRAINING_MESSAGE);
    let chat = serde_json::json!({"rid": "lobby", "content": "x"});
    let r: Result<serde_json::Value, _> = direct.request_json(route::CHAT_SEND, &chat).await;
    expect_error(r, code::EDGE_DRAINING, DRAINING_MESSAGE);
    let dev: Result<serde_json::Value, _> = direct
        .request_json(route::DEV_TOKEN, &serde_json::json!({"uid": "zoe"}))
        .await;
    assert!(
        dev.is_ok(),
        "gate.devToken is served while draining: {dev:?}"
    );
    let q: roomcast_protocol::protocol::EntryAnswer = direct
        .request_json(route::QUERY_ENTRY, &serde_json::json!({"uid": uid}))
        .await
        .expect("gate query on the draining edge");
    assert_eq!(q.edge, "edge-a");
    assert_eq!(
        direct.close_reason(),
        None,
        "the gate-only connection stays open"
    );
    direct.close().await;

    // An SDK client put on the draining edge directly (as when a gate's cache named it just
    // before the drain) is told 503 at its first enter, moves through its gate and enters on
    // edge-a: the application sees only the successful enter.
    let late_uid = uid_for("edge-b", "edge-a", "late");
    let late = Client::connect_direct(env.options(1), b, &late_uid)
        .await
        .expect("connect to the draining edge");
    assert_eq!(late.edge(), "edge-b");
    late.enter("hall").await.expect("enter after moving");
    assert_eq!(late.edge(), "edge-a");
    assert_eq!(late.reconnects(), 1);
    // Nothing was logged in on edge-b by any of this.
    let mut r = env.redis().await;
    let zoe: bool = redis::AsyncCommands::exists(&mut r, "rc:session:zoe")
        .await
        .unwrap();
    assert!(!zoe, "a refused login left a claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_naming_a_dead_edge_is_used_as_the_edge_itself() {
    // A long lease: the gates keep naming the killed edge for the whole test.
    let mut env = Env::start_with(
        &["edge-a", "edge-b"],
        &["chat-a"],
        &["--lease-ttl-ms", "60000"],
        &[],
    );
    let uid = uid_for("edge-b", "edge-a", "user");
    env.edges[1].kill();
    let mut opts = env.options(0);
    opts.connect_timeout = Duration::from_secs(1);
    let answer = roomcast_client::client::query_entry(&opts, &uid)
        .await
        .unwrap();
    assert_eq!(answer.edge, "edge-b", "the gate still names the dead edge");
    let client = Client::connect(opts, &uid)
        .await
        .expect("falls back to the gate as an edge");
    assert_eq!(client.edge(), "edge-a");
    client.enter("lobby").await.expect("enter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_client_resumes_on_another_edge_well_before_30_s() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let uid = uid_for("edge-b", "edge-a", "bob");
    let alice = env.connect_to(0, "alice").await;
    // Bob's gates: edge-b first (his edge), then edge-a; SDK defaults otherwise (idle timeout
    // 10 s, keep-alive 2 s).
    let mut opts = ClientOptions::with_gates(
        vec![env.edges[1].addr, env.edges[0].addr],
        env.cluster.certs.ca.clone(),
    );
    opts.request_timeout = WAIT;
    let bob = Client::connect(opts, &uid).await.unwrap();
    assert_eq!(bob.edge(), "edge-b");
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    alice.send("lobby", "before").await.unwrap();
    chat_with(&mut brx, "before", WAIT).await;

    let killed = Instant::now();
    env.edges[1].kill();
    let n = bob
        .reconnected(0, Duration::from_secs(25))
        .await
        .expect("bob reconnected");
    let took = killed.elapsed();
    println!("kill -9 of bob's edge: reconnected and resumed on another edge after {took:?}");
    assert_eq!(n, 1);
    assert_eq!(bob.edge(), "edge-a");
    assert!(
        took < Duration::from_secs(20),
        "noticing a dead edge took {took:?}"
    );
    // The resumed session works: room pushes arrive, bob's own messages go out.
    alice.send("lobby", "after").await.unwrap();
    chat_with(&mut brx, "after", WAIT).await;
    bob.send("lobby", "bob is back").await.unwrap();
}
