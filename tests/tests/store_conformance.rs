//! The store conformance suite (`roomcast_store::conformance`) on the Redis engine, each test
//! against its own real redis-server.

use std::sync::Arc;

use roomcast_e2e::redis_server::RedisServer;
use roomcast_store::keys::Keys;
use roomcast_store::redis::RedisEngine;
use roomcast_store::Store;

async fn redis_store() -> (RedisServer, Store) {
    let r = RedisServer::start().expect("redis-server");
    let store = Store::connect(&r.url(), Keys::default())
        .await
        .expect("connect");
    (r, store)
}

roomcast_store::conformance_tests!(redis_store);

/// The Redis engine's subscriptions keep the memory engine's bound (a small one here).
#[tokio::test]
async fn a_slow_subscriber_loses_payloads_not_memory() {
    let r = RedisServer::start().expect("redis-server");
    let engine = RedisEngine::connect(&r.url(), Keys::default())
        .await
        .expect("connect")
        .with_bus_queue_len(64);
    roomcast_store::conformance::a_slow_subscriber_loses_payloads_not_memory(
        Store::new(Arc::new(engine)),
        64,
    )
    .await;
    drop(r);
}
