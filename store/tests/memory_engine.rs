//! What only the memory engine has: its bounded bus queues, its subscriptions ending like
//! dropped Redis connections, and state that does not outlive its expiries.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use roomcast_store::keys::Keys;
use roomcast_store::memory::{MemoryEngine, BUS_QUEUE_LEN};
use roomcast_store::{HistoryConfig, Store};

fn store() -> (MemoryEngine, Store) {
    let engine = MemoryEngine::new(Keys::default());
    (engine.clone(), Store::new(Arc::new(engine)))
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_loses_payloads_instead_of_growing() {
    let (_, s) = store();
    let mut sub = s.subscribe_edge("e1", &[]).await.unwrap();
    for i in 0..BUS_QUEUE_LEN + 100 {
        s.broadcast("onX", i.to_string().as_bytes()).await.unwrap();
    }
    let mut got = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(50), sub.payloads.next()).await
    {
        got += 1;
    }
    assert_eq!(
        got, BUS_QUEUE_LEN,
        "the queue is bounded; the overflow is dropped"
    );
    assert_eq!(sub.control.dropped(), 100, "and counted");
    // Once drained, delivery resumes.
    s.broadcast("onX", b"again").await.unwrap();
    assert!(sub.payloads.next().await.is_some());
}

#[tokio::test]
async fn dropped_subscriptions_end_and_a_new_one_works() {
    let (engine, s) = store();
    let mut sub = s.subscribe_edge("e1", &["lobby".into()]).await.unwrap();
    engine.disconnect_subscriptions();
    assert!(sub.payloads.next().await.is_none(), "the stream ends");
    assert!(sub.control.ping().await.is_err());
    assert!(sub.control.subscribe_room("hall").await.is_err());
    let mut sub = s.subscribe_edge("e1", &["lobby".into()]).await.unwrap();
    s.publish_room("lobby", "onChat", b"x", None, None)
        .await
        .unwrap();
    assert!(sub.payloads.next().await.is_some());
    // A subscription whose stream is dropped is forgotten.
    drop(sub);
    assert_eq!(engine.stats().subscriptions, 0);
}

#[tokio::test]
async fn expired_state_is_swept() {
    let (engine, s) = store();
    let s = s.with_history(HistoryConfig {
        max_len: 10,
        max_age: Duration::from_millis(100),
    });
    s.claim_session("alice", "e1", "s1", None).await.unwrap();
    assert_eq!(s.members("quiet").await.unwrap().len(), 0);
    assert_eq!(
        engine.stats().rooms,
        0,
        "reading a room that has nothing keeps nothing"
    );
    assert_eq!(engine.stats().sessions, 1);
    s.publish_room("busy", "onChat", b"x", None, None)
        .await
        .unwrap();
    assert_eq!(engine.stats().rooms, 1, "its seq and history keep the room");
    s.release_session("alice", "s1").await.unwrap();
    assert_eq!(engine.stats().sessions, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.history("busy", 0, 10).await.unwrap().is_empty());
}
