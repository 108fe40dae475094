//! `roomcast-dev bench <scenario>`: starts a private stack (redis-server, edges, a chat
//! backend — real processes), measures the machine's ceilings, runs the load generator against
//! the stack, and prints a JSON line and a table per run. See BENCHMARKS.md for the method and
//! the numbers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use roomcast_client::bench::{self, BenchConfig, BenchReport, WindowHook};
use roomcast_client::ClientOptions;

use crate::callgrind::Callgrind;
use crate::ceilings::{self, Ceilings};
use crate::cluster::{Certs, ClusterConfig, Node, Role};
use crate::redis_server::RedisServer;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// fanout-100 | big-room | idle | churn | pomelo-fanout-100 (and chaos, with its own flags:
    /// `bench chaos --help`)
    pub scenario: String,
    /// Offered rates (messages per second; joins + leaves per second for churn),
    /// comma-separated to run several.
    #[arg(long)]
    pub rates: Option<String>,
    /// Raise the rate (doubling, then bisecting) until p99 latency exceeds --p99-ms or a
    /// delivery is lost; report the highest rate that met both.
    #[arg(long)]
    pub find_max: bool,
    /// The latency bound of --find-max, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub p99_ms: u64,
    /// Clients (overrides the scenario's).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Seconds measured per rate.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Skip the ceiling measurements (UDP, Redis) printed before the runs.
    #[arg(long)]
    pub no_ceilings: bool,
    /// Run the edges under valgrind's callgrind and report the instructions they executed per
    /// delivery over the measured window: a count that does not move with the machine's load,
    /// unlike CPU time. Valgrind runs them one thread at a time and ~50x slower, so use low
    /// rates and few clients (e.g. `--rates 5 --clients 200`).
    #[arg(long)]
    pub callgrind: bool,
    /// Passed to every edge and backend: rooms larger than this join and leave without
    /// onAdd/onLeave pushes (PROTOCOL.md, *Large rooms*). With 1, churn measures the request
    /// path alone, without the presence deliveries each join and leave causes.
    #[arg(long)]
    pub presence_max_members: Option<u64>,
    /// Run the edges under heaptrack (Debian package `heaptrack`): every allocation they make
    /// is recorded with its call stack in `heaptrack.edge.<pid>.gz` (read it with
    /// `heaptrack_print`; a site's "peak" is what it held at the edge's peak, e.g. with every
    /// `idle` session connected). The RSS figures include heaptrack's own tables.
    #[arg(long, conflicts_with = "callgrind")]
    pub heaptrack: bool,
    /// Extra flags for every edge, e.g. `--edge-arg=--udp-send-batching=on` (repeatable).
    /// `--edge-arg=--local-routes=chat.` measures edges serving `chat.send` themselves: the
    /// chat backend still starts, and gets no requests.
    #[arg(long = "edge-arg", allow_hyphen_values = true)]
    pub edge_args: Vec<String>,
    /// Where development certificates are read from (generated if missing).
    #[arg(long, default_value = "certs")]
    pub certs: std::path::PathBuf,
}

/// `--find-max` stops doubling here even if every run met the bound.
const MAX_FIND_RATE: u64 = 10_000_000;

struct Scenario {
    edges: usize,
    clients: usize,
    rooms: usize,
    rates: Vec<u64>,
    churn: bool,
}

fn scenario(name: &str) -> Result<Scenario> {
    Ok(match name {
        "fanout-100" => Scenario {
            edges: 2,
            clients: 1000,
            rooms: 10,
            rates: vec![100, 200, 400, 800],
            churn: false,
        },
        "big-room" => Scenario {
            edges: 2,
            clients: 5000,
            rooms: 1,
            rates: vec![1, 2, 5],
            churn: false,
        },
        // Every client alone in its own room: the connections are idle, nothing fans out.
        "idle" => Scenario {
            edges: 1,
            clients: 10_000,
            rooms: 10_000,
            rates: vec![0],
            churn: false,
        },
        // Rooms of 10; every client leaves and re-enters its room in turn.
        "churn" => Scenario {
            edges: 2,
            clients: 1000,
            rooms: 100,
            rates: vec![500, 1000, 2000],
            churn: true,
        },
        other => bail!("unknown scenario `{other}` (fanout-100, big-room, idle, churn)"),
    })
}

pub fn run(bin: &Path, args: BenchArgs) -> Result<()> {
    if args.scenario == "pomelo-fanout-100" {
        return crate::pomelo_bench::run(bin, args);
    }
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ceilings = if args.no_ceilings {
        None
    } else {
        let c = ceilings::measure(&rt, &redis)?;
        println!("{}", serde_json::to_string(&c)?);
        println!("{}", ceiling_table(&c));
        Some(c)
    };
    let cluster = ClusterConfig {
        bin: bin.to_path_buf(),
        redis_url: redis.url(),
        prefix: "rc".into(),
        certs: certs.clone(),
        jwt_secret: "bench-secret".into(),
        dev_tokens: true,
    };
    let presence = args.presence_max_members.map(|n| n.to_string());
    let presence: Vec<&str> = match &presence {
        Some(n) => vec!["--presence-max-members", n],
        None => vec![],
    };
    let quiet: Vec<&str> = [
        "--max-sessions",
        "200000",
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
        // The generator shares the cores: thousands of handshakes at once take a while.
        "--handshake-timeout-ms",
        "30000",
    ]
    .into_iter()
    .chain(presence.iter().copied())
    .collect();
    let edge_flags: Vec<&str> = quiet
        .iter()
        .copied()
        .chain(args.edge_args.iter().map(String::as_str))
        .collect();
    let mut nodes: Vec<Node> = vec![cluster.chat("chat-1", &presence)?];
    let callgrind = if args.callgrind {
        Some(Callgrind::wrap(bin, "edge")?)
    } else {
        None
    };
    let edge_cluster = match (&callgrind, args.heaptrack) {
        (Some(c), _) => ClusterConfig {
            bin: c.script(),
            ..cluster.clone()
        },
        (None, true) => ClusterConfig {
            bin: heaptrack_wrapper(bin, "edge")?,
            ..cluster.clone()
        },
        (None, false) => cluster.clone(),
    };
    for i in 0..sc.edges {
        nodes.push(edge_cluster.edge(&format!("edge-{}", i + 1), &edge_flags)?);
    }
    let edge_pids: Vec<u32> = nodes[1..].iter().map(|n| n.pid()).collect();
    std::thread::sleep(Duration::from_millis(1500));
    let edges: Vec<_> = nodes[1..].iter().map(|n| n.addr).collect();
    let pids: Vec<(String, u32)> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.pid()))
        .chain([("redis".to_string(), redis.pid())])
        .collect();
    let one = |rate: u64| -> Result<BenchReport> {
        let mut options = ClientOptions::new(edges[0], certs.ca.clone());
        options.request_timeout = Duration::from_secs(30);
        // As patient as the edges' handshake timeout (`quiet` above): with tens of thousands
        // of connections the generator and the edge share the cores while handshaking.
        options.connect_timeout = Duration::from_secs(30);
        if args.scenario == "idle" {
            // 100 000 connections saturate both cores while they log in and enter.
            options.request_timeout = Duration::from_secs(120);
        }
        let mut cfg = BenchConfig {
            name: args.scenario.clone(),
            edges: edges.clone(),
            options,
            clients: sc.clients,
            rooms: sc.rooms,
            rate,
            duration: Duration::from_secs(args.duration),
            warmup: Duration::from_secs(args.warmup),
            pids: pids.clone(),
            in_flight: 256,
            connect_concurrency: 64,
            clients_per_socket: 500,
            churn: sc.churn,
            window_hook: None,
        };
        let instructions = Arc::new(Mutex::new(None::<Result<u64>>));
        if let Some(c) = &callgrind {
            let (c, pids, out) = (c.clone(), edge_pids.clone(), instructions.clone());
            cfg.window_hook = Some(WindowHook(Arc::new(move |opening| {
                if opening {
                    for pid in &pids {
                        Callgrind::zero(*pid);
                    }
                } else {
                    let total = pids.iter().map(|pid| c.window_instructions(*pid)).sum();
                    *out.lock().expect("instructions lock") = Some(total);
                }
            })));
        }
        let before: Vec<u64> = nodes.iter().map(|n| bench::rss_kib(n.pid())).collect();
        let report = rt.block_on(bench::run(cfg, |line| eprintln!("{line}")))?;
        println!("{}", serde_json::to_string(&report)?);
        print!("{}", report.table());
        if let Some(total) = instructions.lock().expect("instructions lock").take() {
            let total = total?;
            println!(
                "{}",
                serde_json::json!({
                    "edge_instructions": total,
                    "deliveries": report.deliveries,
                    "edge_instructions_per_delivery": per(total, report.deliveries),
                    "churn_ops": report.churn_ops,
                    "edge_instructions_per_churn_op": per(total, report.churn_ops),
                })
            );
        }
        if let Some(c) = &ceilings {
            println!("{}", fractions(&report, c, &nodes));
        }
        if args.scenario == "idle" {
            for (n, b) in nodes.iter().zip(before) {
                if n.role == Role::Edge {
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
        println!();
        Ok(report)
    };
    if args.find_max {
        let bound_us = args.p99_ms * 1000;
        let ok = |r: &BenchReport| {
            r.lost == 0 && r.send_errors == 0 && r.p99_us.max(r.churn_p99_us) < bound_us
        };
        let (mut good, mut bad) = (0u64, None::<u64>);
        let mut rate = sc.rates.first().copied().unwrap_or(100).max(1);
        // Double until a rate fails, then bisect to within 10 %.
        loop {
            let r = one(rate)?;
            if ok(&r) {
                good = rate;
            } else {
                bad = Some(rate);
            }
            rate = match bad {
                // Far past what one machine can offer: stop rather than double forever.
                None if rate >= MAX_FIND_RATE => break,
                None => rate * 2,
                Some(b) if b - good > (good / 10).max(1) => (good + b) / 2,
                Some(_) => break,
            };
        }
        println!(
            "highest offered rate with p99 < {} ms and no loss: {good} (first failing: {})",
            args.p99_ms,
            bad.map(|b| b.to_string()).unwrap_or_default()
        );
    } else {
        for rate in sc.rates.clone() {
            one(rate)?;
        }
    }
    drop(nodes);
    Ok(())
}

/// `total / count`, or null when nothing was counted (a window without deliveries or churn).
fn per(total: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| total as f64 / count as f64)
}

fn ceiling_table(c: &Ceilings) -> String {
    format!(
        "ceilings on this machine:\n  raw UDP: one thread sends {:.0} datagrams/s ({} bytes, to {} receivers)\n  \
         redis: chat.send script {:.0}/s, join/leave scripts {:.0}/s, bare PUBLISH {}\n",
        c.udp.sent_per_sec,
        c.udp.payload_bytes,
        c.udp.receivers,
        c.redis_room_publish_per_sec,
        c.redis_join_leave_per_sec,
        c.redis_benchmark_publish_per_sec
            .map(|p| format!("{p:.0}/s (redis-benchmark)"))
            .unwrap_or_else(|| "not measured (no redis-benchmark)".into()),
    )
}

/// Each result as a fraction of its ceiling.
fn fractions(r: &BenchReport, c: &Ceilings, nodes: &[Node]) -> String {
    let edge_cpu: f64 = r
        .servers
        .iter()
        .filter(|s| {
            nodes
                .iter()
                .any(|n| n.role == Role::Edge && n.pid() == s.pid)
        })
        .map(|s| s.cpu_seconds)
        .sum();
    let mut out = String::from("  against the ceilings:");
    if r.deliveries > 0 && edge_cpu > 0.0 {
        // Deliveries one fully busy edge core would make at this run's cost per delivery.
        let per_core = r.deliveries as f64 / edge_cpu;
        out += &format!(
            "\n    edge deliveries per busy core {:.0}/s = {:.0} % of raw UDP from one thread",
            per_core,
            100.0 * per_core / c.udp.sent_per_sec
        );
    }
    if r.sent > 0 {
        out += &format!(
            "\n    chat.send scripts {:.0}/s = {:.1} % of Redis's ceiling for them",
            r.sent as f64 / r.duration_secs,
            100.0 * r.sent as f64 / r.duration_secs / c.redis_room_publish_per_sec
        );
    }
    if r.churn_ops > 0 {
        out += &format!(
            "\n    joins+leaves {:.0}/s = {:.1} % of Redis's ceiling for those scripts",
            r.churn_ops_per_sec,
            100.0 * r.churn_ops_per_sec / c.redis_join_leave_per_sec
        );
    }
    out
}

/// Where heaptrack's preload library and interpreter are installed (Debian's `heaptrack`).
const HEAPTRACK_LIB: &str = "/usr/lib/heaptrack";

/// `<label>-under-heaptrack.sh` in a fresh directory: runs `bin` (same pid, so the benchmark's
/// RSS and CPU accounting still see the edge) with heaptrack's preload library, whose
/// interpreter writes `heaptrack.<label>.<pid>.gz` next to the script. Like `heaptrack` itself,
/// minus its wrapper process; the recording survives the edge being killed at the end.
pub(crate) fn heaptrack_wrapper(bin: &Path, label: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let preload = Path::new(HEAPTRACK_LIB).join("libheaptrack_preload.so");
    let interpret = Path::new(HEAPTRACK_LIB).join("libexec/heaptrack_interpret");
    if !preload.exists() || !interpret.exists() {
        bail!(
            "--heaptrack needs heaptrack (Debian package `heaptrack`): no {} or {}",
            preload.display(),
            interpret.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("roomcast-heaptrack-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join(format!("{label}-under-heaptrack.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nout='{dir}/heaptrack.{label}.'$$\nmkfifo \"$out.fifo\" || exit 1\n\
             ('{interpret}' < \"$out.fifo\" | gzip -c > \"$out.gz\"; rm -f \"$out.fifo\") &\n\
             export LD_PRELOAD='{preload}'\nexport DUMP_HEAPTRACK_OUTPUT=\"$out.fifo\"\n\
             exec '{bin}' \"$@\"\n",
            dir = dir.display(),
            interpret = interpret.display(),
            preload = preload.display(),
            bin = bin.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    println!(
        "{label} processes run under heaptrack; recordings in {} (heaptrack_print <file>)",
        dir.display()
    );
    Ok(script)
}
