//! `roomcast-dev up`: Redis, two edges and one chat backend on this machine, in one command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::cluster::{Certs, ClusterConfig, Node};
use crate::redis_server::RedisServer;

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
}

/// Runs the stack until Ctrl-C. `bin` is this very binary (nodes are its subcommands).
pub fn run(bin: &Path, args: StackArgs) -> Result<()> {
    let mut own_redis = None;
    let redis_url = match &args.redis_url {
        Some(url) => url.clone(),
        None => {
            let r = RedisServer::start().context("cannot start redis-server")?;
            let url = r.url();
            own_redis = Some(r);
            url
        }
    };
    let certs = Certs::ensure(&args.certs)
        .with_context(|| format!("cannot prepare certificates in {}", args.certs.display()))?;
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
    let chat = cluster.chat("chat-1", &[])?;
    nodes.push(chat);
    for i in 0..args.edges {
        let port = args.first_port + i as u16;
        let edge = cluster.edge_on(
            &format!("edge-{}", i + 1),
            &format!("127.0.0.1:{port}"),
            &[],
        )?;
        nodes.push(edge);
    }
    let gate = nodes
        .iter()
        .find(|n| n.role == crate::cluster::Role::Edge)
        .map(|n| n.addr.to_string())
        .unwrap_or_default();
    let redis_port = redis_url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("6379")
        .to_string();
    println!();
    println!("roomcast is up:");
    println!("  redis    {redis_url} (key prefix `{}`)", args.prefix);
    for n in &nodes {
        println!(
            "  {:<8} {:<8} {}",
            format!("{:?}", n.role).to_lowercase(),
            n.id,
            n.addr
        );
    }
    println!();
    println!("Chat from two terminals:");
    for user in ["alice", "bob"] {
        println!(
            "  cargo run --release -p roomcast-client --bin roomcast -- chat --gate {gate} --ca {} --user {user} --room lobby",
            certs.ca.display()
        );
    }
    println!();
    println!("Development mode: the gate hands out a token for any username (--dev-tokens).");
    println!();
    println!("Inspect the room:");
    println!("  redis-cli -p {redis_port} HGETALL 'rc:room:{{lobby}}:members'");
    println!();
    println!("Ctrl-C stops everything.");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("stopping…");
    for n in nodes.iter_mut().rev() {
        n.terminate(Duration::from_secs(5));
    }
    drop(own_redis);
    Ok(())
}

fn random_u64() -> u64 {
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
