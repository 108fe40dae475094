//! The roomcast edge: the QUIC front door that clients connect to.
//!
//! An edge owns its clients' sessions, answers the gate query for any uid, changes room
//! membership in Redis when its sessions enter and leave, forwards service routes (`chat.*`) to
//! backends (or serves chosen ones itself, `--local-routes`), and fans out the pushes it receives through Redis pub/sub to its local sessions,
//! encoding each message once.
//!
//! Layout: a sans-IO core, and the QUIC code as one driver of it (as quinn sits on quinn-proto).
//!
//! Plain code (no tokio, no quinn, no Redis; time passed in):
//! - [`core`]: the edge core, [`core::EdgeCore`]: sessions, uid bindings, detached sessions and
//!   their grace deadlines, room feeds, bus subscription counts, draining. Inputs in, effects
//!   out; deterministic tests with a fake clock in `core/tests.rs`.
//!   - [`core::rooms`]: the room feeds: which local sessions are in which room, from which
//!     seq on, in-order delivery, gap fills and catch-ups.
//!   - [`core::limits`]: the per-session request rate limit and the flood rule.
//! - [`gate`]: rendezvous hashing of uids onto live edges.
//! - [`config`]: command-line / environment configuration and its documented defaults.
//!
//! The driver (IO):
//! - [`state`]: the shared state of a running edge: the core behind one lock, store, bus, caches.
//! - [`session`]: one client connection: handshake, request streams, reporting its end to the
//!   core; the timer task that runs the core's deadlines.
//! - [`routes`]: the built-in routes (`gate.*`, `connector.enter/leave/resume`): token checks,
//!   store claims and joins, reported to the core; forwarding of service routes.
//! - [`fanout`]: carrying out the core's effects: queue pushes, finish streams, close
//!   connections (under the core lock), then history fetches, unsubscribes, claim checks, leaves.
//! - [`transport`]: a client connection as the driver sees it: native QUIC or WebTransport.
//! - [`webtransport`]: browsers on the same UDP port (ALPN `h3`): certificates by ALPN, the
//!   HTTP/3 session set-up, what the gate announces.
//! - [`outbound`]: per-session push streams, each with a bounded queue and its own writer.
//! - [`bus`]: the Redis pub/sub subscriber (subscribe/unsubscribe, probing, reconnects); what
//!   arrives goes to the core.
//! - [`backends`]: the backend registry cache and QUIC forwarding with timeouts and failover.
//! - [`local`]: the service routes the edge serves itself (`--local-routes`): the chat
//!   service's router run in-process instead of on a backend.
//! - [`reaper`]: cleanup after dead edges (expired leases), one reaper per dead edge.
//! - [`registry`]: the edge's own registration heartbeat and the cache of live edges.
//! - [`node`]: wiring: start, run until a signal, drain and shut down.
//! - [`pomelo`]: the Pomelo listener (WebSocket/TCP, Pomelo's hybridconnector protocol): another
//!   driver of the same core; POMELO.md.

pub mod backends;
pub mod bus;
pub mod config;
pub mod core;
pub mod fanout;
pub mod gate;
pub mod local;
pub mod node;
pub mod outbound;
pub mod pomelo;
pub mod reaper;
pub mod registry;
pub mod routes;
pub mod session;
pub mod state;
pub mod transport;
pub mod webtransport;

pub use config::EdgeConfig;
pub use node::{run_cli, start, RunningEdge};
