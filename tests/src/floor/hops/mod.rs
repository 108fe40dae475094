//! `roomcast-dev floor --path backend|direct`: the floor of fanout-100's whole message path,
//! not only its last hop. The one-hop probe makes each message inside the server; a roomcast
//! message first crosses sender → edge → backend → Redis (`EVALSHA`: INCR, PUBLISH) → Redis
//! pub/sub → every edge → members, and the answer goes back to the sender. This probe runs
//! those hops with bare parts only (quinn with the edge's and backend's TLS and transport
//! configuration, the `redis` crate, a real `redis-server`):
//! - two edge processes (`roomcast-dev floor-server quinn --hop edge`, [`edge`]), members split
//!   between them, each on one Redis pub/sub connection subscribed to the rooms' channels;
//! - with `--path backend`, one backend process (`--hop backend`, [`backend`]) that runs the
//!   script; with `--path direct` the edges run it themselves (an edge-local route);
//! - the clients and senders in this process ([`clients`]); [`wire`]: the requests, key names
//!   and script.
//!
//! Per window: deliveries/s, delivery latency (member read − sender's stamp) p50/p90/p99/max,
//! answer latency p50/p99, lost frames, members that missed a message of their room, and CPU
//! time per delivery of the edges, the backend, Redis and this process, from /proc; with
//! `--callgrind`, the user-space instructions per delivery of the edges and the backend.

pub mod backend;
pub mod clients;
pub mod edge;
pub mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

use super::report::{cpu_ticks, TICKS_PER_SEC};
use super::{frame, FloorArgs, Kind, Server, Stats};
use crate::callgrind::Callgrind;
use crate::cluster::Certs;
use crate::redis_server::RedisServer;

/// The message path `roomcast-dev floor` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MsgPath {
    /// Each message made inside the server, pushed to its members (the `--kinds` servers).
    #[value(name = "one-hop")]
    OneHop,
    /// Sender → edge → backend → Redis → both edges → members (fanout-100's hops).
    #[value(name = "backend")]
    Backend,
    /// Sender → edge → Redis → both edges → members (no backend hop).
    #[value(name = "direct")]
    Direct,
}

impl MsgPath {
    pub fn name(self) -> &'static str {
        match self {
            MsgPath::OneHop => "one-hop",
            MsgPath::Backend => "backend",
            MsgPath::Direct => "direct",
        }
    }
}

/// A server process's role in the multi-hop probe (`floor-server quinn --hop <role>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Edge,
    Backend,
}

/// Edges, as in fanout-100.
const EDGES: usize = 2;

/// The Redis connection for scripts, set up as roomcast's store sets its own up (multiplexed,
/// reconnecting, bounded response time).
async fn redis_connection(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    Ok(ConnectionManager::new_with_config(client, cfg).await?)
}

/// The server side: `floor-server quinn --hop edge|backend`. Checks its arguments, then says
/// `listening <addr>` and serves until stdin closes (as every floor server).
pub fn serve(role: Role, args: &super::ServeArgs, socket: std::net::UdpSocket) -> Result<()> {
    let redis = args.redis.as_deref().context("--hop needs --redis")?;
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        bail!("--hop needs --cert and --key");
    };
    let (config, peer) = match role {
        Role::Backend => {
            let ca = args.ca.as_deref().context("--hop backend needs --ca")?;
            let config = roomcast_net::tls::server_config(
                cert,
                key,
                roomcast_protocol::protocol::BACKEND_ALPN,
                &roomcast_backend::server::transport_limits(),
                Some(ca),
            )?;
            (config, None)
        }
        Role::Edge => {
            let config = roomcast_net::tls::server_config(
                cert,
                key,
                roomcast_protocol::protocol::CLIENT_ALPN,
                &super::edge_limits(),
                None,
            )?;
            let peer = match args.backend {
                Some(addr) => Some(edge::BackendPeer {
                    addr,
                    ca: args.ca.as_deref().context("--backend needs --ca")?,
                    cert,
                    key,
                }),
                None => None,
            };
            (config, peer)
        }
    };
    println!("listening {}", socket.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    let shared = Arc::new(super::control::Shared::default());
    super::control::spawn_stdin(shared.clone());
    match role {
        Role::Backend => backend::serve(socket, config, args.rooms, redis, shared),
        Role::Edge => edge::serve(socket, config, args.rooms, redis, peer, shared),
    }
}

/// One measured window of the multi-hop probe.
#[derive(Debug, Clone, Serialize)]
pub struct HopRun {
    pub path: String,
    pub clients: usize,
    pub rooms: usize,
    /// Offered messages per second (each to one room's members).
    pub rate: u64,
    pub window_secs: f64,
    /// Frames the edges handed to members' streams in the window.
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    /// Delivery latency (member's read − sender's stamp), µs.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Answer latency (sender's request → its answer), µs.
    pub answer_p50_us: u64,
    pub answer_p99_us: u64,
    /// Frames handed to the members' streams (from start to stop) that no member read.
    pub lost: u64,
    /// Of which the edges dropped themselves (a stream's backlog was full).
    pub dropped: u64,
    /// Members that did not read exactly the messages answered to their room (since joining).
    pub short_members: u64,
    /// Requests that failed, and member connections or reads that failed (over the run).
    pub send_errors: u64,
    pub client_errors: u64,
    /// CPU time (user + sys) per delivery, µs: both edges, the backend (`backend` path only),
    /// redis-server, and this process (members and senders).
    pub edges_cpu_us_per_delivery: f64,
    pub backend_cpu_us_per_delivery: Option<f64>,
    pub redis_cpu_us_per_delivery: f64,
    pub clients_cpu_us_per_delivery: f64,
    /// Under --callgrind: user-space instructions in the window per delivery, of both edges
    /// together and of the backend.
    pub edges_instructions_per_delivery: Option<f64>,
    pub backend_instructions_per_delivery: Option<f64>,
}

impl HopRun {
    pub const HEADER: &'static str = "| path | msg/s | deliveries/s | p50 / p90 / p99 / max ms | answer p50 / p99 ms | lost | short members | CPU µs/delivery: edges / backend / Redis / clients | instr./delivery: edges / backend |\n|---|---|---|---|---|---|---|---|---|";

    pub fn row(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
        format!(
            "| {} | {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {} | {} | {:.2} / {} / {:.2} / {:.2} | {} / {} |",
            self.path,
            self.rate,
            self.deliveries_per_sec,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            ms(self.answer_p50_us),
            ms(self.answer_p99_us),
            self.lost,
            self.short_members,
            self.edges_cpu_us_per_delivery,
            self.backend_cpu_us_per_delivery
                .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            self.redis_cpu_us_per_delivery,
            self.clients_cpu_us_per_delivery,
            opt(self.edges_instructions_per_delivery),
            opt(self.backend_instructions_per_delivery),
        )
    }
}

/// Measures `args.path` (backend or direct) at every rate; prints a JSON line per window and
/// a table at the end.
pub fn run(bin: &Path, args: FloorArgs) -> Result<Vec<HopRun>> {
    let path = args.path;
    if path == MsgPath::OneHop {
        bail!("the multi-hop probe runs --path backend or direct");
    }
    if args.clients < args.rooms || args.rooms == 0 || args.clients_per_endpoint == 0 {
        bail!("--rooms must be at least 1, --clients at least --rooms, --clients-per-endpoint at least 1");
    }
    if args.rates.contains(&0) {
        bail!("--rates must be positive");
    }
    let certs = Certs::ensure(&args.certs)?;
    // With --callgrind the edges and the backend run under valgrind (Redis and the clients not).
    let callgrind = if args.callgrind {
        Some(Callgrind::wrap(bin, "floor-server")?)
    } else {
        None
    };
    let program = callgrind
        .as_ref()
        .map(|c| c.script())
        .unwrap_or(bin.to_path_buf());
    let slow = callgrind.is_some();
    let redis = RedisServer::start().context("starting redis-server")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let common = |role: &str| -> Vec<String> {
        vec![
            "--rooms".into(),
            args.rooms.to_string(),
            "--hop".into(),
            role.into(),
            "--redis".into(),
            redis.url(),
            "--ca".into(),
            certs.ca.display().to_string(),
        ]
    };
    let mut backend = match path {
        MsgPath::Backend => {
            let mut a = common("backend");
            a.extend(cert_args(&certs.backend_cert, &certs.backend_key));
            Some(Server::spawn(&program, Kind::Quinn, &a, slow)?)
        }
        _ => None,
    };
    let mut edges = Vec::new();
    for _ in 0..EDGES {
        let mut a = common("edge");
        a.extend(cert_args(&certs.edge_cert, &certs.edge_key));
        if let Some(b) = &backend {
            a.extend(["--backend".into(), b.addr.to_string()]);
        }
        edges.push(Server::spawn(&program, Kind::Quinn, &a, slow)?);
    }
    let addrs: Vec<SocketAddr> = edges.iter().map(|e| e.addr).collect();
    let members = {
        let _guard = rt.enter();
        clients::connect(
            &addrs,
            args.clients,
            args.rooms,
            args.clients_per_endpoint,
            &certs.ca,
        )?
    };
    wait_for_members(&mut edges, &members, args.clients, slow)?;
    let stats = Arc::new(clients::SendStats::new(args.rooms)?);
    let mut runs = Vec::new();
    for &rate in &args.rates {
        let mut procs = Procs {
            edges: &mut edges,
            backend: backend.as_mut(),
            redis: redis.pid(),
            callgrind: callgrind.as_ref(),
        };
        let r = measure(&rt, &mut procs, &members, &stats, rate, &args)?;
        println!("{}", serde_json::to_string(&r)?);
        println!("{}", r.row());
        runs.push(r);
    }
    drop(members);
    for e in edges {
        e.stop();
    }
    if let Some(b) = backend {
        b.stop();
    }
    super::report::print_table(
        &format!(
            "path {}: {} clients, {} rooms, {EDGES} edges, {} s windows after {} s warm-up",
            path.name(),
            args.clients,
            args.rooms,
            args.duration,
            args.warmup
        ),
        HopRun::HEADER,
        runs.iter().map(HopRun::row),
        callgrind.as_ref(),
    );
    Ok(runs)
}

pub(super) fn cert_args(cert: &Path, key: &Path) -> [String; 4] {
    [
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

/// Waits until every member's join was answered and the edges' pushers hold them all.
fn wait_for_members(
    edges: &mut [Server],
    members: &clients::Members,
    n: usize,
    slow: bool,
) -> Result<()> {
    let limit = Duration::from_secs(if slow { 600 } else { 120 });
    let deadline = Instant::now() + limit;
    loop {
        let held: u64 = edges
            .iter_mut()
            .map(|e| e.stats().map(|s| s.connections))
            .sum::<Result<u64>>()?;
        let errors = members.receipts.errors.load(Relaxed);
        if held >= n as u64 && members.joined() >= n as u64 {
            return Ok(());
        }
        if Instant::now() > deadline || errors > 0 {
            bail!("{held} of {n} members joined in {limit:?} ({errors} client errors)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Procs<'a> {
    edges: &'a mut [Server],
    backend: Option<&'a mut Server>,
    redis: u32,
    callgrind: Option<&'a Callgrind>,
}

impl Procs<'_> {
    fn edge_stats(&mut self) -> Result<Stats> {
        let mut sum = Stats::default();
        for e in self.edges.iter_mut() {
            let s = e.stats()?;
            sum.deliveries += s.deliveries;
            sum.dropped += s.dropped;
        }
        Ok(sum)
    }

    /// Under --callgrind: opens a window on the edges and the backend.
    fn zero(&self) {
        if self.callgrind.is_some() {
            for e in self.edges.iter() {
                Callgrind::zero(e.pid());
            }
            if let Some(b) = &self.backend {
                Callgrind::zero(b.pid());
            }
        }
    }

    /// Under --callgrind: the window's user-space instructions of the edges (summed) and of
    /// the backend.
    fn instructions(&self) -> Result<Option<(u64, Option<u64>)>> {
        let Some(c) = self.callgrind else {
            return Ok(None);
        };
        let mut edges = 0;
        for e in self.edges.iter() {
            edges += c.window_instructions(e.pid())?;
        }
        let backend = self
            .backend
            .as_ref()
            .map(|b| c.window_instructions(b.pid()))
            .transpose()?;
        Ok(Some((edges, backend)))
    }

    /// CPU ticks (user + sys) of the edges, the backend, Redis and this process.
    fn cpu(&self) -> [u64; 4] {
        let t = |pid: u32| {
            let (u, s) = cpu_ticks(pid);
            u + s
        };
        [
            self.edges.iter().map(|e| t(e.pid())).sum(),
            self.backend.as_ref().map_or(0, |b| t(b.pid())),
            t(self.redis),
            t(std::process::id()),
        ]
    }
}

fn measure(
    rt: &tokio::runtime::Runtime,
    procs: &mut Procs<'_>,
    members: &clients::Members,
    stats: &Arc<clients::SendStats>,
    rate: u64,
    args: &FloorArgs,
) -> Result<HopRun> {
    let receipts = &members.receipts;
    let received_at_go = receipts.received.load(Relaxed);
    let at_go = procs.edge_stats()?;
    if let Ok(mut h) = stats.answers.lock() {
        h.reset();
    }
    let senders = {
        let _guard = rt.enter();
        members.send(rate, args.rooms, EDGES, stats.clone())?
    };
    std::thread::sleep(Duration::from_secs(args.warmup));
    procs.zero();
    let s0 = procs.edge_stats()?;
    let c0 = procs.cpu();
    let t0 = Instant::now();
    receipts.open_window(frame::now_ns());
    std::thread::sleep(Duration::from_secs(args.duration));
    let s1 = procs.edge_stats()?;
    let c1 = procs.cpu();
    let secs = t0.elapsed().as_secs_f64();
    receipts.close_window(frame::now_ns());
    let instructions = procs.instructions()?;
    let patience = Duration::from_secs(if procs.callgrind.is_some() { 300 } else { 30 });
    rt.block_on(senders.stop(patience))?;
    // Every answered message was published before its answer; give the edges a moment to
    // push what Redis delivered them, then wait for the members to read it: until all
    // arrived, or 2 s without progress (what is missing then is lost).
    std::thread::sleep(Duration::from_millis(200));
    let at_stop = procs.edge_stats()?;
    let sent = at_stop.deliveries - at_go.deliveries;
    let received = receipts.wait_for(received_at_go, sent, patience / 15);
    let deliveries = s1.deliveries - s0.deliveries;
    let per = |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1e6 / deliveries.max(1) as f64;
    let [p50_us, p90_us, p99_us, max_us] = receipts.quantiles();
    let (answer_p50_us, answer_p99_us) = stats
        .answers
        .lock()
        .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
        .unwrap_or_default();
    Ok(HopRun {
        path: args.path.name().into(),
        clients: args.clients,
        rooms: args.rooms,
        rate,
        window_secs: secs,
        deliveries,
        deliveries_per_sec: deliveries as f64 / secs,
        p50_us,
        p90_us,
        p99_us,
        max_us,
        answer_p50_us,
        answer_p99_us,
        lost: sent.saturating_sub(received),
        dropped: at_stop.dropped - at_go.dropped,
        short_members: members.short_members(&stats.answered()),
        send_errors: stats.errors.load(Relaxed),
        client_errors: receipts.errors.load(Relaxed),
        edges_cpu_us_per_delivery: per(c1[0] - c0[0]),
        backend_cpu_us_per_delivery: procs.backend.is_some().then(|| per(c1[1] - c0[1])),
        redis_cpu_us_per_delivery: per(c1[2] - c0[2]),
        clients_cpu_us_per_delivery: per(c1[3] - c0[3]),
        edges_instructions_per_delivery: instructions
            .map(|(e, _)| e as f64 / deliveries.max(1) as f64),
        backend_instructions_per_delivery: instructions
            .and_then(|(_, b)| b)
            .map(|b| b as f64 / deliveries.max(1) as f64),
    })
}
