//! End-to-end support for roomcast: real `redis-server` processes, real edge and backend
//! processes, and the local dev stack (`roomcast-dev`).
//!
//! Layout:
//! - [`redis_server`]: starts a private `redis-server` on a free loopback port, kills it on drop.
//! - [`callgrind`]: a child under valgrind's callgrind; instructions over a measured window.
//! - [`ceilings`]: the machine's raw UDP and Redis ceilings, measured beside each scenario.
//! - [`child`]: children that never outlive their parent (`PR_SET_PDEATHSIG`), bounded SIGTERM.
//! - [`cluster`]: certificates for tests, and edge/backend child processes that can be killed.
//! - [`chaos`]: `roomcast-dev bench chaos`, faults under traffic and a history checker.
//! - [`scenarios`]: `roomcast-dev bench <scenario>`, the benchmark scenarios of BENCHMARKS.md.
//! - [`floor`]: `roomcast-dev floor`, the transport's own cost per delivery (raw UDP, bare
//!   quinn, a quinn-proto driver), without roomcast (issue 13).
//! - [`pomelo_bench`]: `roomcast-dev bench pomelo-fanout-100`, native QUIC beside Pomelo
//!   WebSocket clients, server CPU per delivery.
//! - [`stack`]: `roomcast-dev up`, the one-command local stack of README.
//! - [`web`]: the stack's chat page (static files of `web/` over HTTP on 127.0.0.1).
//!
//! The end-to-end tests themselves are in `tests/tests/`.

pub mod callgrind;
pub mod ceilings;
pub mod chaos;
pub mod child;
pub mod cluster;
pub mod floor;
pub mod memory;
pub mod pomelo_bench;
pub mod redis_server;
pub mod scenarios;
pub mod stack;
pub mod web;
