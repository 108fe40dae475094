//! Wiring of a running edge: start every task, run until a signal, shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use quinn::{Endpoint, VarInt};
use roomcast_common::auth::{Minter, Verifier};
use roomcast_net::net;
use roomcast_net::tls::{self, TransportLimits};
use roomcast_protocol::ids::check_node_id;
use roomcast_protocol::protocol::{close, BACKEND_ALPN, CLIENT_ALPN};
use roomcast_store::keys::Keys;
use roomcast_store::Store;
use tokio::task::JoinHandle;

use crate::backends::BackendPool;
use crate::config::EdgeConfig;
use crate::fanout::with_core;
use crate::local::LocalRoutes;
use crate::state::EdgeState;
use crate::{bus, reaper, registry, session, webtransport};

/// How long start-up waits for Redis before giving up.
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(30);

/// The token verifier (and, in development mode, the minter) from the configuration.
fn auth_config(cfg: &EdgeConfig) -> anyhow::Result<(Verifier, Option<Minter>)> {
    let verifier = match (&cfg.jwt_public_key, &cfg.jwt_secret) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --jwt-public-key {}", path.display()))?;
            Verifier::public_key(&cfg.jwt_alg, &pem).map_err(|e| anyhow!(e))?
        }
        (None, Some(secret)) if !secret.is_empty() => Verifier::hs256(secret.as_bytes()),
        _ => anyhow::bail!(
            "no client token verification configured: pass --jwt-secret (HS256) or \
             --jwt-public-key with --jwt-alg (RS256/ES256); for development add --dev-tokens"
        ),
    };
    let minter = if cfg.dev_tokens {
        let secret = cfg
            .jwt_secret
            .as_deref()
            .filter(|s| !s.is_empty() && cfg.jwt_public_key.is_none())
            .ok_or_else(|| {
                anyhow!(
                    "--dev-tokens needs --jwt-secret (the same on every edge) and no public key"
                )
            })?;
        tracing::warn!(
            "DEVELOPMENT MODE: --dev-tokens is on; the gate mints tokens for any username. \
             Never enable this in production."
        );
        Some(Minter::hs256(secret.as_bytes()))
    } else {
        None
    };
    Ok((verifier, minter))
}

pub struct RunningEdge {
    pub id: String,
    /// The bound client-facing UDP address.
    pub addr: SocketAddr,
    /// What the gate hands out for this edge.
    pub advertise: String,
    /// The bound Pomelo listener (WebSocket and TCP), if configured.
    pub pomelo: Option<SocketAddr>,
    state: Arc<EdgeState>,
    endpoint: Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts an edge on the Redis store at `--redis-url`: Redis, pub/sub, registry, then the
/// client endpoint.
pub async fn start(cfg: EdgeConfig) -> anyhow::Result<RunningEdge> {
    let (url, prefix) = (&cfg.redis.redis_url, &cfg.redis.prefix);
    check_node_id(prefix).map_err(|e| anyhow!("bad --prefix: {e}"))?;
    let store = Store::connect_retrying(url, Keys::new(prefix), REDIS_STARTUP_WAIT)
        .await
        .with_context(|| format!("cannot connect to redis at {url}"))?;
    start_with_store(cfg, store).await
}

/// Starts an edge on `store` (any engine, e.g. [`Store::memory`] shared with a chat service
/// in the same process). The store's history and presence bounds are set from `cfg`, and the
/// shared settings are checked against the store's (start-up fails on a mismatch).
pub async fn start_with_store(cfg: EdgeConfig, store: Store) -> anyhow::Result<RunningEdge> {
    tls::install_crypto_provider();
    let id = cfg
        .id
        .clone()
        .unwrap_or_else(|| format!("edge-{:06x}", rand::random::<u32>() & 0xff_ffff));
    check_node_id(&id).map_err(|e| anyhow!(e))?;
    let local = LocalRoutes::new(
        cfg.local_prefixes(),
        cfg.chat_limits(),
        cfg.backend_deadline(),
    )
    .map_err(|e| anyhow!(e))?;
    if !local.prefixes().is_empty() {
        tracing::info!(
            "serving routes {:?} in this process (--local-routes), not on backends",
            local.prefixes()
        );
    }
    let presence = roomcast_store::PresenceConfig {
        max_members: cfg.rooms.presence_max_members,
    };
    let store = store.with_history(cfg.history()).with_presence(presence);
    store
        .check_settings(&roomcast_store::Settings {
            history: cfg.history(),
            presence,
            ids: cfg.id_rules(),
        })
        .await
        .context("this edge's settings differ from the deployment's")?;

    let client_limits = TransportLimits {
        // +1 for the control stream.
        max_bidi_streams: cfg.max_requests_in_flight + 1,
        // HTTP/3 needs 3 (webtransport.rs); it must be in the handshake's transport parameters
        // (a browser's 0-RTT refuses a limit lower than the one it remembers).
        max_uni_streams: if cfg.webtransport.no_webtransport {
            0
        } else {
            webtransport::H3_UNI_STREAMS
        },
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        keep_alive: Duration::from_secs(5),
        // Only `Hello` and `gate.queryEntry` are served from early data (session.rs).
        early_data: true,
        // Pushes and answers are small frames (chat content <= 4096 bytes): 1200-byte packets
        // cost them little, and each idle connection saves 1.2 KiB of send buffer.
        mtu_discovery: false,
    };
    let (cert, key) = (&cfg.tls.cert, &cfg.tls.key);
    let (server_config, webtransport) = if cfg.webtransport.no_webtransport {
        let c = tls::server_config(cert, key, CLIENT_ALPN, &client_limits, None)?;
        (c, None)
    } else {
        let (c, a) = webtransport::server_config(cert, key, &cfg.webtransport, &client_limits)?;
        (c, Some(a))
    };
    // Batching (if on) only here: fan-out leaves through this socket. The backend endpoint
    // below carries a few request connections, which would gain nothing but the flusher's hop.
    let batching = if cfg.udp_send_batching.is_on() {
        net::SendBatching::On
    } else {
        net::SendBatching::Off
    };
    let endpoint = net::endpoint_with(cfg.listen, Some(server_config), batching)?;
    if batching == net::SendBatching::On {
        tracing::info!("UDP sends to clients batched (sendmmsg)");
    }
    let addr = endpoint.local_addr()?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            tracing::warn!(
                "listening on {addr} without --advertise; the gate will hand out 127.0.0.1"
            );
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    });

    let backend_limits = TransportLimits {
        max_bidi_streams: 0,
        max_uni_streams: 0,
        idle_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(2),
        early_data: false,
        mtu_discovery: true,
    };
    let backend_config = tls::client_config(
        &cfg.tls.ca,
        BACKEND_ALPN,
        &backend_limits,
        // Mutual TLS: backends accept only peers with a certificate from the cluster CA.
        Some((cert, key)),
    )?;
    let backend_endpoint = net::endpoint(net::any_addr_for(&addr), None)?;
    let pool = BackendPool::new(
        backend_endpoint,
        backend_config,
        cfg.backend_attempt(),
        cfg.backend_deadline(),
    );
    let auth = auth_config(&cfg)?;
    let state = Arc::new(EdgeState::new(
        id.clone(),
        cfg,
        advertise.clone(),
        store,
        pool,
        local,
        auth,
    ));
    if let Some(w) = webtransport {
        let _ = state.webtransport.set(w);
    }

    let mut tasks = Vec::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tasks.push(tokio::spawn(bus::run(state.clone(), ready_tx)));
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| anyhow!("the bus subscription did not come up within 10s"))?
        .map_err(|_| anyhow!("bus task ended"))?;
    // Members a previous run of this edge id left behind (it was killed) are stale. A store
    // that just lost its state refuses their onLeave pushes for its recovery window: wait that
    // out instead of failing to start (an edge restarted right after Redis was, seen under
    // chaos).
    let patience = Instant::now() + roomcast_store::RECOVERY_WINDOW * 2;
    let (rooms, members) = loop {
        match reaper::reap(&state, &id).await {
            Err(roomcast_store::StoreError::Recovering) if Instant::now() < patience => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => break r.context("cannot clean up after a previous run of this edge")?,
        }
    };
    if members > 0 {
        tracing::info!("removed {members} stale members from {rooms} rooms left by a previous run");
    }
    // Before the first registration, so the gate hands out its address from the start.
    let pomelo = crate::pomelo::start(&state).await?.map(|(addr, task)| {
        tasks.push(task);
        addr
    });
    registry::refresh_once(&state)
        .await
        .context("cannot register the edge in redis")?;
    tasks.push(tokio::spawn(registry::run(state.clone())));
    tasks.push(tokio::spawn(reaper::run(state.clone())));
    tasks.push(tokio::spawn(session::run_timer(state.clone())));
    let accept_state = state.clone();
    let accept_endpoint = endpoint.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(incoming) = accept_endpoint.accept().await {
            let sessions = accept_state.session_count();
            if sessions >= accept_state.cfg.max_sessions {
                // Cheap for a full edge: no handshake; the client tries elsewhere.
                incoming.refuse();
                continue;
            }
            // A draining edge still accepts: such a connection is gate-only (the core refuses
            // its logins), so a client whose only gate is this edge learns where to go.
            tokio::spawn(session::serve(accept_state.clone(), incoming));
        }
    }));
    tracing::info!("edge {id} listening on {addr}, advertised as {advertise}");
    Ok(RunningEdge {
        id,
        addr,
        advertise,
        pomelo,
        state,
        endpoint,
        tasks,
    })
}

impl RunningEdge {
    /// Resolves when an admin asked this edge to drain (`roomcast-edge drain --id <id>`).
    pub async fn drain_requested(&self) {
        self.state.drain_requested.notified().await;
    }

    /// Number of open client sessions.
    pub fn sessions(&self) -> usize {
        self.state.session_count()
    }

    /// Drains, then stops: the gate stops choosing this edge, every client is told to move
    /// (connection closed with code 3 and a reason; the SDK reconnects through the gate and
    /// resumes), and the edge waits up to `--drain-secs` for them to resume elsewhere. Members
    /// who did not resume in time then leave their rooms (onLeave), and the edge's lease is
    /// removed.
    pub async fn shutdown(self) {
        let state = &self.state;
        state.cell().core.start_draining();
        if let Err(e) = registry::refresh_once(state).await {
            tracing::warn!("could not mark edge {} as draining: {e}", self.id);
        }
        // Let every gate's cache (refreshed each second) see the draining flag first.
        tokio::time::sleep(crate::config::REGISTRY_REFRESH + Duration::from_millis(200)).await;
        // Every session is closed with code 3; each detaches (keeping its rooms) once its task
        // notices, and the core's drain deadline ends the detached ones that did not resume
        // elsewhere (the timer task makes them leave).
        with_core(state, |c, out| c.drain(std::time::Instant::now(), out));
        state.timer.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(state.cfg.drain_secs);
        let mut round = 0u32;
        loop {
            if state.cell().core.drained() {
                break;
            }
            // Kicks from the edges the clients resumed on end detached sessions; asking the
            // store as well covers a kick lost on the bus.
            if round % 5 == 4 {
                session::check_detached(state).await;
            }
            // After the deadline, give the claim checks and leaves a moment to run.
            if tokio::time::Instant::now() >= deadline + Duration::from_secs(2) {
                break;
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = state.store.unregister_edge(&self.id).await {
            tracing::warn!("could not unregister edge {}: {e}", self.id);
        }
        if let Err(e) = reaper::reap(state, &self.id).await {
            tracing::warn!("could not clean up edge {}: {e}", self.id);
        }
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint
            .close(VarInt::from_u32(close::SHUTDOWN), b"edge shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

#[derive(Parser)]
#[command(
    name = "roomcast-edge",
    about = "roomcast edge: QUIC front door for clients"
)]
struct Cli {
    #[command(flatten)]
    cfg: EdgeConfig,
}

/// Parses `args` (the first is the program name), runs until Ctrl-C or SIGTERM, shuts down.
/// Prints `roomcast-edge <id> listening on <addr>` on stdout once ready (preceded by
/// `roomcast-edge <id> pomelo on <addr>` when the Pomelo listener runs).
pub async fn run_cli(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args: Vec<String> = args.into_iter().collect();
    if args.get(1).map(String::as_str) == Some("drain") {
        return drain_cli(&args[1..]).await;
    }
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let edge = start(cli.cfg).await?;
    // Before the `listening on` line, which tells a supervisor the edge is ready.
    if let Some(p) = edge.pomelo {
        println!("roomcast-edge {} pomelo on {p}", edge.id);
    }
    println!("roomcast-edge {} listening on {}", edge.id, edge.addr);
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = edge.drain_requested() => {}
    }
    tracing::info!("edge {} shutting down", edge.id);
    edge.shutdown().await;
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "roomcast-edge drain",
    about = "Ask a running edge to drain: its clients move to other edges, then it exits"
)]
struct DrainCli {
    /// The edge to drain.
    #[arg(long)]
    id: String,
    #[command(flatten)]
    redis: roomcast_common::config::RedisArgs,
    /// Logged by the edge.
    #[arg(long, default_value = "admin request")]
    reason: String,
}

/// `roomcast-edge drain --id <edge>`: publishes a drain request on the edge's channel.
async fn drain_cli(args: &[String]) -> anyhow::Result<()> {
    let cli = DrainCli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    check_node_id(&cli.id).map_err(|e| anyhow!(e))?;
    let store = Store::connect(&cli.redis.redis_url, Keys::new(&cli.redis.prefix))
        .await
        .with_context(|| format!("cannot connect to redis at {}", cli.redis.redis_url))?;
    let msg = roomcast_protocol::bus::BusMessage::Drain { reason: cli.reason };
    let receivers = store.publish_to_edge(&cli.id, &msg).await?;
    if receivers == 0 {
        anyhow::bail!(
            "edge {} is not running (nothing listens on its channel)",
            cli.id
        );
    }
    println!("asked edge {} to drain", cli.id);
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
