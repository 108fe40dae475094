//! QUIC plumbing that clients and servers share.
//!
//! Layout, one concern per module:
//! - [`tls`]: rustls/quinn configuration with one explicitly chosen crypto provider (ring).
//! - [`net`]: UDP sockets and quinn endpoints with socket buffers sized for fan-out bursts.
//! - [`stream`]: the thin async layer that moves [`roomcast_protocol::codec`] frames over quinn
//!   streams.

pub mod net;
pub mod stream;
pub mod tls;
