//! UDP sockets for QUIC endpoints, with socket buffers sized for fan-out.
//!
//! An edge's one UDP socket receives the acknowledgements of every client it pushes to, and a
//! process holding many client connections on one endpoint receives bursts of pushes. The
//! kernel's default receive buffer (about 208 KiB on Linux) overflows under such bursts, and a
//! datagram dropped there costs a QUIC loss-detection round (milliseconds of latency). So every
//! endpoint asks for [`SOCKET_BUFFER_BYTES`]; the kernel caps the request at
//! `net.core.rmem_max` / `wmem_max` (raise those to get the full size).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffer requested for every QUIC socket: 4 MiB.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER_BYTES`] requested for each buffer.
pub fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("cannot create a UDP socket")?;
    if addr.is_ipv6() {
        // Dual-stack where the platform allows it (as quinn's own client endpoints do).
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer still works, with more loss under bursts.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("cannot set SO_RCVBUF: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("cannot set SO_SNDBUF: {e}");
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("cannot bind {addr}"))?;
    Ok(socket.into())
}

/// A quinn endpoint on [`udp_socket`]: a server when `server` is given, else client-only.
pub fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint> {
    endpoint_with(addr, server, SendBatching::Off)
}

/// How an endpoint's socket sends its datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendBatching {
    /// quinn's own socket: one `sendmsg` per `try_send`.
    Off,
    /// Linux: `crate::batch::BatchingSocket`, datagrams of all connections batched into
    /// `sendmmsg`. Elsewhere the same as `Off`.
    On,
}

/// [`endpoint`] with a choice of send path; must be called inside a tokio runtime.
pub fn endpoint_with(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    batching: SendBatching,
) -> Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let config = quinn::EndpointConfig::default();
    #[cfg(target_os = "linux")]
    if batching == SendBatching::On {
        let socket = crate::batch::BatchingSocket::new(socket)
            .with_context(|| format!("cannot set up batched sends on {addr}"))?;
        return quinn::Endpoint::new_with_abstract_socket(
            config,
            server,
            Arc::new(socket),
            runtime,
        )
        .with_context(|| format!("cannot start a QUIC endpoint on {addr}"));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = batching;
    quinn::Endpoint::new(config, server, socket, runtime)
        .with_context(|| format!("cannot start a QUIC endpoint on {addr}"))
}

/// The unspecified address of `peer`'s family, port 0: where a client endpoint binds.
pub fn any_addr_for(peer: &SocketAddr) -> SocketAddr {
    if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_get_a_larger_receive_buffer_than_the_default() {
        let s = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = Socket::from(s).recv_buffer_size().unwrap();
        // Linux doubles the request and caps it at rmem_max; the default is 212 992.
        assert!(got > 212_992, "receive buffer {got}");
    }
}
