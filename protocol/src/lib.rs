//! The roomcast wire protocol, as plain code with no IO: what the client SDK, the fuzz targets
//! and every server process agree on. `PROTOCOL.md` is its specification.
//!
//! Layout, one concern per module:
//! - [`codec`]: the client/edge/backend frame format (encode, incremental decode, limits).
//! - [`protocol`]: constants (version, ALPN names, status codes, route names, limits), the JSON
//!   bodies of the built-in routes, and [`protocol::Status`], the one error type that every
//!   process answers failed requests with.
//! - [`bus`]: the binary messages edges receive through the store's bus (pub/sub).
//! - [`ids`]: validation of user ids, room ids and node ids.

pub mod bus;
pub mod codec;
pub mod ids;
pub mod protocol;
