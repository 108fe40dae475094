//! Bad input gets a clear error code and message; the edge keeps serving everyone.

mod support;

use bytes::{Bytes, BytesMut};
use roomcast_client::{Client, ClientError};
use roomcast_net::stream::{read_frame, write_frame};
use roomcast_net::tls;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{self, code};
use support::{collect_route, expect_error, Env, WAIT};

/// Writes raw bytes on a fresh request stream and returns the edge's answer.
async fn raw(c: &Client, bytes: &[u8]) -> (u16, String) {
    let (mut send, mut recv) = c.connection().open_raw_stream().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let mut buf = BytesMut::new();
    match tokio::time::timeout(WAIT, read_frame(&mut recv, &mut buf, 1 << 20))
        .await
        .expect("the edge answers in time")
        .expect("a readable answer")
    {
        Some(Frame::Response { code, message, .. }) => (code, message),
        other => panic!("expected a Response, got {other:?}"),
    }
}

async fn request(c: &Client, route: &str, body: &'static [u8]) -> Result<Bytes, ClientError> {
    c.request(route, Bytes::from_static(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_edge_keeps_serving() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let bob = env.connect_to(0, "bob").await;
    let mut brx = bob.pushes().unwrap();
    bob.enter("lobby").await.unwrap();

    // Routes and bodies.
    expect_error(
        alice.send("lobby", "hi").await,
        code::NOT_ENTERED,
        "connector.enter",
    );
    expect_error(
        request(&alice, "nope.route", b"{}").await,
        code::UNKNOWN_ROUTE,
        "nope.route",
    );
    expect_error(
        request(&alice, "connector.enter", br#"{"rid":"lobby"}"#).await,
        code::UNAUTHENTICATED,
        "a token is required",
    );
    expect_error(
        request(&alice, "connector.enter", br#"{"username":"alice"}"#).await,
        code::BAD_REQUEST,
        "missing field `rid`",
    );
    expect_error(
        request(&alice, "connector.enter", b"\xff not json").await,
        code::BAD_REQUEST,
        "connector.enter",
    );
    expect_error(
        request(&alice, "connector.enter", br#"{"rid":""}"#).await,
        code::BAD_REQUEST,
        "must not be empty",
    );
    expect_error(
        request(&alice, "gate.queryEntry", b"[]").await,
        code::BAD_REQUEST,
        "gate.queryEntry",
    );

    // Frames.
    let (c, m) = raw(&alice, &[0, 0, 0, 1, 0x7f]).await;
    assert_eq!(
        (c, m.as_str()),
        (code::MALFORMED_FRAME, "unknown frame type 0x7f")
    );
    let (c, m) = raw(&alice, &[0, 0, 0, 9, 0x03, 0, 0, 0, 1, 0, 200, b'a', b'b']).await;
    assert_eq!(c, code::MALFORMED_FRAME);
    assert!(m.contains("route"), "{m}");
    let (c, m) = raw(&alice, &[0, 0, 0, 20, 0x03, 0, 0]).await;
    assert_eq!(c, code::MALFORMED_FRAME);
    assert!(m.contains("middle of a frame"), "{m}");
    let mut oversize = vec![0, 0x10, 0, 0, 0x03];
    oversize.extend_from_slice(&[b'x'; 1000]);
    let (c, m) = raw(&alice, &oversize).await;
    assert_eq!(c, code::FRAME_TOO_LARGE);
    assert!(m.contains("exceeds the maximum of 65536"), "{m}");
    let push = Frame::Push {
        route: "onChat".into(),
        rid: String::new(),
        seq: 0,
        body: Bytes::new(),
    }
    .to_bytes()
    .unwrap();
    let (c, m) = raw(&alice, &push).await;
    assert_eq!(c, code::MALFORMED_FRAME);
    assert!(m.contains("expected a Request or Notify"), "{m}");
    // A Response is an edge → client frame: from the client it is malformed (422).
    let response = Frame::Response {
        id: 7,
        code: 200,
        message: String::new(),
        body: Bytes::from_static(b"{}"),
    }
    .to_bytes()
    .unwrap();
    let (c, m) = raw(&alice, &response).await;
    assert_eq!(c, code::MALFORMED_FRAME, "{m}");
    assert!(m.contains("got Response"), "{m}");
    // `length` 0 is refused as soon as the 4 length bytes arrive.
    let (c, m) = raw(&alice, &[0, 0, 0, 0]).await;
    assert_eq!(
        (c, m.as_str()),
        (code::MALFORMED_FRAME, "empty frame (length 0)")
    );

    // Chat bodies, through the backend.
    alice.enter("lobby").await.unwrap();
    collect_route(&mut brx, "onAdd", 1).await;
    // Session-level refusals on a logged-in connection.
    expect_error(
        request(&alice, "connector.leave", br#"{"rid":"elsewhere"}"#).await,
        code::NOT_MEMBER,
        "not in room `elsewhere`",
    );
    let resume = serde_json::json!({
        "token": support::token("alice", &["*"]),
        "session": "old-session",
        "rooms": {"lobby": 1},
    });
    expect_error(
        alice
            .request("connector.resume", Bytes::from(resume.to_string()))
            .await,
        code::BAD_REQUEST,
        "must be the first login",
    );
    let as_bob = serde_json::json!({"token": support::token("bob", &["*"]), "rid": "hall"});
    expect_error(
        alice
            .request("connector.enter", Bytes::from(as_bob.to_string()))
            .await,
        code::BAD_REQUEST,
        "logged in as `alice`",
    );
    expect_error(
        alice.send("lobby", &"x".repeat(4097)).await,
        code::BAD_REQUEST,
        "the maximum is 4096",
    );
    expect_error(
        request(&alice, "chat.send", b"not json").await,
        code::BAD_REQUEST,
        "not valid JSON",
    );
    expect_error(
        request(&alice, "chat.send", br#"{"rid":"lobby"}"#).await,
        code::BAD_REQUEST,
        "missing field `content`",
    );
    expect_error(
        request(&alice, "chat.nope", b"{}").await,
        code::UNKNOWN_ROUTE,
        "chat.nope",
    );
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

    // Through all of that the same connection, and the others, kept working.
    let sent = alice.send("lobby", "still here").await.unwrap();
    let got = collect_route(&mut brx, "onChat", 1).await;
    assert_eq!(got.last().unwrap().seq, sent.seq.unwrap());
    assert!(alice.connection().close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_version_is_refused_with_a_reason() {
    let env = Env::start(&["edge-a"], &[]);
    tls::install_crypto_provider();
    let config = support::raw_client_config(&env, protocol::CLIENT_ALPN, None, false);
    let endpoint = support::raw_endpoint();
    let conn = endpoint
        .connect_with(config, env.edges[0].addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        &Frame::Hello {
            version: 99,
            client: "test".into(),
        },
    )
    .await
    .unwrap();
    let mut buf = BytesMut::new();
    let answer = tokio::time::timeout(WAIT, read_frame(&mut recv, &mut buf, 1 << 16)).await;
    match answer {
        Ok(Ok(Some(Frame::Error { code: c, message }))) => {
            assert_eq!(c, code::BAD_HANDSHAKE);
            assert!(message.contains("version 99 is not supported"), "{message}");
        }
        other => {
            // The close may overtake the Error frame; its reason says the same.
            let reason = conn.closed().await.to_string();
            assert!(
                reason.contains("version 99 is not supported"),
                "{other:?} / {reason}"
            );
        }
    }
    // The edge keeps serving well-behaved clients.
    let opts = env.options(0);
    let c = Client::connect_direct(opts, env.edges[0].addr, "carol")
        .await
        .unwrap();
    c.enter("lobby").await.unwrap();
}
