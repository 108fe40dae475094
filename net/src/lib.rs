//! QUIC plumbing that clients and servers share.
//!
//! Layout, one concern per module:
//! - [`tls`]: rustls/quinn configuration with one explicitly chosen crypto provider (ring).
//! - [`net`]: UDP sockets and quinn endpoints with socket buffers sized for fan-out bursts.
//! - `batch` (Linux): the quinn socket that batches its sends into `sendmmsg`
//!   (`--udp-send-batching`); `mmsg` (Linux): the `sendmmsg` call it and the transport-floor
//!   probe share.
//! - [`stream`]: the thin async layer that moves [`roomcast_protocol::codec`] frames over quinn
//!   streams.

#[cfg(target_os = "linux")]
pub mod batch;
#[cfg(target_os = "linux")]
pub mod mmsg;
pub mod net;
pub mod stream;
pub mod tls;
