//! Edges serving chosen service routes themselves (`--local-routes`, Pomelo's frontend
//! handlers): real redis-server, real edge processes, real QUIC; no backend unless a test
//! starts one.

mod support;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use roomcast_client::Client;
use roomcast_net::stream::read_frame;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::code;
use support::{body, collect_route, expect_error, Env, WAIT};

/// Sends `chat.send` with a request id of our choosing on a fresh stream (as a client
/// retrying a request would, on the same connection) and returns the answer's code and body.
async fn send_with_id(c: &Client, id: u32, body: &'static [u8]) -> (u16, serde_json::Value) {
    let frame = Frame::Request {
        id,
        route: "chat.send".into(),
        body: Bytes::from_static(body),
    };
    let (mut send, mut recv) = c.connection().open_raw_stream().await.unwrap();
    send.write_all(&frame.to_bytes().unwrap()).await.unwrap();
    let _ = send.finish();
    let mut buf = BytesMut::new();
    match tokio::time::timeout(WAIT, read_frame(&mut recv, &mut buf, 1 << 20))
        .await
        .expect("the edge answers in time")
        .expect("a readable answer")
    {
        Some(Frame::Response {
            id: answered,
            code,
            body,
            ..
        }) => {
            assert_eq!(answered, id);
            let body = if body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&body).unwrap()
            };
            (code, body)
        }
        other => panic!("expected a Response, got {other:?}"),
    }
}

/// The whole chat flow with zero backends: each edge runs the chat service's handlers itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_chat_routes_chat_works_without_any_backend() {
    let env = Env::start_with(&["edge-a", "edge-b"], &[], &["--local-routes=chat."], &[]);
    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_to(1, "bob").await;
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();

    // A room message: answered with a seq, delivered to the member on the other edge.
    let sent = alice.send("lobby", "hello").await.expect("send");
    let seq = sent.seq.expect("room messages have a seq");
    let got = collect_route(&mut brx, "onChat", 1).await;
    let chat = got.last().unwrap();
    assert_eq!((chat.rid.as_str(), chat.seq), ("lobby", seq));
    let b = body(chat);
    assert_eq!(
        (b["msg"].as_str(), b["from"].as_str(), b["target"].as_str()),
        (Some("hello"), Some("alice"), Some("*"))
    );
    // A private message reaches its target.
    alice
        .send_to("lobby", "bob", "psst")
        .await
        .expect("private");
    let got = collect_route(&mut brx, "onChat", 1).await;
    assert_eq!(body(got.last().unwrap())["target"], "bob");

    // The chat service's refusals, with the codes a backend gives (bad_input.rs).
    expect_error(
        alice.send("elsewhere", "hi").await,
        code::NOT_MEMBER,
        "elsewhere",
    );
    expect_error(
        alice.send_to("lobby", "ghost", "hi").await,
        code::TARGET_NOT_IN_ROOM,
        "ghost",
    );
    expect_error(
        alice
            .request("chat.send", Bytes::from_static(b"not json"))
            .await,
        code::BAD_REQUEST,
        "not valid JSON",
    );
    expect_error(
        alice.send("lobby", &"x".repeat(4097)).await,
        code::BAD_REQUEST,
        "the maximum is 4096",
    );
    expect_error(
        alice.request("chat.nope", Bytes::from_static(b"{}")).await,
        code::UNKNOWN_ROUTE,
        "unknown route `chat.nope`",
    );
    // A session that has not entered is refused before any handler runs.
    let carol = env.connect_to(0, "carol").await;
    expect_error(
        carol.send("lobby", "hi").await,
        code::NOT_ENTERED,
        "connector.enter",
    );

    // A retry (same request id on the same connection, so the same request key) answers the
    // first seq and publishes nothing more; bob's next message is the next send's.
    let msg = br#"{"rid":"lobby","content":"once"}"#;
    let (c1, first) = send_with_id(&alice, 1_000_000, msg).await;
    assert_eq!(c1, code::OK, "{first}");
    let once = first["seq"].as_u64().expect("a seq");
    assert!(once > seq);
    let (c2, retry) = send_with_id(&alice, 1_000_000, msg).await;
    assert_eq!((c2, retry["seq"].as_u64()), (code::OK, Some(once)));
    let got = collect_route(&mut brx, "onChat", 1).await;
    assert_eq!(got.last().unwrap().seq, once);
    let next = alice.send("lobby", "next").await.unwrap().seq.unwrap();
    assert_eq!(next, once + 1);
    let got = collect_route(&mut brx, "onChat", 1).await;
    assert_eq!(
        got.len(),
        1,
        "no second copy of the retried message: {got:?}"
    );
    assert_eq!(
        (got[0].seq, body(&got[0])["msg"].as_str()),
        (next, Some("next"))
    );

    // No backend was ever involved: none is registered.
    let mut r = env.redis().await;
    let backends: Vec<String> = redis::AsyncCommands::smembers(&mut r, "rc:backends")
        .await
        .unwrap();
    assert!(backends.is_empty(), "{backends:?}");

    // The edge checks a local answer as a backend's: the store no longer lists alice (as
    // after a loss of its state), the edge still has her in the room, so the handler's 403
    // "not a member" reaches her as a 503 "retry", never as "not a member".
    let _: () = redis::AsyncCommands::hdel(&mut r, "rc:room:{lobby}:members", "alice")
        .await
        .unwrap();
    expect_error(
        alice.send("lobby", "after the loss").await,
        code::STORE_UNAVAILABLE,
        roomcast_edge::routes::MEMBERSHIP_REASON,
    );
}

/// Only matching routes stay on the edge: another route is forwarded as before (502 with no
/// backend, then answered by the backend that registers for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_outside_the_local_prefixes_still_go_to_a_backend() {
    use clap::Parser;
    let env = Env::start_with(&["edge-a"], &[], &["--local-routes", "chat.send"], &[]);
    let alice = env.connect_to(0, "alice").await;
    alice.enter("lobby").await.unwrap();
    alice
        .send("lobby", "local")
        .await
        .expect("chat.send is local");
    expect_error(
        alice
            .request("chat.whoami", Bytes::from_static(b"{}"))
            .await,
        code::BACKEND_UNAVAILABLE,
        "no live backend serves route `chat.whoami`",
    );

    // A backend (in this process) serving `chat.whoami`, which says who asked through whom.
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
        "chat-whoami",
        "--redis-url",
        &redis_url,
        "--cert",
        certs.backend_cert.to_str().unwrap(),
        "--key",
        certs.backend_key.to_str().unwrap(),
        "--ca",
        certs.ca.to_str().unwrap(),
    ];
    let cfg = Cli::try_parse_from(args).unwrap().cfg;
    let router = roomcast_backend::Router::new().route("chat.whoami", |ctx, _body| async move {
        let who = serde_json::json!({"backend": "chat-whoami", "uid": ctx.uid, "edge": ctx.edge});
        Ok(Bytes::from(who.to_string()))
    });
    let backend = roomcast_backend::start(cfg, router).await.unwrap();
    // The edge finds the backend once its registry cache has it: 502 until then.
    let deadline = Instant::now() + WAIT * 2;
    let answer = loop {
        match alice
            .request("chat.whoami", Bytes::from_static(b"{}"))
            .await
        {
            Ok(b) => break b,
            Err(e) if e.code() == Some(code::BACKEND_UNAVAILABLE) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("chat.whoami failed: {e}"),
        }
    };
    let who: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        who,
        serde_json::json!({"backend": "chat-whoami", "uid": "alice", "edge": "edge-a"})
    );
    // chat.send still runs on the edge: the backend has no such route (it would answer 404).
    alice
        .send("lobby", "still local")
        .await
        .expect("local send");
    backend.shutdown().await;
}
