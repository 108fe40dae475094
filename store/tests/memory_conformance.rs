//! The conformance suite on the in-memory engine (no Redis needed).

use std::sync::Arc;

use roomcast_store::keys::Keys;
use roomcast_store::memory::MemoryEngine;
use roomcast_store::Store;

roomcast_store::conformance_tests!(|| async { ((), Store::memory(Keys::default())) });

#[tokio::test]
async fn a_slow_subscriber_loses_payloads_not_memory() {
    let engine = MemoryEngine::new(Keys::default()).with_bus_queue_len(64);
    roomcast_store::conformance::a_slow_subscriber_loses_payloads_not_memory(
        Store::new(Arc::new(engine)),
        64,
    )
    .await;
}
