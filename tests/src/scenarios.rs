//! `roomcast-dev bench <scenario>`: starts a private stack (redis-server, edges, a chat
//! backend — real processes), runs the load generator against it, prints a JSON line and a
//! table per run. See BENCHMARKS.md for the method and the numbers.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use roomcast_client::bench::{self, BenchConfig};
use roomcast_client::ClientOptions;

use crate::cluster::{Certs, ClusterConfig, Node};
use crate::redis_server::RedisServer;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// fanout-100 | big-room | idle
    pub scenario: String,
    /// Offered messages per second (comma-separated to sweep several rates).
    #[arg(long)]
    pub rates: Option<String>,
    /// Clients (overrides the scenario's).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Seconds measured per rate.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Where development certificates are read from (generated if missing).
    #[arg(long, default_value = "certs")]
    pub certs: std::path::PathBuf,
}

struct Scenario {
    edges: usize,
    clients: usize,
    rooms: usize,
    rates: Vec<u64>,
}

fn scenario(name: &str) -> Result<Scenario> {
    Ok(match name {
        "fanout-100" => Scenario {
            edges: 2,
            clients: 1000,
            rooms: 10,
            rates: vec![100, 200, 400, 800],
        },
        "big-room" => Scenario {
            edges: 2,
            clients: 5000,
            rooms: 1,
            rates: vec![5, 10, 20],
        },
        // Every client alone in its own room: the connections are idle, nothing fans out.
        "idle" => Scenario {
            edges: 1,
            clients: 5000,
            rooms: 5000,
            rates: vec![0],
        },
        other => bail!("unknown scenario `{other}` (fanout-100, big-room, idle)"),
    })
}

pub fn run(bin: &Path, args: BenchArgs) -> Result<()> {
    let mut sc = scenario(&args.scenario)?;
    if let Some(c) = args.clients {
        if args.scenario == "idle" {
            sc.rooms = c;
        }
        sc.clients = c;
    }
    if let Some(r) = &args.rates {
        sc.rates = r
            .split(',')
            .map(|x| x.trim().parse().context("--rates takes numbers"))
            .collect::<Result<_>>()?;
    }
    let redis = RedisServer::start()?;
    let certs = Certs::ensure(&args.certs)?;
    let cluster = ClusterConfig {
        bin: bin.to_path_buf(),
        redis_url: redis.url(),
        prefix: "rc".into(),
        certs: certs.clone(),
        jwt_secret: "bench-secret".into(),
        dev_tokens: true,
    };
    let quiet = [
        "--max-sessions",
        "200000",
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
    ];
    let mut nodes: Vec<Node> = vec![cluster.chat("chat-1", &[])?];
    for i in 0..sc.edges {
        nodes.push(cluster.edge(&format!("edge-{}", i + 1), &quiet)?);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let edges: Vec<_> = nodes[1..].iter().map(|n| n.addr).collect();
    let pids: Vec<(String, u32)> = nodes.iter().map(|n| (n.id.clone(), n.pid())).collect();
    let redis_pid = [("redis".to_string(), redis.pid())];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for rate in sc.rates.clone() {
        let mut options = ClientOptions::new(edges[0], certs.ca.clone());
        options.request_timeout = Duration::from_secs(30);
        let cfg = BenchConfig {
            name: args.scenario.clone(),
            edges: edges.clone(),
            options,
            clients: sc.clients,
            rooms: sc.rooms,
            rate,
            duration: Duration::from_secs(args.duration),
            warmup: Duration::from_secs(args.warmup),
            pids: pids
                .iter()
                .cloned()
                .chain(redis_pid.iter().cloned())
                .collect(),
            in_flight: 256,
            connect_concurrency: 64,
            clients_per_socket: 500,
        };
        let before: Vec<u64> = nodes.iter().map(|n| bench::rss_kib(n.pid())).collect();
        let report = rt.block_on(bench::run(cfg, |line| eprintln!("{line}")))?;
        println!("{}", serde_json::to_string(&report)?);
        println!("{}", report.table());
        if args.scenario == "idle" {
            for (n, b) in nodes.iter().zip(before) {
                if n.role == crate::cluster::Role::Edge {
                    let peak = report
                        .servers
                        .iter()
                        .find(|s| s.pid == n.pid())
                        .map(|s| s.peak_rss_kib)
                        .unwrap_or(0);
                    println!(
                        "  {}: {} sessions, rss {} KiB before -> {} KiB: {:.1} KiB per connection",
                        n.id,
                        sc.clients,
                        b,
                        peak,
                        (peak.saturating_sub(b)) as f64 / sc.clients as f64
                    );
                }
            }
        }
    }
    drop(nodes);
    Ok(())
}
