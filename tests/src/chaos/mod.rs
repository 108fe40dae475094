//! `roomcast-dev bench chaos` (`cargo scenario chaos`): a bounded chaos run with a history
//! checker, for the "consistency under gray failures" promises.
//!
//! For `--duration` seconds, under chat traffic ([`actors::sender`]) and churn
//! ([`actors::churner`]), the runner kills (`kill -9`) and restarts edges and backends, pauses
//! edges (SIGSTOP for a few seconds, then SIGCONT), and restarts Redis empty on the same port —
//! every process its own child, on 127.0.0.1. Observers ([`actors::observer`]) record every
//! answer and push into a JSON-lines history ([`history`]). When the faults stop, traffic stops,
//! the system settles (until every observer's member view matches the store, at most
//! `--settle` seconds), the store's member lists are recorded, and [`check`] judges the history.
//!
//! Faults run one at a time from the thread that called [`run`]: it spawns every node, so the
//! kernel's parent-death signal ([`crate::child`]) is tied to a thread that lives for the whole
//! run. Everything started is killed at the end, and on drop if the run fails half-way.

pub mod actors;
pub mod check;
pub mod history;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::cluster::{Certs, ClusterConfig, Node};
use crate::redis_server::RedisServer;
use actors::{Ctx, Stop};
use check::Report;
use history::{Event, Recorder};

/// A fault the runner can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of a random edge, restarted on the same address 1–3 s later.
    KillEdge,
    /// SIGSTOP of a random edge for 2–8 s (past the 5 s lease sometimes), then SIGCONT.
    PauseEdge,
    /// `kill -9` of a random backend, restarted 1–3 s later.
    KillBackend,
    /// Redis killed and started empty on the same port at once.
    RestartRedis,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::KillEdge,
        Fault::PauseEdge,
        Fault::KillBackend,
        Fault::RestartRedis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillEdge => "kill-edge",
            Fault::PauseEdge => "pause-edge",
            Fault::KillBackend => "kill-backend",
            Fault::RestartRedis => "restart-redis",
        }
    }

    /// Parses a comma-separated list (`all` for every kind).
    pub fn parse_list(s: &str) -> Result<Vec<Fault>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Fault::ALL);
                continue;
            }
            match Fault::ALL.iter().find(|f| f.name() == part) {
                Some(f) => out.push(*f),
                None => bail!(
                    "unknown fault `{part}` (kill-edge, pause-edge, kill-backend, restart-redis, all)"
                ),
            }
        }
        out.dedup();
        Ok(out)
    }
}

/// A small deterministic generator (splitmix64): the same `--seed` makes the same choices
/// (process timing still differs between runs).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// In `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi.saturating_sub(lo) + 1))
    }
}

/// Flags of `roomcast-dev bench chaos`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "roomcast-dev bench chaos",
    about = "Chaos run with a history checker: kills, pauses and restarts edges, backends and Redis under traffic, then checks what observers saw"
)]
pub struct ChaosArgs {
    /// Seconds of faults (traffic runs as long; settling comes after).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Edges (at least 2, so clients have somewhere to go).
    #[arg(long, default_value_t = 2)]
    pub edges: usize,
    /// Chat backends.
    #[arg(long, default_value_t = 2)]
    pub backends: usize,
    /// Rooms; every observer and sender is in all of them.
    #[arg(long, default_value_t = 3)]
    pub rooms: usize,
    /// Sending clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Observer clients (never send).
    #[arg(long, default_value_t = 3)]
    pub observers: usize,
    /// Churning clients (enter, leave, lose their connection, log in again).
    #[arg(long, default_value_t = 4)]
    pub churners: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Fault kinds, comma-separated: kill-edge, pause-edge, kill-backend, restart-redis, all.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// Most seconds to wait after the faults for presence to converge.
    #[arg(long, default_value_t = 30)]
    pub settle: u64,
    /// Directory for the history (history.jsonl) and summary (summary.txt); default: a new
    /// temporary directory, kept only when the run finds a violation.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only check an existing history file (no processes are started).
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// Where development certificates are read from (generated if missing).
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
}

/// Everything a run needs (the CLI's flags, validated, or a test's choice).
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `roomcast-dev` binary (nodes are its subcommands).
    pub bin: PathBuf,
    pub certs: Certs,
    pub duration: Duration,
    pub seed: u64,
    pub edges: usize,
    pub backends: usize,
    pub rooms: usize,
    pub senders: usize,
    pub observers: usize,
    pub churners: usize,
    pub rate: f64,
    pub faults: Vec<Fault>,
    /// Pause between two faults, drawn in this range (milliseconds).
    pub fault_gap_ms: (u64, u64),
    pub settle: Duration,
    /// The history file.
    pub history: PathBuf,
}

impl ChaosConfig {
    /// Refuses configurations the run cannot honour, with the reason.
    pub fn validate(&self) -> Result<()> {
        if self.edges < 2 {
            bail!("--edges must be at least 2 (clients of a killed edge need another one)");
        }
        if self.edges > 16 || self.backends > 16 {
            bail!("at most 16 edges and 16 backends (a 2-core machine runs them all)");
        }
        if self.backends < 1 {
            bail!("--backends must be at least 1");
        }
        if !(1..=64).contains(&self.rooms) {
            bail!("--rooms must be between 1 and 64 (the rooms-per-session limit)");
        }
        if self.senders < 1 || self.observers < 1 {
            bail!("--clients and --observers must be at least 1");
        }
        if self.senders + self.observers + self.churners > 500 {
            bail!("at most 500 clients in all");
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0) {
            bail!("--rate must be above 0 and at most 1000 messages per second");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            bail!("--duration must be between 1 and 3600 seconds");
        }
        if self.settle > Duration::from_secs(600) {
            bail!("--settle must be at most 600 seconds");
        }
        Ok(())
    }
}

/// The result of a run.
pub struct Outcome {
    pub report: Report,
    pub history: PathBuf,
}

/// The CLI: `roomcast-dev bench chaos [flags]`. Returns the process exit code: 0 no violation,
/// 1 violations found, 2 the run itself failed.
pub fn main_cli(bin: &Path, args: &[String]) -> i32 {
    let a = match ChaosArgs::try_parse_from(
        std::iter::once("roomcast-dev bench chaos".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli(bin, a) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("roomcast-dev bench chaos: {e:#}");
            2
        }
    }
}

fn cli(bin: &Path, a: ChaosArgs) -> Result<bool> {
    if let Some(file) = &a.check {
        let records = history::read(file)?;
        let report = check::check(&records);
        println!("{}", report.summary());
        return Ok(report.ok());
    }
    let (dir, temporary) = match &a.out {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "roomcast-chaos-{}-{:x}",
                std::process::id(),
                clock_seed()
            )),
            true,
        ),
    };
    // Bad flags leave nothing behind: the directory is created once they are checked.
    let faults = Fault::parse_list(&a.faults)?;
    continue_paused_on_interrupt();
    let cfg = ChaosConfig {
        bin: bin.to_path_buf(),
        certs: Certs::ensure(&a.certs)
            .with_context(|| format!("cannot prepare certificates in {}", a.certs.display()))?,
        duration: Duration::from_secs(a.duration),
        seed: a.seed.unwrap_or_else(clock_seed),
        edges: a.edges,
        backends: a.backends,
        rooms: a.rooms,
        senders: a.clients,
        observers: a.observers,
        churners: a.churners,
        rate: a.rate,
        faults,
        fault_gap_ms: (1000, 4000),
        settle: Duration::from_secs(a.settle),
        history: dir.join("history.jsonl"),
    };
    cfg.validate()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let outcome = run(&cfg)?;
    let summary = format!(
        "chaos run: seed {}, {} s, {} edges, {} backends, {} rooms, {} senders at {}/s, {} observers, {} churners, faults [{}]\n{}",
        cfg.seed,
        cfg.duration.as_secs(),
        cfg.edges,
        cfg.backends,
        cfg.rooms,
        cfg.senders,
        cfg.rate,
        cfg.observers,
        cfg.churners,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        outcome.report.summary()
    );
    println!("{summary}");
    let _ = std::fs::write(dir.join("summary.txt"), &summary);
    let ok = outcome.report.ok();
    if ok && temporary {
        let _ = std::fs::remove_dir_all(&dir);
        println!("(history removed: the run passed; pass --out to keep it)");
    } else {
        println!("history: {}", outcome.history.display());
        println!(
            "re-check it with: cargo scenario chaos --check {}",
            outcome.history.display()
        );
    }
    Ok(ok)
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Edges and backends of the run; a slot is empty while its node is down. Drops (kills) its
/// nodes before the Redis they use.
struct Nodes {
    edges: Vec<(String, SocketAddr, Option<Node>)>,
    backends: Vec<(String, Option<Node>)>,
    cluster: ClusterConfig,
}

impl Nodes {
    /// Brings back every node that is down (an edge on its old address). Bounded: one attempt
    /// per node per call.
    fn repair(&mut self, rec: &Recorder) {
        for (id, addr, slot) in &mut self.edges {
            if slot.is_none() {
                match self.cluster.edge_on(id, &addr.to_string(), &[]) {
                    Ok(n) => *slot = Some(n),
                    Err(e) => rec.record(Event::Fault {
                        kind: "restart-failed".into(),
                        target: id.clone(),
                        phase: "begin".into(),
                        detail: format!("{e:#}"),
                    }),
                }
            }
        }
        for (id, slot) in &mut self.backends {
            if slot.is_none() {
                match self.cluster.chat(id, &[]) {
                    Ok(n) => *slot = Some(n),
                    Err(e) => rec.record(Event::Fault {
                        kind: "restart-failed".into(),
                        target: id.clone(),
                        phase: "begin".into(),
                        detail: format!("{e:#}"),
                    }),
                }
            }
        }
    }
}

/// The pid of the edge currently stopped by SIGSTOP (0: none), so an interrupted runner can
/// continue it before exiting: the SIGTERM its children get from the kernel when it dies
/// ([`crate::child`]) would stay pending forever in a stopped process.
static PAUSED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Stops `node` (SIGSTOP) for `d`, then continues it (SIGCONT).
fn pause(node: &Node, d: Duration) {
    use std::sync::atomic::Ordering;
    PAUSED.store(node.pid(), Ordering::SeqCst);
    signal(node, libc::SIGSTOP);
    std::thread::sleep(d);
    signal(node, libc::SIGCONT);
    PAUSED.store(0, Ordering::SeqCst);
}

/// On SIGINT or SIGTERM: continues a paused edge, then exits (130); the children then get
/// SIGTERM from the kernel and exit by themselves.
fn continue_paused_on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let pid = PAUSED.load(std::sync::atomic::Ordering::SeqCst);
            if pid != 0 {
                // SAFETY: plain syscall on the pid of our own child, stopped and not reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGCONT);
                }
            }
            eprintln!("roomcast-dev bench chaos: interrupted; stopping");
            std::process::exit(130);
        });
    });
}

/// Sends `sig` to a node's own pid (never to a group or by name). The node is our unreaped
/// child, so the pid cannot have been recycled.
fn signal(node: &Node, sig: libc::c_int) {
    // SAFETY: plain syscall on our own child's pid.
    unsafe {
        libc::kill(node.pid() as libc::pid_t, sig);
    }
}

/// Waits until `edges` edges and `backends` backends are registered and the edges had time to
/// refresh their registry caches (every second).
fn wait_registry(redis: &RedisServer, edges: usize, backends: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = |key: &str| -> usize {
            match redis.cmd(&["SCARD", key]) {
                Ok(redis::Value::Int(n)) => n as usize,
                _ => 0,
            }
        };
        if count("rc:edges") >= edges && count("rc:backends") >= backends {
            break;
        }
        if Instant::now() > deadline {
            bail!("nodes did not register within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    Ok(())
}

/// The store's member list of each room (`HKEYS rc:room:{<rid>}:members`).
fn store_members(
    redis: &RedisServer,
    rooms: &[String],
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out = BTreeMap::new();
    for room in rooms {
        let v = redis.cmd(&["HKEYS", &format!("rc:room:{{{room}}}:members")])?;
        let members: Vec<String> =
            redis::from_redis_value(v).with_context(|| format!("members of {room}"))?;
        out.insert(room.clone(), members.into_iter().collect());
    }
    Ok(out)
}

/// Runs the chaos scenario; see the module documentation.
pub fn run(cfg: &ChaosConfig) -> Result<Outcome> {
    cfg.validate()?;
    let rec = Recorder::create(Some(&cfg.history))?;
    let mut rng = Rng::new(cfg.seed);
    let mut redis = RedisServer::start().context("cannot start redis-server")?;
    let cluster = ClusterConfig {
        bin: cfg.bin.clone(),
        redis_url: redis.url(),
        prefix: "rc".into(),
        certs: cfg.certs.clone(),
        jwt_secret: format!("chaos-{:x}", cfg.seed),
        dev_tokens: true,
    };
    let mut nodes = Nodes {
        edges: Vec::new(),
        backends: Vec::new(),
        cluster: cluster.clone(),
    };
    for i in 0..cfg.backends {
        let id = format!("chat-{}", i + 1);
        let n = cluster.chat(&id, &[])?;
        nodes.backends.push((id, Some(n)));
    }
    for i in 0..cfg.edges {
        let id = format!("edge-{}", i + 1);
        let n = cluster.edge(&id, &[])?;
        nodes.edges.push((id, n.addr, Some(n)));
    }
    wait_registry(&redis, cfg.edges, cfg.backends)?;

    let rooms: Vec<String> = (1..=cfg.rooms).map(|i| format!("room-{i}")).collect();
    let ctx = Ctx {
        edges: std::sync::Arc::new(nodes.edges.iter().map(|(_, a, _)| *a).collect()),
        ca: cfg.certs.ca.clone(),
        rec: rec.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (obs_stop, traffic_stop) = (Stop::default(), Stop::default());
    let wait_ready = |rx: &mut tokio::sync::mpsc::Receiver<Result<(), String>>,
                      n: usize,
                      what: &str|
     -> Result<()> {
        rt.block_on(async {
            for _ in 0..n {
                match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                    Ok(Some(Ok(()))) => {}
                    Ok(Some(Err(e))) => bail!("{what}: {e}"),
                    _ => bail!("{what} not ready within 60 s"),
                }
            }
            Ok(())
        })
    };
    let mut tasks = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(cfg.observers + cfg.senders);
    for i in 0..cfg.observers {
        tasks.push(rt.spawn(actors::observer(
            ctx.clone(),
            format!("obs-{}", i + 1),
            rooms.clone(),
            i,
            obs_stop.clone(),
            tx.clone(),
        )));
    }
    let setup = wait_ready(&mut rx, cfg.observers, "observers");
    let mut traffic = Vec::new();
    let setup = setup.and_then(|()| {
        let interval = Duration::from_secs_f64(cfg.senders as f64 / cfg.rate);
        for i in 0..cfg.senders {
            traffic.push(rt.spawn(actors::sender(
                ctx.clone(),
                format!("send-{}", i + 1),
                rooms.clone(),
                interval,
                cfg.seed.wrapping_add(1000 + i as u64),
                traffic_stop.clone(),
                tx.clone(),
            )));
        }
        wait_ready(&mut rx, cfg.senders, "senders")
    });
    if let Err(e) = setup {
        obs_stop.raise();
        traffic_stop.raise();
        rt.shutdown_timeout(Duration::from_secs(5));
        return Err(e);
    }
    for i in 0..cfg.churners {
        traffic.push(rt.spawn(actors::churner(
            ctx.clone(),
            format!("churn-{}", i + 1),
            rooms.clone(),
            cfg.seed.wrapping_add(2000 + i as u64),
            traffic_stop.clone(),
        )));
    }
    println!(
        "chaos: {} edges, {} backends, redis on port {}; faults for {:?} (seed {})",
        cfg.edges,
        cfg.backends,
        redis.port(),
        cfg.duration,
        cfg.seed
    );

    // Faults, one at a time, until the duration is over.
    let end = Instant::now() + cfg.duration;
    while Instant::now() < end {
        std::thread::sleep(
            rng.ms(cfg.fault_gap_ms.0, cfg.fault_gap_ms.1)
                .min(end.saturating_duration_since(Instant::now())),
        );
        nodes.repair(&rec);
        if Instant::now() >= end || cfg.faults.is_empty() {
            continue;
        }
        let fault = cfg.faults[rng.below(cfg.faults.len())];
        inject(fault, &mut rng, &mut nodes, &mut redis, &rec)?;
    }
    nodes.repair(&rec);
    if cfg.faults.contains(&Fault::PauseEdge) {
        // The end state is what the presence check sees, and a later fault (a Redis restart
        // re-registering everything) can hide what a pause did. So the last fault is a pause
        // long enough for the edge's lease (5 s) to expire and its members to be reaped.
        final_pause(&mut rng, &nodes, &rec);
    }
    println!("chaos: faults over; stopping traffic and settling");

    // Traffic stops, then the system settles: until every observer's view matches the store
    // (at least 3 s, so in-flight deliveries land), at most `settle`.
    traffic_stop.raise();
    rt.block_on(async {
        for t in traffic {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    });
    let settled = Instant::now();
    let mut store = store_members(&redis, &rooms).unwrap_or_default();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(s) = store_members(&redis, &rooms) {
            store = s;
        }
        let diffs = check::presence_diffs(&rec.snapshot(), &store);
        if (diffs.is_empty() && settled.elapsed() >= Duration::from_secs(3))
            || settled.elapsed() >= cfg.settle
        {
            println!(
                "chaos: settled after {:.1} s ({} presence differences left)",
                settled.elapsed().as_secs_f64(),
                diffs.len()
            );
            break;
        }
    }
    for (room, members) in &store {
        rec.record(Event::Members {
            room: room.clone(),
            members: members.iter().cloned().collect(),
        });
    }
    obs_stop.raise();
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    rec.finish()?;
    // Nodes first (they may still talk to Redis), then Redis.
    drop(nodes);
    drop(redis);
    let records = rec.snapshot();
    Ok(Outcome {
        report: check::check(&records),
        history: cfg.history.clone(),
    })
}

/// SIGSTOP of a random edge for [`FINAL_PAUSE`], then SIGCONT.
fn final_pause(rng: &mut Rng, nodes: &Nodes, rec: &Recorder) {
    let (id, _, slot) = &nodes.edges[rng.below(nodes.edges.len())];
    let Some(node) = slot.as_ref() else {
        return;
    };
    let mark = |phase: &str, detail: String| {
        rec.record(Event::Fault {
            kind: Fault::PauseEdge.name().into(),
            target: id.clone(),
            phase: phase.into(),
            detail,
        })
    };
    mark("begin", format!("final pause: SIGSTOP for {FINAL_PAUSE:?}"));
    pause(node, FINAL_PAUSE);
    mark("end", String::new());
}

/// The last pause of a run with `pause-edge`: past the 5 s lease and the reaper's sweep.
const FINAL_PAUSE: Duration = Duration::from_secs(8);

/// Injects one fault and waits until it is over (the node restarted or resumed).
fn inject(
    fault: Fault,
    rng: &mut Rng,
    nodes: &mut Nodes,
    redis: &mut RedisServer,
    rec: &Recorder,
) -> Result<()> {
    let mark = |target: &str, phase: &str, detail: String| {
        rec.record(Event::Fault {
            kind: fault.name().into(),
            target: target.into(),
            phase: phase.into(),
            detail,
        })
    };
    match fault {
        Fault::KillEdge => {
            let i = rng.below(nodes.edges.len());
            let (id, _, slot) = &mut nodes.edges[i];
            let Some(mut node) = slot.take() else {
                return Ok(());
            };
            let down = rng.ms(1000, 3000);
            mark(id, "begin", format!("down for {down:?}"));
            node.kill();
            drop(node);
            std::thread::sleep(down);
            let id = id.clone();
            nodes.repair(rec);
            mark(&id, "end", String::new());
        }
        Fault::PauseEdge => {
            let i = rng.below(nodes.edges.len());
            let (id, _, slot) = &nodes.edges[i];
            let Some(node) = slot.as_ref() else {
                return Ok(());
            };
            let paused = rng.ms(2000, 8000);
            mark(id, "begin", format!("SIGSTOP for {paused:?}"));
            pause(node, paused);
            mark(id, "end", String::new());
        }
        Fault::KillBackend => {
            let i = rng.below(nodes.backends.len());
            let (id, slot) = &mut nodes.backends[i];
            let Some(mut node) = slot.take() else {
                return Ok(());
            };
            let down = rng.ms(1000, 3000);
            mark(id, "begin", format!("down for {down:?}"));
            node.kill();
            drop(node);
            std::thread::sleep(down);
            let id = id.clone();
            nodes.repair(rec);
            mark(&id, "end", String::new());
        }
        Fault::RestartRedis => {
            mark(
                "redis",
                "begin",
                "killed, started empty on the same port".into(),
            );
            redis.restart().context("restarting redis-server")?;
            mark("redis", "end", String::new());
        }
    }
    Ok(())
}
