//! Configuration, start-up and shutdown of a backend process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::{Args, Parser};
use quinn::{Endpoint, VarInt};
use roomcast_common::ids::check_node_id;
use roomcast_common::keys::Keys;
use roomcast_common::protocol::BACKEND_ALPN;
use roomcast_common::store::{BackendInfo, Store};
use roomcast_common::tls::{self, TransportLimits};
use tokio::task::JoinHandle;

use crate::channel::ChannelService;
use crate::handler::Router;
use crate::{chat, registry, server};

/// How long start-up waits for Redis before giving up.
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct BackendConfig {
    /// Unique backend id (A-Z a-z 0-9 . _ -); defaults to `chat-<random>`.
    #[arg(long, env = "ROOMCAST_BACKEND_ID")]
    pub id: Option<String>,

    /// UDP address edges connect to.
    #[arg(long, env = "ROOMCAST_BACKEND_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// host:port registered for edges; defaults to the bound listen address.
    #[arg(long, env = "ROOMCAST_BACKEND_ADVERTISE")]
    pub advertise: Option<String>,

    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "ROOMCAST_PREFIX", default_value = "rc")]
    pub prefix: String,

    /// Certificate presented to edges (signed by the cluster CA).
    #[arg(
        long,
        env = "ROOMCAST_BACKEND_CERT",
        default_value = "certs/backend.pem"
    )]
    pub cert: PathBuf,

    #[arg(
        long,
        env = "ROOMCAST_BACKEND_KEY",
        default_value = "certs/backend.key"
    )]
    pub key: PathBuf,

    /// The cluster CA: edges must present a certificate it signed (mutual TLS).
    #[arg(long, env = "ROOMCAST_CA", default_value = "certs/ca.pem")]
    pub ca: PathBuf,

    /// Longest chat message content, in bytes.
    #[arg(long, default_value_t = chat::MAX_CONTENT_BYTES)]
    pub max_content_bytes: usize,

    /// Longest room id or target uid, in bytes (should match the edges').
    #[arg(long, default_value_t = roomcast_common::ids::MAX_ID_BYTES)]
    pub max_id_bytes: usize,

    /// Accept only printable ASCII in ids (should match the edges').
    #[arg(long)]
    pub ascii_ids: bool,

    /// Pushes kept per room for resume and gap filling (must match the edges').
    #[arg(long, env = "ROOMCAST_HISTORY_LEN", default_value_t = 1000)]
    pub history_len: u64,

    /// Seconds a push stays in a room's history (must match the edges').
    #[arg(long, env = "ROOMCAST_HISTORY_AGE_SECS", default_value_t = 300)]
    pub history_age_secs: u64,
}

pub struct RunningBackend {
    pub id: String,
    /// The bound edge-facing UDP address.
    pub addr: SocketAddr,
    store: Store,
    endpoint: Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts a backend serving `router`, registered for the route prefixes `routes`.
pub async fn start(
    cfg: BackendConfig,
    router: Router,
    routes: Vec<String>,
) -> anyhow::Result<RunningBackend> {
    tls::install_crypto_provider();
    let id = cfg
        .id
        .clone()
        .unwrap_or_else(|| format!("chat-{:06x}", rand_id()));
    check_node_id(&id).map_err(|e| anyhow!(e))?;
    check_node_id(&cfg.prefix).map_err(|e| anyhow!("bad --prefix: {e}"))?;
    let store = Store::connect_retrying(&cfg.redis_url, Keys::new(&cfg.prefix), REDIS_STARTUP_WAIT)
        .await
        .with_context(|| format!("cannot connect to redis at {}", cfg.redis_url))?
        .with_history(roomcast_common::store::HistoryConfig {
            max_len: cfg.history_len,
            max_age: Duration::from_secs(cfg.history_age_secs),
        });
    let limits = TransportLimits {
        max_bidi_streams: 1024,
        max_uni_streams: 0,
        idle_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(2),
        early_data: false,
    };
    let server_config = tls::server_config(
        &cfg.cert,
        &cfg.key,
        BACKEND_ALPN,
        &limits,
        // Mutual TLS: only edges (certificates from the cluster CA) may connect.
        Some(&cfg.ca),
    )?;
    let endpoint = Endpoint::server(server_config, cfg.listen)
        .with_context(|| format!("cannot bind {}", cfg.listen))?;
    let addr = endpoint.local_addr()?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    });
    let info = BackendInfo {
        id: id.clone(),
        addr: advertise,
        routes,
    };
    store
        .register_backend(&info, registry::TTL)
        .await
        .context("cannot register the backend in redis")?;
    let channels = ChannelService::new(store.clone());
    let tasks = vec![
        tokio::spawn(server::serve(endpoint.clone(), Arc::new(router), channels)),
        tokio::spawn(registry::run(store.clone(), info)),
    ];
    tracing::info!("backend {id} listening on {addr}");
    Ok(RunningBackend {
        id,
        addr,
        store,
        endpoint,
        tasks,
    })
}

fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id().rotate_left(13)) & 0xff_ffff
}

impl RunningBackend {
    /// Leaves the registry (edges stop choosing it at their next refresh), then closes.
    pub async fn shutdown(self) {
        if let Err(e) = self.store.unregister_backend(&self.id).await {
            tracing::warn!("could not unregister backend {}: {e}", self.id);
        }
        // Let edges notice before in-flight requests are cut.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        self.endpoint
            .close(VarInt::from_u32(0), b"backend shutting down");
        for t in &self.tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Runs until the process is killed.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[derive(Parser)]
#[command(name = "roomcast-chat", about = "roomcast chat backend")]
struct Cli {
    #[command(flatten)]
    cfg: BackendConfig,
}

/// Parses `args` (the first is the program name), runs the chat service until Ctrl-C or
/// SIGTERM, then shuts down. Prints `roomcast-chat <id> listening on <addr>` once ready.
pub async fn run_cli(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let limits = chat::ChatLimits {
        max_content_bytes: cli.cfg.max_content_bytes,
        ids: roomcast_common::ids::IdRules {
            max_bytes: cli.cfg.max_id_bytes,
            ascii_only: cli.cfg.ascii_ids,
        },
    };
    let backend = start(cli.cfg, chat::router_with(limits), chat::route_prefixes()).await?;
    println!("roomcast-chat {} listening on {}", backend.id, backend.addr);
    wait_for_signal().await;
    tracing::info!("backend {} shutting down", backend.id);
    backend.shutdown().await;
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
