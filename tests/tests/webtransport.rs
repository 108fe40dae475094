//! The edge's WebTransport side without a browser: a Rust WebTransport client
//! (web-transport-quinn, certificate pinned by hash as browsers do) and raw QUIC clients against
//! real edge processes. The browser itself is tested in `browser.rs`.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::BytesMut;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{close, CLIENT_ALPN, PROTOCOL_VERSION};
use serde_json::{json, Value};
use support::{Env, WAIT};

fn webtransport_cert() -> (PathBuf, PathBuf) {
    static CERT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("roomcast-wt-certs-{}", std::process::id()));
        roomcast_certs::generate_webtransport(&dir, &roomcast_certs::default_hosts())
            .expect("WebTransport certificate")
    })
    .clone()
}

fn hash_of(cert: &std::path::Path) -> String {
    let der = roomcast_net::tls::load_certs(cert).unwrap();
    roomcast_edge::webtransport::sha256_hex(&der[0])
}

fn start(extra: &[&str]) -> Env {
    let (cert, key) = webtransport_cert();
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut args = vec![
        "--webtransport-cert",
        &c,
        "--webtransport-key",
        &k,
        "--webtransport-pin",
    ];
    args.extend_from_slice(extra);
    Env::start_with(&["edge-1", "edge-2"], &["chat-1"], &args, &[])
}

/// A WebTransport client that accepts only the test certificate, by its SHA-256 (as a
/// browser's `serverCertificateHashes` does).
fn wt_client() -> web_transport_quinn::Client {
    let hash = hash_of(&webtransport_cert().0);
    let bytes = (0..hash.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hash[i..i + 2], 16).unwrap())
        .collect();
    web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![bytes])
        .expect("WebTransport client")
}

async fn wt_session(
    env: &Env,
    edge: usize,
    path: &str,
) -> Result<web_transport_quinn::Session, String> {
    let url: url::Url = format!("https://{}{path}", env.edges[edge].addr)
        .parse()
        .unwrap();
    tokio::time::timeout(WAIT, wt_client().connect(url))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Writes `frame` and reads one frame back on a new or given bidirectional stream.
async fn exchange(
    send: &mut web_transport_quinn::SendStream,
    recv: &mut web_transport_quinn::RecvStream,
    frame: &Frame,
) -> Frame {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf).unwrap();
    send.write_all(&buf).await.unwrap();
    let mut got = BytesMut::new();
    loop {
        if let Some(f) = Frame::decode(&mut got, 16 << 20).unwrap() {
            return f;
        }
        let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
            .await
            .expect("an answer in time")
            .expect("read")
            .expect("a frame before the end of the stream");
        got.extend_from_slice(&chunk.bytes);
    }
}

async fn request(session: &web_transport_quinn::Session, route: &str, body: Value) -> Frame {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let f = Frame::Request {
        id: 7,
        route: route.into(),
        body: body.to_string().into_bytes().into(),
    };
    exchange(&mut send, &mut recv, &f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_session_speaks_roomcast_frames_and_the_gate_tells_browsers_where_to_go() {
    let env = tokio::task::block_in_place(|| start(&[]));
    let session = wt_session(&env, 0, "/roomcast").await.expect("session");
    let (mut ctrl_send, mut ctrl_recv) = session.open_bi().await.unwrap();
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        client: "wt-test".into(),
    };
    match exchange(&mut ctrl_send, &mut ctrl_recv, &hello).await {
        Frame::Welcome { edge, .. } => assert_eq!(edge, "edge-1"),
        other => panic!("expected Welcome, got {other:?}"),
    }
    let Frame::Response { code, body, .. } =
        request(&session, "gate.queryEntry", json!({"uid": "zed"})).await
    else {
        panic!("expected a Response");
    };
    assert_eq!(code, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let edge = answer["edge"].as_str().unwrap();
    let addr = env.edges.iter().find(|e| e.id == edge).unwrap().addr;
    assert_eq!(
        answer["webtransport"],
        json!({
            "url": format!("https://{addr}/roomcast"),
            "certificate_hash": hash_of(&webtransport_cert().0),
        })
    );
    // The native answer carries the same (native clients ignore it).
    let native = roomcast_client::client::query_entry(&env.options(1), "zed")
        .await
        .unwrap();
    assert_eq!(
        native.webtransport.unwrap().url,
        format!("https://{addr}/roomcast")
    );
    // Routes are the edge's routes: an unknown one is a 404 as on native QUIC.
    match request(&session, "nope.x", json!({})).await {
        Frame::Response { code, message, .. } => {
            assert_eq!((code, message.as_str()), (404, "unknown route `nope.x`"))
        }
        other => panic!("{other:?}"),
    }
    session.close(close::NORMAL, b"bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_elsewhere_than_roomcast_is_refused() {
    let env = tokio::task::block_in_place(|| start(&[]));
    let err = wt_session(&env, 0, "/other").await.expect_err("refused");
    assert!(err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_webtransport_refuses_browsers() {
    let env = tokio::task::block_in_place(|| start(&["--no-webtransport"]));
    assert!(wt_session(&env, 0, "/roomcast").await.is_err());
    // Native clients are served as ever.
    let c = env.connect_to(0, "nat").await;
    c.enter("lobby").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_that_opens_a_unidirectional_stream_is_closed() {
    let env = tokio::task::block_in_place(|| start(&[]));
    let endpoint = support::raw_endpoint();
    let config = support::raw_client_config(&env, CLIENT_ALPN, None, false);
    let conn = endpoint
        .connect_with(config, env.edges[0].addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        client: "raw".into(),
    };
    roomcast_net::stream::write_frame(&mut send, &hello)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let welcome = roomcast_net::stream::read_frame(&mut recv, &mut buf, 1 << 20)
        .await
        .unwrap();
    assert!(matches!(welcome, Some(Frame::Welcome { .. })));
    // The edge announces 3 (for HTTP/3), but roomcast/1 has no client-opened uni streams.
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(b"\0\0\0\x01\x05").await.unwrap();
    let _ = uni.finish();
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed")
    {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(close::PROTOCOL_ERROR));
            assert_eq!(
                &c.reason[..],
                b"clients may not open unidirectional streams"
            );
        }
        other => panic!("expected a protocol-error close, got {other:?}"),
    }
}
