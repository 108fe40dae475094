//! Server-side helpers shared by the edge, the backends and the test harness (never by the client
//! SDK, which needs only `roomcast-protocol` and `roomcast-net`).
//!
//! Layout, one concern per module:
//! - [`auth`]: JWT verification (HS256/RS256/ES256) and the room patterns a token allows.
//! - [`config`]: command-line flags the edge and the backends share (Redis, TLS, room settings,
//!   id rules), defined once.
//! - [`telemetry`]: logging set-up shared by the binaries.

pub mod auth;
pub mod config;
pub mod telemetry;
