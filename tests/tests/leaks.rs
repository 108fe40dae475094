//! What a session holds is released when it ends. A push stream's writer task once waited for
//! more pushes forever after its connection closed, keeping the whole QUIC connection state
//! alive with it: an edge's memory grew by ~15 MiB per 500 clients that came and went
//! (BENCHMARKS.md, "Memory that did not come back"). Push streams (each holds its connection)
//! are counted; own test binary: the gauge is process-wide.

use std::time::{Duration, Instant};

use roomcast_client::{Client, ClientOptions};
use roomcast_e2e::cluster::Certs;
use roomcast_store::keys::Keys;
use roomcast_store::Store;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_streams_end_with_their_connections() {
    let certs = Certs::for_tests().expect("certificates");
    let store = Store::memory(Keys::default());
    let chat = roomcast_e2e::memory::chat_config(&certs, "chat-a", "rc").expect("chat config");
    let backend =
        roomcast_backend::start_with_store(chat, roomcast_backend::chat::router(), store.clone())
            .await
            .expect("backend");
    let cfg = roomcast_e2e::memory::edge_config(&certs, "edge-a", "127.0.0.1:0", "rc", "s", &[])
        .expect("edge config");
    let edge = roomcast_edge::node::start_with_store(cfg, store.clone())
        .await
        .expect("edge");
    let mut opts = ClientOptions::new(edge.addr, certs.ca.clone());
    opts.request_timeout = WAIT;
    opts.reconnect = false;

    let mut clients = Vec::new();
    for i in 0..10 {
        let c = Client::connect_direct(opts.clone(), edge.addr, &format!("u{i}"))
            .await
            .expect("connect");
        c.enter("lobby").await.expect("enter");
        clients.push(c);
    }
    // Every member has a room stream now (onAdd pushes); a private message opens session
    // streams too.
    let deadline = Instant::now() + WAIT;
    loop {
        match clients[0].send_to("lobby", "u1", "psst").await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                println!("not served yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("private message: {e}"),
        }
    }
    assert!(
        roomcast_edge::outbound::live_push_streams() >= 10,
        "push streams: {}",
        roomcast_edge::outbound::live_push_streams()
    );

    // Half leave by closing, half by losing their connection.
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.close().await;
        } else {
            c.connection()
                .quic()
                .close(quinn::VarInt::from_u32(99), b"gone");
        }
    }
    let deadline = Instant::now() + WAIT;
    while roomcast_edge::outbound::live_push_streams() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} push streams outlived their connections",
            roomcast_edge::outbound::live_push_streams()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    backend.shutdown().await;
}
