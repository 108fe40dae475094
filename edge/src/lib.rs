//! The roomcast edge: the QUIC front door that clients connect to.
//!
//! An edge owns its clients' sessions, answers the gate query for any uid, changes room
//! membership in Redis when its sessions enter and leave, forwards service routes (`chat.*`) to
//! backends, and fans out the pushes it receives through Redis pub/sub to its local sessions,
//! encoding each message once.
//!
//! Layout, one concern per module:
//! - [`config`]: command-line / environment configuration and its documented defaults.
//! - [`gate`]: rendezvous hashing of uids onto live edges (plain code).
//! - [`limits`]: the per-session request rate limit (token bucket), plain code.
//! - [`rooms`]: which local sessions are in which room, from which seq on (plain code).
//! - [`outbound`]: per-session push streams, each with a bounded queue and its own writer.
//! - [`session`]: one client connection: handshake, request streams, cleanup on close.
//! - [`routes`]: the built-in routes (`gate.queryEntry`, `connector.enter`, `connector.leave`).
//! - [`bus`]: the Redis pub/sub subscriber (room subscriptions, probing, reconnects).
//! - [`fanout`]: carrying out the room feeds' actions: deliver, report gaps, fetch history.
//! - [`backends`]: the backend registry cache and QUIC forwarding with timeouts and failover.
//! - [`reaper`]: cleanup after dead edges (expired leases), one reaper per dead edge.
//! - [`registry`]: the edge's own registration heartbeat and the cache of live edges.
//! - [`state`]: the shared state of a running edge (sessions, local rooms, caches).
//! - [`node`]: wiring: start, run until a signal, shut down.

pub mod backends;
pub mod bus;
pub mod config;
pub mod fanout;
pub mod gate;
pub mod limits;
pub mod node;
pub mod outbound;
pub mod reaper;
pub mod registry;
pub mod rooms;
pub mod routes;
pub mod session;
pub mod state;

pub use config::EdgeConfig;
pub use node::{run_cli, start, RunningEdge};
