//! `roomcast-dev bench pomelo-fanout-100`: the `fanout-100` shape (2 edges, 1 backend, 1000
//! clients in 10 rooms of 100) run twice on one stack in one sitting — native QUIC clients (the
//! load generator of `roomcast bench`), then Pomelo clients over WebSocket — with the servers'
//! CPU per delivery side by side (BENCHMARKS.md).
//!
//! The Pomelo clients are ours (tokio-tungstenite, the Pomelo packages by hand): a generator
//! must be cheap; compatibility is what `tests/tests/pomelo.rs` checks with Pomelo's own client.
//! Each message's `content` is its send time (microseconds since the run's start), decoded from
//! the `onChat` protobuf body on arrival.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use roomcast_client::bench::{self, BenchConfig};
use roomcast_client::ClientOptions;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::cluster::{Certs, ClusterConfig, Node};
use crate::redis_server::RedisServer;
use crate::scenarios::BenchArgs;

const CLIENTS: usize = 1000;
const ROOMS: usize = 10;

fn package(kind: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + body.len());
    b.put_u8(kind);
    b.put_slice(&(body.len() as u32).to_be_bytes()[1..]);
    b.put_slice(body);
    b.freeze()
}

/// A request with a plain route (id < 128: one varint byte).
fn request(id: u8, route: &str, body: &serde_json::Value) -> Bytes {
    let mut m = vec![0x00, id & 0x7f, route.len() as u8];
    m.extend_from_slice(route.as_bytes());
    m.extend_from_slice(body.to_string().as_bytes());
    package(4, &m)
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects, handshakes and enters `rid`; returns the two halves.
async fn connect(addr: SocketAddr, user: &str, rid: &str) -> Result<WsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await?;
    let hs = serde_json::json!({"sys": {"type": "bench", "version": "0.0.1"}, "user": {}});
    ws.send(Ws::Binary(package(1, hs.to_string().as_bytes())))
        .await?;
    let mut answered = false;
    while let Some(m) = ws.next().await {
        if let Ws::Binary(b) = m? {
            if b.first() == Some(&1) {
                answered = true;
                break;
            }
        }
    }
    if !answered {
        bail!("no handshake answer");
    }
    ws.send(Ws::Binary(package(2, b""))).await?;
    let enter = serde_json::json!({"username": user, "rid": rid});
    ws.send(Ws::Binary(request(
        1,
        "connector.entryHandler.enter",
        &enter,
    )))
    .await?;
    // Wait for the answer (type 4, response flag 0x04, id 1).
    loop {
        match ws.next().await {
            Some(Ok(Ws::Binary(b))) if b.len() > 5 && b[0] == 4 && b[4] == 0x04 && b[5] == 1 => {
                let body: serde_json::Value = serde_json::from_slice(&b[6..])?;
                if body.get("error").is_some() {
                    bail!("enter {user}: {body}");
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the enter answer"),
        }
    }
    Ok(ws)
}

/// The send time carried by an `onChat` push (flag 0x07: push, compressed route), if it is one:
/// protobuf field 1 (`msg`) holds the microseconds as text.
fn sent_at(pkg: &[u8]) -> Option<u64> {
    if pkg.len() < 9 || pkg[0] != 4 || pkg[4] != 0x07 {
        return None;
    }
    let body = &pkg[7..];
    if body.first() != Some(&0x0a) {
        return None;
    }
    let len = *body.get(1)? as usize; // < 128: short decimal strings
    std::str::from_utf8(body.get(2..2 + len)?)
        .ok()?
        .parse()
        .ok()
}

struct PomeloReport {
    deliveries: u64,
    sent: u64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_delivery: f64,
    edge_cpu: f64,
    total_cpu: f64,
}

async fn run_pomelo(
    edges: &[SocketAddr],
    rate: u64,
    warmup: Duration,
    duration: Duration,
    pids: &[(String, u32)],
) -> Result<PomeloReport> {
    let start = Instant::now();
    let tag = start.elapsed().as_nanos() as u32 ^ std::process::id();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut joins = Vec::new();
    for i in 0..CLIENTS {
        let addr = edges[i % edges.len()];
        let rid = format!("pbench-{tag}-{}", i % ROOMS);
        let user = format!("p{tag}-{i}");
        let gate = gate.clone();
        joins.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await;
            connect(addr, &user, &rid).await.map(|c| (c, rid))
        }));
    }
    let mut clients = Vec::new();
    for j in joins {
        clients.push(j.await??);
    }
    eprintln!("pomelo: {} clients in {ROOMS} rooms", clients.len());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let deliveries = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    let mut latencies = Vec::new();
    let mut queues = Vec::new();
    for (i, (ws, rid)) in clients.into_iter().enumerate() {
        // One task per connection reads, writes what the sender queues, and heartbeats (the
        // edge closes connections whose heartbeats stop). Unsplit: one owner, no lock.
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let mut ws = ws;
        let (measuring, deliveries) = (measuring.clone(), deliveries.clone());
        let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
        latencies.push(lat.clone());
        readers.push(tokio::spawn(async move {
            let mut hb = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Ws::Binary(b))) => {
                            if let Some(t) = sent_at(&b) {
                                if measuring.load(Ordering::Relaxed) {
                                    deliveries.fetch_add(1, Ordering::Relaxed);
                                    let now = start.elapsed().as_micros() as u64;
                                    lat.lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push(now.saturating_sub(t));
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    o = out_rx.recv() => match o {
                        Some(p) => if ws.send(Ws::Binary(p)).await.is_err() { break },
                        None => break,
                    },
                    _ = hb.tick() => {
                        if ws.send(Ws::Binary(package(3, b""))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
        if i < ROOMS {
            senders.push((out_tx.clone(), rid));
        }
        // Kept until the end: a closed queue ends the connection's task.
        queues.push(out_tx);
    }
    // One sender per room, rate/ROOMS messages per second each.
    let per_room = (rate as f64 / ROOMS as f64).max(0.1);
    let sent = Arc::new(AtomicU64::new(0));
    let mut send_tasks = Vec::new();
    // Spread evenly over one interval, as `roomcast bench` does: in step, the rooms' messages
    // would leave together and every delivery would wait behind a burst of ROOMS × 100.
    let period = Duration::from_secs_f64(1.0 / per_room);
    for (k, (tx, rid)) in senders.into_iter().enumerate() {
        let (stop, sent, measuring) = (stop.clone(), sent.clone(), measuring.clone());
        send_tasks.push(tokio::spawn(async move {
            let first = tokio::time::Instant::now() + period.mul_f64(k as f64 / ROOMS as f64);
            let mut tick = tokio::time::interval_at(first, period);
            let mut id = 1u8;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                id = if id >= 127 { 2 } else { id + 1 };
                let t = start.elapsed().as_micros() as u64;
                let body = serde_json::json!({"rid": rid, "content": t.to_string(), "target": "*"});
                let p = request(id, "chat.chatHandler.send", &body);
                if tx.send(p).is_err() {
                    return;
                }
                if measuring.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let cpu0: Vec<f64> = pids.iter().map(|(_, p)| bench::cpu_seconds(*p)).collect();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let cpu1: Vec<f64> = pids.iter().map(|(_, p)| bench::cpu_seconds(*p)).collect();
    stop.store(true, Ordering::Relaxed);
    for t in send_tasks {
        let _ = t.await;
    }
    let n = deliveries.load(Ordering::Relaxed);
    let used: Vec<f64> = cpu1.iter().zip(&cpu0).map(|(a, b)| a - b).collect();
    let total_cpu: f64 = used.iter().sum();
    let edge_cpu: f64 = pids
        .iter()
        .zip(&used)
        .filter(|((l, _), _)| l.starts_with("edge"))
        .map(|(_, u)| u)
        .sum();
    for r in &readers {
        r.abort();
    }
    drop(queues);
    let mut lat = Vec::new();
    for l in latencies {
        lat.extend(l.lock().unwrap_or_else(|e| e.into_inner()).drain(..));
    }
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize]
        }
    };
    Ok(PomeloReport {
        deliveries: n,
        sent: sent.load(Ordering::Relaxed),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        cpu_us_per_delivery: if n > 0 {
            total_cpu * 1e6 / n as f64
        } else {
            0.0
        },
        edge_cpu,
        total_cpu,
    })
}

pub fn run(bin: &std::path::Path, args: BenchArgs) -> Result<()> {
    let rates: Vec<u64> = match &args.rates {
        Some(r) => r
            .split(',')
            .map(|x| x.trim().parse().context("--rates takes numbers"))
            .collect::<Result<_>>()?,
        None => vec![100, 200],
    };
    let redis = RedisServer::start()?;
    let certs = Certs::ensure(&args.certs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cluster = ClusterConfig {
        bin: bin.to_path_buf(),
        redis_url: redis.url(),
        prefix: "rc".into(),
        certs: certs.clone(),
        jwt_secret: "bench-secret".into(),
        dev_tokens: true,
    };
    let flags = [
        "--max-sessions",
        "200000",
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
        "--handshake-timeout-ms",
        "30000",
        "--pomelo-listen",
        "127.0.0.1:0",
        "--pomelo-heartbeat-secs",
        "10",
    ];
    let mut nodes: Vec<Node> = vec![cluster.chat("chat-1", &[])?];
    for i in 0..2 {
        nodes.push(cluster.edge(&format!("edge-{}", i + 1), &flags)?);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let quic: Vec<_> = nodes[1..].iter().map(|n| n.addr).collect();
    let pomelo: Vec<_> = nodes[1..]
        .iter()
        .map(|n| {
            n.pomelo
                .ok_or_else(|| anyhow!("edge without a Pomelo address"))
        })
        .collect::<Result<_>>()?;
    let pids: Vec<(String, u32)> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.pid()))
        .chain([("redis".to_string(), redis.pid())])
        .collect();
    let duration = Duration::from_secs(args.duration);
    let warmup = Duration::from_secs(args.warmup);
    println!(
        "| offered msg/s | transport | deliveries/s | p50 | p99 | server CPU µs/delivery | edges' CPU µs/delivery |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for rate in rates {
        let mut options = ClientOptions::new(quic[0], certs.ca.clone());
        options.request_timeout = Duration::from_secs(30);
        let cfg = BenchConfig {
            name: "fanout-100".into(),
            edges: quic.clone(),
            options,
            clients: CLIENTS,
            rooms: ROOMS,
            rate,
            duration,
            warmup,
            pids: pids.clone(),
            in_flight: 256,
            connect_concurrency: 64,
            clients_per_socket: 500,
            churn: false,
            window_hook: None,
        };
        let native = rt.block_on(bench::run(cfg, |line| eprintln!("{line}")))?;
        let edge_cpu: f64 = native
            .servers
            .iter()
            .filter(|s| s.label.starts_with("edge"))
            .map(|s| s.cpu_seconds)
            .sum();
        println!(
            "| {rate} | native QUIC | {:.0} | {:.1} ms | {:.1} ms | {:.1} | {:.1} |",
            native.deliveries_per_sec,
            native.p50_us as f64 / 1000.0,
            native.p99_us as f64 / 1000.0,
            native.server_cpu_us_per_delivery.unwrap_or(0.0),
            edge_cpu * 1e6 / native.deliveries.max(1) as f64,
        );
        // Let the native clients' sessions end before the Pomelo run.
        std::thread::sleep(Duration::from_secs(2));
        let p = rt.block_on(run_pomelo(&pomelo, rate, warmup, duration, &pids))?;
        println!(
            "| {rate} | Pomelo WebSocket | {:.0} | {:.1} ms | {:.1} ms | {:.1} | {:.1} |",
            p.deliveries as f64 / duration.as_secs_f64(),
            p.p50_us as f64 / 1000.0,
            p.p99_us as f64 / 1000.0,
            p.cpu_us_per_delivery,
            p.edge_cpu * 1e6 / p.deliveries.max(1) as f64,
        );
        eprintln!(
            "pomelo: sent {} in the window, {} deliveries (expected about {}), servers {:.2} CPU-s",
            p.sent,
            p.deliveries,
            p.sent * (CLIENTS / ROOMS) as u64,
            p.total_cpu
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(nodes);
    Ok(())
}
