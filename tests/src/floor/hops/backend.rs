//! The multi-hop probe's backend: a bare quinn server (the backend's TLS and transport
//! configuration, mutual TLS) that answers each request, one bidirectional stream each, with
//! one `EVALSHA` of [`wire::SCRIPT`] on one multiplexed Redis connection. Nothing of roomcast:
//! no router, no session, no codec beyond [`wire`].

use std::sync::Arc;

use anyhow::Result;
use redis::aio::ConnectionManager;

use super::super::control::Shared;
use super::wire::{self, Request};

/// Serves until the process ends (stdin closed). `shared.connections` counts edges connected,
/// `shared.deliveries` requests answered.
pub fn serve(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    rooms: usize,
    redis_url: &str,
    shared: Arc<Shared>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let redis = super::redis_connection(redis_url).await?;
        let script = Arc::new(redis::Script::new(wire::SCRIPT));
        let endpoint = super::super::quinn_server::server_endpoint(socket, config)?;
        while let Some(incoming) = endpoint.accept().await {
            let (redis, script, shared) = (redis.clone(), script.clone(), shared.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                Shared::add(&shared.connections, 1);
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let (redis, script, shared) = (redis.clone(), script.clone(), shared.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(send, recv, rooms, redis, &script).await {
                            eprintln!("floor backend: {e:#}");
                        } else {
                            Shared::add(&shared.deliveries, 1);
                        }
                    });
                }
            });
        }
        Ok(())
    })
}

async fn answer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    rooms: usize,
    mut redis: ConnectionManager,
    script: &redis::Script,
) -> Result<()> {
    let req = recv.read_to_end(wire::MAX_REQUEST).await?;
    let Request::Send { room, frame } = wire::parse(&req, rooms)? else {
        anyhow::bail!("a backend takes messages only");
    };
    let seq = wire::push(script, &mut redis, room, frame).await?;
    send.write_all(&seq.to_le_bytes()).await?;
    send.finish()?;
    Ok(())
}
