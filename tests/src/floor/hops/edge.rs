//! The multi-hop probe's edge: a bare quinn server with the edge's client configuration. It
//! - answers each client request (one bidirectional stream each): a join opens the member's
//!   uni stream and hands it to the pusher; a message goes upstream, to the backend (a new
//!   bidirectional stream on the edge's one connection to it, `--path backend`) or straight to
//!   Redis (one `EVALSHA`, `--path direct`), and the seq comes back as the answer;
//! - holds one Redis pub/sub connection subscribed to every room's channel; one pusher task
//!   reads it and writes each published frame to the edge's members of that room, one
//!   `write_chunks` polled once per member, as the one-hop `quinn` server pushes.
//!
//! Bounds: a client has at most the edge's 9 requests open (QUIC's stream limit), joins wait in
//! a queue of `JOIN_QUEUE`, a member's stream holds at most the [`Backlog`]'s 64 frames.
//! Published frames the pusher has not read yet wait in redis-rs's pub/sub buffer, which the
//! probe does not bound (nor does roomcast's edge add a bound of its own there); the
//! senders' permits bound how many can be outstanding.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use roomcast_net::tls;
use roomcast_protocol::protocol::BACKEND_ALPN;
use tokio::sync::mpsc;

use super::super::control::Shared;
use super::super::frame::FRAME_BYTES;
use super::super::quinn_server::{push_to_room, Member};
use super::wire::{self, Request};

/// Joins waiting for the pusher: bounded; a join's answer waits for a slot.
const JOIN_QUEUE: usize = 1024;

/// Where a message goes from the edge.
#[derive(Clone)]
enum Upstream {
    /// The backend: one QUIC connection, a new bidirectional stream per request.
    Backend(quinn::Connection),
    /// Redis itself: the edge runs the script.
    Direct(ConnectionManager, Arc<redis::Script>),
}

/// The backend to forward to (`--path backend`): its address, and the CA and identity of the
/// mutual TLS between edge and backend.
pub struct BackendPeer<'a> {
    pub addr: SocketAddr,
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// Serves until the process ends (stdin closed). `shared.connections` counts the members the
/// pusher holds, `shared.deliveries` the frames handed to their streams.
pub fn serve(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    rooms: usize,
    redis_url: &str,
    backend: Option<BackendPeer<'_>>,
    shared: Arc<Shared>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = redis::Client::open(redis_url)?;
        let (mut sink, mut published) = client.get_async_pubsub().await?.split();
        let channels: Vec<String> = (0..rooms).map(wire::channel).collect();
        sink.subscribe(&channels).await?;
        // Held for the connection's life (its endpoint's socket and driver).
        let mut _backend_endpoint = None;
        let upstream = match backend {
            Some(peer) => {
                let (endpoint, conn) = connect_backend(&peer).await?;
                _backend_endpoint = Some(endpoint);
                Upstream::Backend(conn)
            }
            None => Upstream::Direct(
                super::redis_connection(redis_url).await?,
                Arc::new(redis::Script::new(wire::SCRIPT)),
            ),
        };
        let endpoint = super::super::quinn_server::server_endpoint(socket, config)?;
        let (join_tx, mut joins) = mpsc::channel::<(usize, Member)>(JOIN_QUEUE);
        let acceptor = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = acceptor.accept().await {
                let (upstream, join_tx) = (upstream.clone(), join_tx.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        let (conn, upstream, join_tx) =
                            (conn.clone(), upstream.clone(), join_tx.clone());
                        tokio::spawn(async move {
                            if let Err(e) =
                                request(conn, send, recv, rooms, upstream, join_tx).await
                            {
                                eprintln!("floor edge: {e:#}");
                            }
                        });
                    }
                });
            }
        });
        // The pusher: owns the members; reads joins and the room channels.
        let mut members: Vec<Vec<Member>> = (0..rooms).map(|_| Vec::new()).collect();
        loop {
            tokio::select! {
                j = joins.recv() => {
                    let Some((room, m)) = j else { bail!("the accept loop ended") };
                    members[room].push(m);
                    Shared::add(&shared.connections, 1);
                }
                msg = published.next() => {
                    let Some(msg) = msg else { bail!("the Redis pub/sub connection closed") };
                    let Some(room) = wire::room_of_channel(msg.get_channel_name())
                        .filter(|&r| r < rooms) else { continue };
                    let payload = msg.get_payload_bytes();
                    if payload.len() != FRAME_BYTES {
                        continue;
                    }
                    let f = Bytes::copy_from_slice(payload);
                    push_to_room(&mut members[room], f, &shared);
                }
            }
        }
    })
}

/// The edge's one connection to the backend, configured as roomcast's edge configures it
/// (edge/src/node.rs: mutual TLS, no streams accepted from the backend).
async fn connect_backend(peer: &BackendPeer<'_>) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let limits = tls::TransportLimits {
        max_bidi_streams: 0,
        max_uni_streams: 0,
        idle_timeout: std::time::Duration::from_secs(10),
        keep_alive: std::time::Duration::from_secs(2),
        early_data: false,
        mtu_discovery: true,
    };
    let config = tls::client_config(peer.ca, BACKEND_ALPN, &limits, Some((peer.cert, peer.key)))?;
    let endpoint = roomcast_net::net::endpoint(roomcast_net::net::any_addr_for(&peer.addr), None)?;
    let conn = endpoint
        .connect_with(config, peer.addr, "localhost")?
        .await
        .with_context(|| format!("connecting to the backend at {}", peer.addr))?;
    Ok((endpoint, conn))
}

async fn request(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    rooms: usize,
    upstream: Upstream,
    joins: mpsc::Sender<(usize, Member)>,
) -> Result<()> {
    let req = recv.read_to_end(wire::MAX_REQUEST).await?;
    match wire::parse(&req, rooms)? {
        Request::Join { room } => {
            let stream = conn.open_uni().await?;
            let member = Member::new(conn, stream);
            joins
                .send((room, member))
                .await
                .map_err(|_| anyhow::anyhow!("the pusher ended"))?;
            send.write_all(&[1]).await?;
        }
        Request::Send { room, frame } => {
            let seq = match upstream {
                Upstream::Backend(backend) => {
                    let (mut bsend, mut brecv) = backend.open_bi().await?;
                    bsend.write_all(&req).await?;
                    bsend.finish()?;
                    let answer = brecv.read_to_end(wire::MAX_ANSWER).await?;
                    wire::seq_of(&answer).context("the backend's answer is not a seq")?
                }
                Upstream::Direct(mut redis, script) => {
                    wire::push(&script, &mut redis, room, frame).await?
                }
            };
            send.write_all(&seq.to_le_bytes()).await?;
        }
    }
    send.finish()?;
    Ok(())
}
