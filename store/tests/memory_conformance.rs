//! The conformance suite on the in-memory engine (no Redis needed).

use roomcast_store::keys::Keys;
use roomcast_store::Store;

roomcast_store::conformance_tests!(|| async { ((), Store::memory(Keys::default())) });
