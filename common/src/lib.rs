//! Code shared by every roomcast process: the edge, the backends, the client SDK and the tests.
//!
//! Layout, one concern per module:
//! - [`auth`]: JWT verification (HS256/RS256/ES256) and the room patterns a token allows.
//! - [`codec`]: the client/edge/backend frame format, plain code without IO (encode, incremental
//!   decode, limits). `PROTOCOL.md` is its specification.
//! - [`protocol`]: protocol constants: version, ALPN names, status codes, route names, limits and
//!   the JSON bodies of the built-in routes.
//! - [`stream`]: the thin async layer that moves frames over quinn streams.
//! - [`keys`]: the only place that builds Redis key and channel names (prefix, hash tags, escaping).
//! - [`bus`]: the binary messages edges receive through Redis pub/sub.
//! - [`store`]: room state, sessions and the registry in Redis (Lua scripts, one round trip each).
//! - [`net`]: UDP sockets and quinn endpoints with socket buffers sized for fan-out bursts.
//! - [`ids`]: validation of user ids, room ids and node ids.
//! - [`tls`]: rustls/quinn configuration with one explicitly chosen crypto provider (ring).
//! - [`telemetry`]: logging set-up shared by the binaries.

pub mod auth;
pub mod bus;
pub mod codec;
pub mod ids;
pub mod keys;
pub mod net;
pub mod protocol;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tls;
