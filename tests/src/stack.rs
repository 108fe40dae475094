//! `roomcast-dev up`: Redis, two edges and one chat backend on this machine, in one command.
//!
//! **Redis-free mode** (`memory`): with `--memory`, or when neither `REDIS_URL` nor a
//! `redis-server` program is available, the edges and the chat service run inside this one
//! process on the in-memory store engine instead (state is lost at exit; one process only).
//!
//! Stopping: SIGINT (Ctrl-C), SIGTERM (`kill <pid>`) and SIGHUP (terminal closed) all stop every
//! child: the nodes get SIGTERM together (edges drain, bounded by `--drain-secs` =
//! [`EDGE_DRAIN_SECS`]) and are killed if still running after [`STOP_GRACE`]; then the private
//! redis-server is killed. If the stack itself dies hard (`kill -9`), the kernel sends each child
//! SIGTERM (`PR_SET_PDEATHSIG`, see [`crate::child`]), so no child outlives it either way.
//! Once ready the stack prints every child's pid (`pid N`), so they can be checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::cluster::{Certs, ClusterConfig, Node};
use crate::redis_server::RedisServer;
use crate::web::{PageConfig, WebServer};

/// How long an edge of the dev stack waits for its clients to move when stopped: every edge
/// stops at once, so there is nowhere to move to and a long wait would only delay the exit.
pub const EDGE_DRAIN_SECS: u64 = 2;
/// How long the nodes get, together, to exit after SIGTERM before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// Number of edges; they listen on consecutive UDP ports from --first-port.
    #[arg(long, default_value_t = 2)]
    pub edges: usize,
    #[arg(long, default_value_t = 7001)]
    pub first_port: u16,
    /// Where development certificates are read from (generated if missing).
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
    /// Redis to use; when unset, a private redis-server is started on a free port.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    #[arg(long, default_value = "rc")]
    pub prefix: String,
    /// Run without Redis: the edges and the chat service in this one process, on the in-memory
    /// engine (state is lost at exit). Chosen by itself when neither `REDIS_URL` nor
    /// `redis-server` is available. Wins over `REDIS_URL`.
    #[arg(long, env = "ROOMCAST_MEMORY")]
    pub memory: bool,
    /// TCP port of the chat page on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 7080)]
    pub web_port: u16,
}

/// Runs the stack until SIGINT, SIGTERM or SIGHUP. `bin` is this very binary (nodes are its
/// subcommands).
pub fn run(bin: &Path, args: StackArgs) -> Result<()> {
    // A worker thread, so signals are noticed while the main thread starts the children (which
    // it must do itself: `PR_SET_PDEATHSIG` follows the spawning thread).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Handlers first: a signal during start-up must also stop what was already started.
    let mut signals = {
        let _guard = rt.enter();
        let mut signals = StopSignals::new()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            let _ = tx.send(signals.recv().await);
        });
        rx
    };
    if args.memory {
        return crate::memory::run(rt, signals, &args);
    }
    let mut own_redis = None;
    // An empty REDIS_URL (e.g. `REDIS_URL= cargo stack`) means "none", not a URL.
    let redis_url = match args.redis_url.as_ref().filter(|u| !u.trim().is_empty()) {
        Some(url) => url.clone(),
        None => match RedisServer::start() {
            Ok(r) => {
                let url = r.url();
                own_redis = Some(r);
                url
            }
            Err(e) if crate::redis_server::is_not_found(&e) => {
                println!(
                    "redis-server not found and REDIS_URL unset: running the Redis-free mode \
                     (edges and chat service in this one process, in memory; state is lost at \
                     exit, no other process can join)"
                );
                return crate::memory::run(rt, signals, &args);
            }
            Err(e) => return Err(e.context("cannot start redis-server")),
        },
    };
    let certs = Certs::ensure(&args.certs)
        .with_context(|| format!("cannot prepare certificates in {}", args.certs.display()))?;
    // Browsers: a fresh short-lived self-signed certificate, pinned by hash (crate::web).
    let (wt_cert, wt_key) =
        roomcast_certs::generate_webtransport(&args.certs, &roomcast_certs::default_hosts())?;
    let (wt_cert_arg, wt_key_arg) = (wt_cert.display().to_string(), wt_key.display().to_string());
    let cluster = ClusterConfig {
        bin: bin.to_path_buf(),
        redis_url: redis_url.clone(),
        prefix: args.prefix.clone(),
        certs: certs.clone(),
        // A fresh secret per run; the gate mints tokens so the CLI works without one.
        jwt_secret: format!("dev-{:016x}", random_u64()),
        dev_tokens: true,
    };
    let mut nodes: Vec<Node> = Vec::new();
    let drain = EDGE_DRAIN_SECS.to_string();
    // Started one by one; a signal meanwhile is noticed between two starts.
    let stopped = (|| -> Result<Option<&'static str>> {
        nodes.push(cluster.chat("chat-1", &[])?);
        for i in 0..args.edges {
            if let Ok(sig) = signals.try_recv() {
                return Ok(Some(sig));
            }
            let port = args
                .first_port
                .checked_add(i as u16)
                .context("--first-port + --edges exceeds 65535")?;
            let listen = format!("127.0.0.1:{port}");
            let flags = dev_edge_flags(&drain, (&wt_cert_arg, &wt_key_arg), &listen);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            nodes.push(cluster.edge_on(&format!("edge-{}", i + 1), &listen, &flags)?);
        }
        Ok(signals.try_recv().ok())
    })();
    let stopped = match stopped {
        Ok(s) => s,
        Err(e) => {
            stop(&mut nodes, own_redis);
            return Err(e);
        }
    };
    if let Some(sig) = stopped {
        println!("{sig} received during start-up: stopping…");
        stop(&mut nodes, own_redis);
        return Ok(());
    }
    // Every edge is a gate: the CLI gets them all, so one edge stopping is not its only way in.
    let gate = nodes
        .iter()
        .filter(|n| n.role == crate::cluster::Role::Edge)
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let edge_addrs: Vec<_> = nodes
        .iter()
        .filter(|n| n.role == crate::cluster::Role::Edge)
        .map(|n| n.addr)
        .collect();
    let web = PageConfig::for_edges(&edge_addrs, &wt_cert).and_then(|page| {
        rt.block_on(WebServer::start(
            std::net::SocketAddr::from(([127, 0, 0, 1], args.web_port)),
            page,
        ))
    });
    let web = match web {
        Ok(w) => w,
        Err(e) => {
            stop(&mut nodes, own_redis);
            return Err(e);
        }
    };
    let redis_port = redis_url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("6379")
        .to_string();
    println!();
    println!("roomcast is up:");
    match &own_redis {
        Some(r) => println!(
            "  redis    {redis_url} (key prefix `{}`) pid {}",
            args.prefix,
            r.pid()
        ),
        None => println!("  redis    {redis_url} (key prefix `{}`)", args.prefix),
    }
    for n in &nodes {
        println!(
            "  {:<8} {:<8} {:<21} pid {}",
            format!("{:?}", n.role).to_lowercase(),
            n.id,
            n.addr,
            n.pid()
        );
        if let Some(p) = n.pomelo {
            println!(
                "  {:<8} {:<8} {:<21} (Pomelo clients: ws://{p} or tcp)",
                "pomelo", n.id, p
            );
        }
    }
    println!();
    println!("Chat in a browser (Chrome/Edge 97+, Firefox 114+; WebTransport):");
    println!("  {}", web.url());
    println!();
    print_chat_commands(&gate, &certs.ca);
    println!();
    println!("Inspect the room:");
    println!("  redis-cli -p {redis_port} HGETALL 'rc:room:{{lobby}}:members'");
    println!();
    println!("Ctrl-C (or SIGTERM, SIGHUP) stops everything.");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let sig = rt.block_on(&mut signals).unwrap_or("signal");
    println!("{sig} received: stopping…");
    stop(&mut nodes, own_redis);
    Ok(())
}

/// How to chat with the stack (the same in both modes).
pub(crate) fn print_chat_commands(gate: &str, ca: &Path) {
    println!("Chat from two terminals:");
    for user in ["alice", "bob"] {
        println!(
            "  cargo run --release -p roomcast-client --bin roomcast -- chat --gate {gate} --ca {} --user {user} --room lobby",
            ca.display()
        );
    }
    println!();
    println!("Development mode: the gate hands out a token for any username (--dev-tokens).");
}

/// Two consecutive port numbers free for both UDP (the edges' QUIC) and TCP (their Pomelo
/// listeners, on the same numbers) on loopback, for `--first-port` of a two-edge stack in tests
/// (another process may still take one before the stack binds it; tests then fail loudly).
pub fn free_port_pair() -> Result<u16> {
    let free = |port: u16| {
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    };
    for _ in 0..100 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        drop(a);
        if port < u16::MAX && free(port) && free(port + 1) {
            return Ok(port);
        }
    }
    anyhow::bail!("no two consecutive ports free for UDP and TCP on 127.0.0.1")
}

/// Stops the nodes (together, bounded by [`STOP_GRACE`]), then the private redis-server, so the
/// edges can still clean up their Redis state while they exit.
fn stop(nodes: &mut [Node], redis: Option<RedisServer>) {
    Node::terminate_all(nodes, STOP_GRACE);
    drop(redis);
}

/// The signals that stop the stack: SIGINT, SIGTERM, SIGHUP.
pub(crate) struct StopSignals {
    #[cfg(unix)]
    streams: Vec<(&'static str, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    /// Installs the handlers; must run inside a tokio runtime.
    pub(crate) fn new() -> Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut streams = Vec::new();
            for (name, kind) in [
                ("SIGINT", SignalKind::interrupt()),
                ("SIGTERM", SignalKind::terminate()),
                ("SIGHUP", SignalKind::hangup()),
            ] {
                let s = signal(kind).with_context(|| format!("cannot handle {name}"))?;
                streams.push((name, s));
            }
            Ok(StopSignals { streams })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Waits for the first of the signals; its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let futs = self.streams.iter_mut().map(|(name, s)| {
                Box::pin(async move {
                    s.recv().await;
                    *name
                })
            });
            futures::future::select_all(futs).await.0
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// The flags of every dev-stack edge beside its id and address (both modes): its drain time,
/// the browsers' certificate (`cert`, `key`) pinned by hash, and the Pomelo listener on the
/// same port number as `listen`, over TCP (WebSocket and raw TCP).
pub(crate) fn dev_edge_flags(drain: &str, (cert, key): (&str, &str), listen: &str) -> Vec<String> {
    [
        "--drain-secs",
        drain,
        "--webtransport-cert",
        cert,
        "--webtransport-key",
        key,
        "--webtransport-pin",
        "--pomelo-listen",
        listen,
    ]
    .map(String::from)
    .to_vec()
}
