//! The Pomelo listener: existing Pomelo clients (the "hybridconnector" protocol: WebSocket or
//! raw TCP on one port) served by the same edge core as QUIC clients. POMELO.md documents the
//! protocol, the route mapping and what is not supported.
//!
//! One concern per file:
//! - [`package`]: the package layer (type, 24-bit length, body), stream and frame decoding.
//! - [`message`]: the message layer inside DATA packages (flag, id, route, body).
//! - [`protobuf`]: pomelo-protobuf encoding of push bodies that have a schema.
//! - [`handshake`]: the route dictionary and the handshake answer.
//! - [`link`]: a connection's single bounded outbound queue and its writer (the slow-consumer
//!   rule), where native push frames are turned into Pomelo pushes.
//! - [`routes`]: the chat demo's routes mapped onto roomcast's.
//! - [`conn`]: one connection: transport sniffing, the package state machine, heartbeats,
//!   requests, and the session's life in the core.

pub mod conn;
pub mod handshake;
pub mod link;
pub mod message;
pub mod package;
pub mod protobuf;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use crate::state::EdgeState;

/// The Pomelo listener's settings. It is off unless `--pomelo-listen` is given.
#[derive(Debug, Clone, Args)]
pub struct PomeloArgs {
    /// TCP address of the Pomelo listener (WebSocket and raw TCP on the same port); off if unset.
    #[arg(long, env = "ROOMCAST_POMELO_LISTEN")]
    pub pomelo_listen: Option<SocketAddr>,

    /// host:port the gate hands to Pomelo clients for this edge; defaults to the bound address.
    #[arg(long, env = "ROOMCAST_POMELO_ADVERTISE")]
    pub pomelo_advertise: Option<String>,

    /// Heartbeat interval sent to clients in the handshake (`sys.heartbeat`), in seconds.
    #[arg(long, env = "ROOMCAST_POMELO_HEARTBEAT_SECS", default_value_t = 10)]
    pub pomelo_heartbeat_secs: u64,

    /// Seconds without a client heartbeat before the connection is closed; 0 = twice the
    /// interval (as Pomelo).
    #[arg(
        long,
        env = "ROOMCAST_POMELO_HEARTBEAT_TIMEOUT_SECS",
        default_value_t = 0
    )]
    pub pomelo_heartbeat_timeout_secs: u64,

    /// Largest package body accepted from a client, in bytes.
    #[arg(long, env = "ROOMCAST_POMELO_MAX_PACKAGE", default_value_t = 64 * 1024)]
    pub pomelo_max_package: usize,

    /// Push schemas in pomelo-protobuf's `serverProtos.json` form; defaults to the chat demo's
    /// (`onChat`).
    #[arg(long, env = "ROOMCAST_POMELO_PROTOS")]
    pub pomelo_protos: Option<PathBuf>,
}

impl PomeloArgs {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.pomelo_heartbeat_secs.max(1))
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        match self.pomelo_heartbeat_timeout_secs {
            0 => self.heartbeat() * 2,
            s => Duration::from_secs(s),
        }
    }
}

/// What every Pomelo connection of this edge shares: the dictionary, the schemas, the
/// handshake answer (built once).
pub struct Shared {
    pub dict: handshake::Dict,
    pub protos: protobuf::Protos,
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    pub max_package: usize,
}

/// Binds the listener (if configured), records its advertised address for the registry and
/// spawns the accept loop. Returns the bound address.
pub async fn start(
    state: &Arc<EdgeState>,
) -> anyhow::Result<Option<(SocketAddr, tokio::task::JoinHandle<()>)>> {
    let args = state.cfg.pomelo.clone();
    let Some(listen) = args.pomelo_listen else {
        return Ok(None);
    };
    let source = match &args.pomelo_protos {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --pomelo-protos {}", path.display()))?,
        None => protobuf::CHAT_DEMO_SERVER_PROTOS.to_string(),
    };
    let protos = protobuf::Protos::parse(&source).map_err(|e| anyhow::anyhow!(e))?;
    let shared = Arc::new(Shared {
        dict: handshake::Dict::chat_demo(),
        protos,
        heartbeat: args.heartbeat(),
        heartbeat_timeout: args.heartbeat_timeout(),
        max_package: args.pomelo_max_package.min(package::MAX_BODY),
    });
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the Pomelo listener on {listen}"))?;
    let addr = listener.local_addr()?;
    let advertise = args.pomelo_advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    });
    let _ = state.pomelo_advertise.set(advertise);
    let state = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!("pomelo accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if state.session_count() >= state.cfg.max_sessions {
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            tokio::spawn(conn::serve(state.clone(), shared.clone(), tcp, peer));
        }
    });
    tracing::info!("pomelo listener on {addr}");
    Ok(Some((addr, task)))
}
