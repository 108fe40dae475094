//! The store conformance suite (`roomcast_store::conformance`) on the Redis engine, each test
//! against its own real redis-server.

use roomcast_e2e::redis_server::RedisServer;
use roomcast_store::keys::Keys;
use roomcast_store::Store;

async fn redis_store() -> (RedisServer, Store) {
    let r = RedisServer::start().expect("redis-server");
    let store = Store::connect(&r.url(), Keys::default())
        .await
        .expect("connect");
    (r, store)
}

roomcast_store::conformance_tests!(redis_store);
