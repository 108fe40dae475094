//! Refusals: client tokens (missing, forged, expired, wrong room, wrong algorithm), mutual TLS
//! between edges and backends, and an edge that will not start without token verification.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use roomcast_client::{Client, ClientError};
use roomcast_common::auth::{Claims, Minter};
use roomcast_net::stream::{read_frame, write_frame};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{self, code};
use support::{expect_error, token, Env, TEST_JWT_SECRET, WAIT};

async fn enter(c: &Client, body: serde_json::Value) -> Result<Bytes, ClientError> {
    c.request("connector.enter", Bytes::from(body.to_string()))
        .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_verified() {
    let env = Env::start_with(&["edge-a"], &["chat-a"], &["--no-dev-tokens"], &[]);
    let mut opts = env.options(0);
    opts.token = Some(String::new());
    let c = Client::connect_direct(opts, env.edges[0].addr, "alice")
        .await
        .unwrap();
    let dev = c
        .request("gate.devToken", Bytes::from_static(br#"{"uid":"alice"}"#))
        .await;
    expect_error(dev, code::FORBIDDEN, "development tokens are disabled");

    expect_error(
        enter(&c, serde_json::json!({"rid": "lobby"})).await,
        code::UNAUTHENTICATED,
        "a token is required",
    );
    let forged =
        Minter::hs256(b"not the secret").mint("alice", &["*".into()], Duration::from_secs(60));
    expect_error(
        enter(&c, serde_json::json!({"rid": "lobby", "token": forged})).await,
        code::UNAUTHENTICATED,
        "signature is not valid",
    );
    let expired = Minter::hs256(TEST_JWT_SECRET.as_bytes()).mint_claims(&Claims {
        sub: "alice".into(),
        exp: now() - 600,
        rooms: vec!["*".into()],
    });
    expect_error(
        enter(&c, serde_json::json!({"rid": "lobby", "token": expired})).await,
        code::UNAUTHENTICATED,
        "expired",
    );
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &Claims {
            sub: "alice".into(),
            exp: now() + 60,
            rooms: vec!["*".into()],
        },
        &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    expect_error(
        enter(&c, serde_json::json!({"rid": "lobby", "token": hs384})).await,
        code::UNAUTHENTICATED,
        "signed with HS384",
    );
    expect_error(
        enter(&c, serde_json::json!({"rid": "lobby", "token": "a.b.c"})).await,
        code::UNAUTHENTICATED,
        "not a well-formed JWT",
    );
    expect_error(
        enter(
            &c,
            serde_json::json!({"rid": "lobby", "token": token("alice", &["game-*"])}),
        )
        .await,
        code::FORBIDDEN,
        "does not allow room `lobby`",
    );
    expect_error(
        enter(
            &c,
            serde_json::json!({"rid": "lobby", "username": "bob", "token": token("alice", &["*"])}),
        )
        .await,
        code::FORBIDDEN,
        "the token is for `alice`, not `bob`",
    );
    // A valid token: the uid comes from it, not from the body.
    let ok = enter(
        &c,
        serde_json::json!({"rid": "game-7", "token": token("alice", &["game-*"])}),
    )
    .await
    .unwrap();
    let entered: protocol::Entered = serde_json::from_slice(&ok).unwrap();
    assert_eq!(entered.users, vec!["alice"]);
    // The SDK with a token works end to end.
    let mut opts = env.options(0);
    opts.token = Some(token("bob", &["game-7"]));
    let bob = Client::connect_direct(opts, env.edges[0].addr, "bob")
        .await
        .unwrap();
    assert_eq!(
        bob.enter("game-7").await.unwrap().users,
        vec!["alice", "bob"]
    );
    expect_error(
        bob.enter("lobby").await,
        code::FORBIDDEN,
        "does not allow room `lobby`",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verified_with_a_public_key() {
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let dir = std::env::temp_dir().join(format!("roomcast-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("jwt-public.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let public_arg = public.display().to_string();
    let env = Env::start_with(
        &["edge-a"],
        &[],
        &[
            "--no-dev-tokens",
            "--jwt-public-key",
            &public_arg,
            "--jwt-alg",
            "ES256",
        ],
        &[],
    );
    let claims = Claims {
        sub: "alice".into(),
        exp: now() + 60,
        rooms: vec!["lobby".into()],
    };
    let es256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let mut opts = env.options(0);
    opts.token = Some(es256);
    let alice = Client::connect_direct(opts.clone(), env.edges[0].addr, "alice")
        .await
        .unwrap();
    assert_eq!(alice.enter("lobby").await.unwrap().users, vec!["alice"]);
    // An HS256 token (even signed with the public key's bytes, the classic confusion) is refused.
    let confused = Minter::hs256(key.public_key_pem().as_bytes()).mint_claims(&claims);
    opts.token = Some(confused);
    let mallory = Client::connect_direct(opts, env.edges[0].addr, "alice")
        .await
        .unwrap();
    expect_error(
        mallory.enter("lobby").await,
        code::UNAUTHENTICATED,
        "accepts only ES256",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_token_verification_refuses_to_start() {
    let env = Env::start(&[], &[]);
    let out = std::process::Command::new(&env.cluster.bin)
        .args([
            "edge",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &env.redis.url(),
        ])
        .args(["--cert", &env.cluster.certs.edge_cert.display().to_string()])
        .args(["--key", &env.cluster.certs.edge_key.display().to_string()])
        .args(["--ca", &env.cluster.certs.ca.display().to_string()])
        .env_remove("ROOMCAST_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--jwt-secret"), "{err}");
}

/// Tries one request against a backend with the given client TLS identity.
async fn talk_to_backend(
    env: &Env,
    alpn: &[u8],
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Frame, String> {
    let config = support::raw_client_config(env, alpn, identity, false);
    let endpoint = support::raw_endpoint();
    let attempt = async {
        let conn = endpoint
            .connect_with(config, env.backends[0].addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let req = Frame::BackendRequest {
            id: 1,
            route: "chat.send".into(),
            uid: "mallory".into(),
            edge: "fake".into(),
            session: "s".into(),
            request_key: "k".into(),
            body: Bytes::from_static(b"{}"),
        };
        write_frame(&mut send, &req)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        let mut buf = BytesMut::new();
        read_frame(&mut recv, &mut buf, 1 << 16)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no answer".to_string())
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_accept_only_peers_with_a_cluster_certificate() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let certs = &env.cluster.certs;
    // An edge's certificate (the cluster CA) is accepted.
    let ok = talk_to_backend(
        &env,
        protocol::BACKEND_ALPN,
        Some((&certs.edge_cert, &certs.edge_key)),
    )
    .await
    .expect("a cluster certificate is accepted");
    assert!(matches!(ok, Frame::Response { .. }), "{ok:?}");
    // No certificate: refused.
    let err = talk_to_backend(&env, protocol::BACKEND_ALPN, None)
        .await
        .unwrap_err();
    println!("without a certificate: {err}");
    // A certificate from another CA: refused.
    let other = std::env::temp_dir().join(format!("roomcast-other-ca-{}", std::process::id()));
    let g = roomcast_certs::generate(&other, &roomcast_certs::default_hosts()).unwrap();
    let err = talk_to_backend(
        &env,
        protocol::BACKEND_ALPN,
        Some((&g.edge_cert, &g.edge_key)),
    )
    .await
    .unwrap_err();
    println!("with another CA's certificate: {err}");
    let _ = std::fs::remove_dir_all(&other);
    // The client protocol is not spoken on a backend port at all.
    let err = talk_to_backend(
        &env,
        protocol::CLIENT_ALPN,
        Some((&certs.edge_cert, &certs.edge_key)),
    )
    .await
    .unwrap_err();
    println!("with the client ALPN: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_clear_errors_and_floods_are_cut_off() {
    let env = Env::start_with(
        &["edge-a"],
        &[],
        &[
            "--rate-limit",
            "5",
            "--rate-burst",
            "5",
            "--max-sessions",
            "2",
            "--max-rooms-per-session",
            "2",
            "--max-id-bytes",
            "8",
            "--ascii-ids",
        ],
        &[],
    );
    let mut opts = env.options(0);
    opts.reconnect = false;
    let query = || Bytes::from_static(br#"{"uid":"x"}"#);
    let alice = Client::connect_direct(opts.clone(), env.edges[0].addr, "alice")
        .await
        .unwrap();
    let mut limited = None;
    for _ in 0..10 {
        if let Err(e) = alice.request("gate.queryEntry", query()).await {
            limited = Some(e);
            break;
        }
    }
    expect_error(
        limited.map_or(Ok(()), Err),
        code::LIMIT_EXCEEDED,
        "rate limit",
    );
    // A client that keeps flooding is disconnected.
    let mut closed = false;
    for _ in 0..500 {
        match alice.request("gate.queryEntry", query()).await {
            Err(ClientError::Closed(reason)) => {
                assert!(reason.contains("rate limit"), "{reason}");
                closed = true;
                break;
            }
            _ => continue,
        }
    }
    assert!(closed, "a flooding client was not disconnected");
    assert_eq!(
        alice.connection().close_code(),
        Some(protocol::close::ABUSE)
    );

    // Sessions per edge. Alice's session must be gone from the edge first: wait until the
    // edge's load in the registry (its session count) is 0 in a heartbeat written after alice
    // saw the close — an observed condition, not a fixed time a busy machine may outlast.
    let r = env.redis().await;
    let lease = || {
        let mut r = r.clone();
        async move {
            let v: (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg("rc:edge:edge-a")
                .arg("heartbeat")
                .arg("load")
                .query_async(&mut r)
                .await
                .unwrap();
            v
        }
    };
    let (before, _) = lease().await;
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        let (heartbeat, load) = lease().await;
        if heartbeat != before && load.as_deref() == Some("0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge still counts alice's session: load {load:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob = Client::connect_direct(opts.clone(), env.edges[0].addr, "bob")
        .await
        .unwrap();
    let _carol = Client::connect_direct(opts.clone(), env.edges[0].addr, "carol")
        .await
        .unwrap();
    let dave = Client::connect_direct(opts.clone(), env.edges[0].addr, "dave").await;
    assert!(
        matches!(dave, Err(ClientError::Connect { .. })),
        "a third session was accepted: {:?}",
        dave.map(|_| ())
    );
    // Id rules.
    expect_error(
        bob.enter("salón").await,
        code::BAD_REQUEST,
        "printable ASCII",
    );
    expect_error(
        bob.enter("123456789").await,
        code::BAD_REQUEST,
        "maximum is 8",
    );
    // Rooms per session (after the rate limit's bucket refilled).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bob.enter("r1").await.unwrap();
    bob.enter("r2").await.unwrap();
    expect_error(
        bob.enter("r3").await,
        code::LIMIT_EXCEEDED,
        "at most 2 rooms",
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_the_edge_or_slow_others() {
    let env = Env::start_with(&["edge-a"], &[], &["--push-queue", "64"], &[]);
    let edge_pid = env.edges[0].pid();
    // Bob reads normally.
    let bob = env.connect_to(0, "bob").await;
    let mut brx = bob.pushes().unwrap();
    bob.enter("lobby").await.unwrap();
    // Mallory enters and then never reads a push stream.
    let config = support::raw_client_config(&env, protocol::CLIENT_ALPN, None, false);
    let endpoint = support::raw_endpoint();
    let mallory = endpoint
        .connect_with(config, env.edges[0].addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut ctrl, _ctrl_recv) = mallory.open_bi().await.unwrap();
    write_frame(
        &mut ctrl,
        &Frame::Hello {
            version: 1,
            client: "never-reads".into(),
        },
    )
    .await
    .unwrap();
    let (mut send, mut recv) = mallory.open_bi().await.unwrap();
    let body = serde_json::json!({"rid": "lobby", "token": token("mallory", &["lobby"])});
    write_frame(
        &mut send,
        &Frame::Request {
            id: 1,
            route: "connector.enter".into(),
            body: Bytes::from(body.to_string()),
        },
    )
    .await
    .unwrap();
    let _ = send.finish();
    let mut buf = BytesMut::new();
    let answer = read_frame(&mut recv, &mut buf, 1 << 16).await.unwrap();
    assert!(
        matches!(answer, Some(Frame::Response { code: 200, .. })),
        "{answer:?}"
    );

    let before = rss_kib(edge_pid);
    // 10 000 pushes of 4 KiB: 40 MiB that mallory never reads.
    const N: usize = 10_000;
    let store = roomcast_store::Store::connect(&env.redis.url(), Default::default())
        .await
        .unwrap();
    let content = "x".repeat(4096);
    let started = std::time::Instant::now();
    // In batches that bob keeps up with: only mallory falls behind.
    const BATCH: usize = 50;
    let mut last_seq = 0;
    let mut worst_batch = Duration::ZERO;
    for b in 0..N / BATCH {
        let t = std::time::Instant::now();
        for i in 0..BATCH {
            let body = serde_json::json!({"msg": content, "from": "load", "target": "*", "i": b * BATCH + i});
            store
                .publish_room("lobby", "onChat", body.to_string().as_bytes(), None, None)
                .await
                .unwrap();
        }
        let mut got = 0;
        while got < BATCH {
            let p = support::next_push(&mut brx, WAIT)
                .await
                .expect("bob keeps receiving");
            if p.route == "onChat" {
                assert_eq!(p.seq, last_seq + 1, "bob saw a gap or a duplicate");
                got += 1;
            }
            last_seq = p.seq;
        }
        worst_batch = worst_batch.max(t.elapsed());
    }
    let after = rss_kib(edge_pid);
    println!(
        "bob received {N} pushes of 4 KiB in {:?} (slowest batch of {BATCH}: {worst_batch:?}); edge RSS {before} KiB -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after < before + 30 * 1024,
        "the edge grew by {} KiB for a client that never reads",
        after - before
    );
    let reason = tokio::time::timeout(WAIT, mallory.closed())
        .await
        .expect("mallory is disconnected");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                quinn::VarInt::from_u32(protocol::close::SLOW_CONSUMER)
            );
        }
        other => panic!("mallory closed for another reason: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_are_refused_or_contained() {
    use redis::AsyncCommands;
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let first = alice.enter("lobby").await.unwrap().seq;
    let t = token("mallory", &["*"]);
    let mallory = env.connect_to(0, "mallory").await;
    for (rid, mentions) in [
        ("a\nb".to_string(), "control characters"),
        ("x".repeat(200), "maximum is 128"),
        (String::new(), "must not be empty"),
    ] {
        expect_error(
            enter(&mallory, serde_json::json!({"rid": rid, "token": t})).await,
            code::BAD_REQUEST,
            mentions,
        );
    }
    // Invalid UTF-8 inside the JSON body.
    let mut raw = br#"{"rid":"lob"#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(format!(r#"by","token":"{t}"}}"#).as_bytes());
    let err = mallory.request("connector.enter", Bytes::from(raw)).await;
    expect_error(err, code::BAD_REQUEST, "connector.enter");
    // Redis-significant characters are fine as ids, and stay in their own keys.
    for rid in [
        "lobby}:members",
        "{lobby}",
        "lobby*",
        "lobby lobby",
        "lobby:edge:edge-a",
    ] {
        let entered: protocol::Entered = serde_json::from_slice(
            &enter(&mallory, serde_json::json!({"rid": rid, "token": t}))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(entered.users, vec!["mallory"], "room {rid}");
        mallory.send(rid, "hi").await.unwrap();
    }
    let mut r = env.redis().await;
    let lobby: std::collections::HashMap<String, String> =
        r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(
        lobby.keys().collect::<Vec<_>>(),
        vec!["alice"],
        "the real lobby was touched"
    );
    let seq: u64 = r.get("rc:room:{lobby}:seq").await.unwrap();
    assert_eq!(
        seq, first,
        "only alice's join was ever pushed to the real lobby"
    );
    let escaped: bool = r
        .exists("rc:room:{lobby%7D%3Amembers}:members")
        .await
        .unwrap();
    assert!(escaped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_says_hello_is_dropped() {
    let env = Env::start(&["edge-a"], &[]);
    let config = support::raw_client_config(&env, protocol::CLIENT_ALPN, None, false);
    let endpoint = support::raw_endpoint();
    let conn = endpoint
        .connect_with(config, env.edges[0].addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the edge closes a silent connection");
    println!("closed after {:?}: {reason}", started.elapsed());
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                quinn::VarInt::from_u32(protocol::close::BAD_HANDSHAKE)
            );
            assert!(String::from_utf8_lossy(&c.reason).contains("handshake timeout"));
        }
        other => panic!("closed for another reason: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verified_with_a_public_key() {
    let public = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/jwt-rs256-TEST-ONLY.pub"
    );
    let private = include_bytes!("../fixtures/jwt-rs256-TEST-ONLY.key");
    let env = Env::start_with(
        &["edge-a"],
        &[],
        &[
            "--no-dev-tokens",
            "--jwt-public-key",
            public,
            "--jwt-alg",
            "RS256",
        ],
        &[],
    );
    let claims = Claims {
        sub: "alice".into(),
        exp: now() + 60,
        rooms: vec!["lobby".into()],
    };
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap();
    let mut opts = env.options(0);
    opts.token = Some(rs256);
    let alice = Client::connect_direct(opts.clone(), env.edges[0].addr, "alice")
        .await
        .unwrap();
    assert_eq!(alice.enter("lobby").await.unwrap().users, vec!["alice"]);
    // HS256 signed with the public key's bytes (the classic RS/HS confusion) is refused.
    let confused = Minter::hs256(&std::fs::read(public).unwrap()).mint_claims(&claims);
    opts.token = Some(confused);
    let mallory = Client::connect_direct(opts, env.edges[0].addr, "alice")
        .await
        .unwrap();
    expect_error(
        mallory.enter("lobby").await,
        code::UNAUTHENTICATED,
        "accepts only RS256",
    );
}
