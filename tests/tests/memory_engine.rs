//! The Redis-free mode: two edges and the chat service in this one process, sharing one
//! in-memory store (`Store::memory`), with real QUIC clients. Checks that the memory engine's
//! bus and state serve the unchanged edge and backend code end to end.

use std::time::Duration;

use roomcast_client::{Client, ClientOptions, Push};
use roomcast_e2e::cluster::Certs;
use roomcast_store::keys::Keys;
use roomcast_store::Store;

const WAIT: Duration = Duration::from_secs(10);

async fn next(rx: &mut tokio::sync::mpsc::Receiver<Push>) -> Push {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a push in time")
        .expect("push stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_and_chat_in_one_process_on_the_memory_engine() {
    let certs = Certs::for_tests().expect("certificates");
    let store = Store::memory(Keys::default());
    let chat = roomcast_e2e::memory::chat_config(&certs, "chat-a", "rc").expect("chat config");
    let backend =
        roomcast_backend::start_with_store(chat, roomcast_backend::chat::router(), store.clone())
            .await
            .expect("backend on the memory store");
    let edge_cfg = |id: &str| {
        roomcast_e2e::memory::edge_config(&certs, id, "127.0.0.1:0", "rc", "secret", &[])
            .expect("edge config")
    };
    let a = roomcast_edge::node::start_with_store(edge_cfg("edge-a"), store.clone())
        .await
        .expect("edge-a");
    let b = roomcast_edge::node::start_with_store(edge_cfg("edge-b"), store.clone())
        .await
        .expect("edge-b");
    let mut opts = ClientOptions::new(a.addr, certs.ca.clone());
    opts.request_timeout = WAIT;
    let alice = Client::connect_direct(opts.clone(), a.addr, "alice")
        .await
        .expect("alice");
    let bob = Client::connect_direct(opts.clone(), b.addr, "bob")
        .await
        .expect("bob");
    let mut arx = alice.pushes().expect("pushes");
    let mut brx = bob.pushes().expect("pushes");

    let first = alice.enter("lobby").await.expect("alice enters").seq;
    let entered = bob.enter("lobby").await.expect("bob enters");
    assert_eq!((entered.seq, entered.users.len()), (first + 1, 2));
    let got = next(&mut arx).await;
    assert_eq!((got.route.as_str(), got.seq), ("onAdd", first + 1));

    // A room message crosses edges through the memory bus, numbered by the memory engine.
    // The edges' registry caches are refreshed every second: until then a send finds no
    // backend (502), so retry to a deadline instead of sleeping a fixed time.
    let deadline = std::time::Instant::now() + WAIT;
    let sent = loop {
        match alice.send("lobby", "hello").await {
            Ok(sent) => break sent,
            Err(e) if std::time::Instant::now() < deadline => {
                println!("send not served yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    };
    assert_eq!(sent.seq, Some(first + 2));
    for rx in [&mut arx, &mut brx] {
        let got = next(rx).await;
        assert_eq!(
            (got.route.as_str(), got.rid.as_str(), got.seq),
            ("onChat", "lobby", first + 2)
        );
    }
    // A private message goes to bob's edge only.
    bob.send_to("lobby", "alice", "psst")
        .await
        .expect("private");
    let got = next(&mut arx).await;
    assert_eq!((got.route.as_str(), got.seq), ("onChat", 0));
    // Leaving is pushed, and the store agrees.
    bob.leave("lobby").await.expect("leave");
    let got = next(&mut arx).await;
    assert_eq!((got.route.as_str(), got.seq), ("onLeave", first + 3));
    assert_eq!(store.members("lobby").await.expect("members"), ["alice"]);
    assert_eq!(
        store.session_edge("bob").await.expect("claim").as_deref(),
        Some("edge-b")
    );
    assert_eq!(store.list_edges().await.expect("edges").len(), 2);

    drop((alice, bob));
    backend.shutdown().await;
}
