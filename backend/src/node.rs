//! Configuration, start-up and shutdown of a backend process.
//!
//! [`start`] wires the pieces together (Redis store → QUIC endpoint → registry entry) and
//! returns a [`RunningBackend`]; [`run_cli`] is the `roomcast-chat` program around it. The
//! configuration is a clap `Args` struct so that other binaries (`roomcast-dev chat …`, or a
//! service of your own) can embed the same flags.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser};
use roomcast_common::config::{BackendTls, IdArgs, RedisArgs, RoomArgs, TlsArgs};
use roomcast_net::tls;
use roomcast_protocol::ids::{check_node_id, IdRules};
use roomcast_store::keys::Keys;
use roomcast_store::{BackendInfo, HistoryConfig, PresenceConfig, Settings, Store};
use tokio::task::JoinHandle;

use crate::channel::ChannelService;
use crate::chat;
use crate::handler::Router;
use crate::registry::Registration;
use crate::server::{BackendServer, ServerHandle};

/// How long start-up waits for Redis before giving up (covers Redis starting at the same
/// time as the backend, e.g. in a compose file).
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(30);
/// How long shutdown waits, after leaving the registry, for edges to drop their connections.
/// Edges re-read the registry every second and close connections to backends that left, so
/// requests they already sent here can finish instead of being cut.
const DRAIN_WAIT: Duration = Duration::from_secs(3);
/// How long closing the endpoint waits for peers to acknowledge.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A backend's configuration (flags, or environment variables where named).
#[derive(Debug, Clone, Args)]
pub struct BackendConfig {
    /// Unique backend id (1-64 of A-Z a-z 0-9 . _ -); defaults to `chat-<random hex>`.
    #[arg(long, env = "ROOMCAST_BACKEND_ID")]
    pub id: Option<String>,

    /// UDP address to listen on for edges (port 0: any free port).
    #[arg(long, env = "ROOMCAST_BACKEND_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// host:port registered for edges to connect to; defaults to the bound listen address
    /// (127.0.0.1 when listening on an unspecified address).
    #[arg(long, env = "ROOMCAST_BACKEND_ADVERTISE")]
    pub advertise: Option<String>,

    /// `--redis-url`, `--prefix` (shared with the edges: `roomcast_common::config`).
    #[command(flatten)]
    pub redis: RedisArgs,

    /// `--cert`, `--key`, `--ca`.
    #[command(flatten)]
    pub tls: TlsArgs<BackendTls>,

    /// `--history-len`, `--history-age-secs`, `--presence-max-members`: the same settings as
    /// the edges', applied by this backend's Redis scripts.
    #[command(flatten)]
    pub rooms: RoomArgs,

    /// `--max-id-bytes`, `--ascii-ids`: rules for room ids and uids handlers receive (the same
    /// flags as the edges').
    #[command(flatten)]
    pub ids: IdArgs,
}

impl BackendConfig {
    /// Rules for room ids and uids handlers receive.
    pub fn id_rules(&self) -> IdRules {
        self.ids.rules()
    }

    /// The settings every process of the deployment must share (checked at start-up).
    pub fn settings(&self) -> Settings {
        Settings {
            history: HistoryConfig {
                max_len: self.rooms.history_len,
                max_age: self.rooms.history_age(),
            },
            presence: PresenceConfig {
                max_members: self.rooms.presence_max_members,
            },
            ids: self.id_rules(),
        }
    }
}

/// A started backend: serving, and registered for edges.
pub struct RunningBackend {
    pub id: String,
    /// The bound edge-facing UDP address.
    pub addr: SocketAddr,
    /// The host:port in the registry.
    pub advertise: String,
    /// The presence limit its store applies to joins and leaves (`--presence-max-members`).
    pub presence: PresenceConfig,
    registration: Registration,
    server: ServerHandle,
    serving: JoinHandle<()>,
}

/// Starts a backend serving `router`: connects to Redis (retrying for up to 30 s), binds the
/// endpoint, and registers for the route prefixes of `router` ([`Router::prefixes`]: a router
/// with `chat.send` registers `chat.`, so edges forward every `chat.*` route here).
pub async fn start(cfg: BackendConfig, router: Router) -> anyhow::Result<RunningBackend> {
    let (url, prefix) = (&cfg.redis.redis_url, &cfg.redis.prefix);
    check_node_id(prefix).map_err(|e| anyhow!("bad --prefix: {e}"))?;
    let store = Store::connect_retrying(url, Keys::new(prefix), REDIS_STARTUP_WAIT)
        .await
        .with_context(|| format!("cannot connect to redis at {url}"))?;
    start_with_store(cfg, router, store).await
}

/// [`start`] on `store` (any engine, e.g. [`Store::memory`] shared with edges in the same
/// process). The shared settings are checked against the store's first: a mismatch fails.
pub async fn start_with_store(
    cfg: BackendConfig,
    router: Router,
    store: Store,
) -> anyhow::Result<RunningBackend> {
    tls::install_crypto_provider();
    let id = match cfg.id.clone() {
        Some(id) => id,
        None => format!("chat-{:08x}", random_u32()),
    };
    check_node_id(&id).map_err(|e| anyhow!("bad --id: {e}"))?;
    if let Some(a) = &cfg.advertise {
        check_host_port(a).map_err(|e| anyhow!("bad --advertise: {e}"))?;
    }
    let routes = router.prefixes();
    if routes.is_empty() {
        bail!("the router has no routes: nothing to serve");
    }

    let settings = cfg.settings();
    let store = store
        .with_history(settings.history)
        .with_presence(settings.presence);
    store
        .check_settings(&settings)
        .await
        .context("this backend's settings differ from the deployment's")?;

    let server = BackendServer::bind(
        cfg.listen,
        &cfg.tls.cert,
        &cfg.tls.key,
        // Mutual TLS: only edges (certificates from the cluster CA) may connect.
        Some(&cfg.tls.ca),
        router,
        ChannelService::new(store.clone()),
    )?;
    let addr = server.local_addr()?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    });
    let handle = server.handle();
    // Serve before registering, so the first edge to find the entry gets answers.
    let serving = tokio::spawn(server.run());
    let info = BackendInfo {
        id: id.clone(),
        addr: advertise.clone(),
        routes,
    };
    let registration = match Registration::start(store, info).await {
        Ok(r) => r,
        Err(e) => {
            handle.close(Duration::ZERO).await;
            serving.abort();
            return Err(anyhow!(e).context("cannot register the backend in redis"));
        }
    };
    tracing::info!(
        "backend {id} listening on {addr} (registered as {advertise} for {:?})",
        registration.info().routes
    );
    Ok(RunningBackend {
        id,
        addr,
        advertise,
        presence: settings.presence,
        registration,
        server: handle,
        serving,
    })
}

impl RunningBackend {
    /// Leaves the registry (edges stop choosing it at their next read), waits up to 3 s for
    /// edges to drop their connections, then closes the endpoint.
    pub async fn shutdown(self) {
        self.registration.stop().await;
        let started = Instant::now();
        while self.server.open_connections() > 0 && started.elapsed() < DRAIN_WAIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.server.close(CLOSE_WAIT).await;
        self.serving.abort();
        let _ = self.serving.await;
    }

    /// Serves until the endpoint closes, which a running backend never does by itself: this
    /// runs until the process ends. Use [`RunningBackend::shutdown`] to stop cleanly.
    pub async fn wait(self) {
        let _ = self.serving.await;
    }
}

/// Checks a `host:port` (host non-empty, port 1-65535).
fn check_host_port(s: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` is not host:port"));
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{s}` has no valid port (1-65535)")),
    }
}

/// 32 random bits from the standard library's per-process random hasher keys (no `rand`
/// dependency needed for a default id).
fn random_u32() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// `roomcast-chat`'s command line.
#[derive(Parser)]
#[command(name = "roomcast-chat", about = "roomcast chat backend")]
struct Cli {
    #[command(flatten)]
    cfg: BackendConfig,
    #[command(flatten)]
    chat: chat::ChatArgs,
}

/// Parses `args` (the first is the program name), runs the chat service until Ctrl-C or
/// SIGTERM, then shuts down cleanly. Prints `roomcast-chat <id> listening on <addr>` to stdout
/// once ready (scripts and tests wait for that line). `--help` and argument errors print
/// clap's usage and exit the process, as any command-line program does.
pub async fn run_cli(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let router = chat::router_with(cli.chat.limits(cli.cfg.id_rules()));
    let backend = start(cli.cfg, router).await?;
    println!("roomcast-chat {} listening on {}", backend.id, backend.addr);
    wait_for_signal().await;
    tracing::info!(backend = %backend.id, "shutting down");
    backend.shutdown().await;
    Ok(())
}

/// Returns on Ctrl-C or (on Unix) SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("roomcast-chat").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]).expect("defaults parse");
        assert_eq!(cli.cfg.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cli.cfg.redis.prefix, "rc");
        assert_eq!(cli.cfg.tls.cert, PathBuf::from("certs/backend.pem"));
        assert_eq!(cli.cfg.tls.key, PathBuf::from("certs/backend.key"));
        assert_eq!(cli.cfg.rooms.presence_max_members, 1000);
        assert_eq!(
            cli.chat.limits(cli.cfg.id_rules()),
            chat::ChatLimits::default()
        );
    }

    #[test]
    fn flags_parse() {
        let cli = parse(&[
            "--id",
            "chat-7",
            "--listen",
            "0.0.0.0:7000",
            "--advertise",
            "chat7.internal:7000",
            "--max-id-bytes",
            "16",
            "--ascii-ids",
            "--presence-max-members",
            "2",
        ])
        .expect("parses");
        assert_eq!(cli.cfg.rooms.presence_max_members, 2);
        assert_eq!(cli.cfg.id.as_deref(), Some("chat-7"));
        assert_eq!(cli.cfg.advertise.as_deref(), Some("chat7.internal:7000"));
        let limits = cli.chat.limits(cli.cfg.id_rules());
        assert!(limits.ids.ascii_only);
        assert_eq!(limits.ids.max_bytes, 16);
        assert!(cli.cfg.settings().ids.ascii_only);
        assert!(parse(&["--listen", "nonsense"]).is_err());
    }

    /// README promises an environment variable for every flag.
    #[test]
    fn every_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let missing: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_env().is_none() && a.get_id() != "help")
            .map(|a| format!("--{}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "flags without env: {missing:?}");
    }

    #[test]
    fn advertise_must_be_host_port() {
        assert!(check_host_port("10.0.0.5:7000").is_ok());
        assert!(check_host_port("[::1]:7000").is_ok());
        assert!(check_host_port("chat.internal").is_err());
        assert!(check_host_port(":7000").is_err());
        assert!(check_host_port("h:0").is_err());
        assert!(check_host_port("h:99999").is_err());
    }

    #[test]
    fn default_ids_are_valid_node_ids() {
        let id = format!("chat-{:08x}", random_u32());
        assert!(check_node_id(&id).is_ok());
    }
}
