//! The load generator behind `roomcast bench`: C clients over E edges in R rooms, an offered
//! message rate, a duration. It reports sustained deliveries per second, send-to-receive latency
//! percentiles (hdrhistogram), lost and duplicated deliveries, and — given server pids — each
//! server's CPU seconds and peak RSS over the measured window, and server CPU microseconds per
//! delivery.
//!
//! Every message carries its send time; a delivery's latency is receive time minus send time on
//! this machine's monotonic clock. A delivery is *lost* when a member never receives a message
//! accepted (answered with a seq) in its room, *duplicated* when it receives a seq twice.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::client::{Client, ClientOptions};
use crate::error::ClientError;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub name: String,
    /// Edges to spread clients over (round-robin, no gate query).
    pub edges: Vec<SocketAddr>,
    pub options: ClientOptions,
    pub clients: usize,
    pub rooms: usize,
    /// Messages per second offered in total (spread evenly over rooms); 0 = none (idle).
    pub rate: u64,
    pub duration: Duration,
    pub warmup: Duration,
    /// Server processes to account CPU and memory for, with a label each.
    pub pids: Vec<(String, u32)>,
    /// Requests a sender keeps in flight.
    pub in_flight: usize,
    /// Connections opened at once while setting up.
    pub connect_concurrency: usize,
    /// Client connections sharing one UDP socket (one quinn endpoint). One socket per
    /// connection would cost the generator a file descriptor and an endpoint task each.
    pub clients_per_socket: usize,
    /// Churn instead of chat: `rate` is then joins + leaves per second, spread over every
    /// client (each leaves its room and enters it again, in turn); nothing is sent.
    pub churn: bool,
    /// Called with `true` as the measured window opens and `false` as it closes (after the
    /// CPU readings), e.g. to zero and dump a profiler's counters around exactly that window.
    pub window_hook: Option<WindowHook>,
}

/// See [`BenchConfig::window_hook`].
#[derive(Clone)]
pub struct WindowHook(pub std::sync::Arc<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for WindowHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowHook")
    }
}

/// One server process's use of the machine during the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUse {
    pub label: String,
    pub pid: u32,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

/// The result, printed as one JSON line and a table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub scenario: String,
    pub clients: usize,
    pub edges: usize,
    pub rooms: usize,
    pub offered_msgs_per_sec: u64,
    pub duration_secs: f64,
    pub sent: u64,
    pub send_errors: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Send-to-answer latency of `chat.send` (edge → backend → Redis → edge), which every
    /// delivery's latency includes.
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    /// Churn runs: joins + leaves answered inside the measured window, and their latency
    /// (request to answer: edge, session claim, one Redis script, presence push).
    pub churn_ops: u64,
    pub churn_ops_per_sec: f64,
    pub churn_p50_us: u64,
    pub churn_p99_us: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub setup_secs: f64,
    pub servers: Vec<ProcessUse>,
    pub server_cpu_us_per_delivery: Option<f64>,
    /// This process (all the clients: QUIC decryption, acknowledgements, accounting) over the
    /// measured window: it shares the machine with the servers when run on the same host.
    pub generator_cpu_seconds: f64,
}

struct Member {
    room: usize,
    /// Seqs received in its room, during the measured window.
    seen: HashSet<u64>,
    dups: u64,
}

/// Runs the benchmark; `progress` receives a line every second.
pub async fn run(
    cfg: BenchConfig,
    progress: impl Fn(String) + Send + Sync + 'static,
) -> Result<BenchReport, ClientError> {
    let setup = Instant::now();
    // Connect and enter, a bounded number at a time.
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    // Distinct uids per run, so runs in one process never collide with a previous run's sessions.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    let sockets = cfg.clients.div_ceil(cfg.clients_per_socket.max(1)).max(1);
    let endpoints = (0..sockets)
        .map(|_| roomcast_net::net::endpoint(roomcast_net::net::any_addr_for(&cfg.edges[0]), None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Config(format!("{e:#}")))?;
    // Rooms are per run too: two generators never share a room by accident.
    let rooms: Vec<String> = (0..cfg.rooms.max(1))
        .map(|r| format!("bench-{run}-{r}"))
        .collect();
    let mut joins = Vec::new();
    // Connections that failed once and were made again (see below).
    let retried = Arc::new(AtomicU64::new(0));
    for i in 0..cfg.clients {
        let mut opts = cfg.options.clone();
        opts.reconnect = false;
        // Without reconnects a dead edge need not be noticed quickly: the transport timing of
        // BENCHMARKS.md (5 s keep-alives, 30 s idle timeout) keeps thousands of idle
        // connections cheap and the numbers comparable.
        opts.keep_alive = std::time::Duration::from_secs(5);
        opts.idle_timeout = std::time::Duration::from_secs(30);
        opts.endpoint = Some(endpoints[i % sockets].clone());
        let addr = cfg.edges[i % cfg.edges.len()];
        let room = rooms[i % rooms.len()].clone();
        let gate = gate.clone();
        let retried = retried.clone();
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let uid = format!("bench-{run}-{i}");
            // Among tens of thousands of handshakes on shared sockets, one occasionally stalls
            // until the edge's handshake timeout closes it: try once more (counted, printed)
            // rather than throw the whole run away; a second failure still ends it.
            let c = match Client::connect_direct(opts.clone(), addr, &uid).await {
                Ok(c) => c,
                Err(e) => {
                    retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("client {i} failed to connect ({e}); trying once more");
                    Client::connect_direct(opts, addr, &uid).await?
                }
            };
            let rx = c.pushes().expect("pushes");
            c.enter(&room).await?;
            Ok::<_, ClientError>((c, rx))
        }));
        if i % 100 == 99 {
            progress(format!("connecting: {}/{}", i + 1, cfg.clients));
        }
    }
    let mut clients = Vec::new();
    for j in joins {
        clients.push(j.await.expect("connect task")?);
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    progress(format!(
        "{} clients connected in {setup_secs:.1}s ({} after a second attempt)",
        clients.len(),
        retried.load(Ordering::Relaxed)
    ));

    let start = Instant::now();
    // The measured window, in ns since `start`: messages sent inside it are counted, whenever
    // they arrive.
    let window_ns = Arc::new((AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)));
    let deliveries = Arc::new(AtomicU64::new(0));
    // Latencies go to a few shared histograms, sized up front: one per receiver grew (a
    // reallocation and a clear each time a larger latency came) inside the measured window,
    // and cost tens of KiB per client.
    let shards: Arc<Vec<Mutex<Histogram<u64>>>> = Arc::new(
        (0..LATENCY_SHARDS.min(cfg.clients.max(1)))
            .map(|_| Mutex::new(latency_histogram()))
            .collect(),
    );
    let members = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::new();
    let mut senders_clients = Vec::new();
    for (i, (c, mut rx)) in clients.into_iter().enumerate() {
        let room = i % rooms.len();
        let window_ns = window_ns.clone();
        let deliveries = deliveries.clone();
        let shards = shards.clone();
        let members = members.clone();
        let mut stop = stop_rx.clone();
        receivers.push(tokio::spawn(async move {
            let hist = &shards[i % shards.len()];
            let mut m = Member {
                room,
                seen: HashSet::new(),
                dups: 0,
            };
            loop {
                let p = tokio::select! {
                    p = rx.recv() => match p {
                        Some(p) => p,
                        None => break,
                    },
                    _ = stop.changed() => break,
                };
                if p.route != "onChat" {
                    continue;
                }
                let Some(sent_ns) = parse_sent_ns(&p.body) else {
                    continue;
                };
                if !in_window(&window_ns, sent_ns) {
                    continue;
                }
                let now = start.elapsed().as_nanos() as u64;
                let _ = hist
                    .lock()
                    .expect("hist")
                    .record(now.saturating_sub(sent_ns) / 1000);
                deliveries.fetch_add(1, Ordering::Relaxed);
                if !m.seen.insert(p.seq) {
                    m.dups += 1;
                }
            }
            members.lock().expect("members").push(m);
        }));
        senders_clients.push(c);
    }
    let senders_clients: Vec<Arc<Client>> = senders_clients.into_iter().map(Arc::new).collect();

    // One sender per room (the room's first client), each at rate / rooms.
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let accepted: Arc<Mutex<HashMap<usize, HashSet<u64>>>> = Arc::default();
    let acks = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let mut senders = Vec::new();
    let per_room = cfg.rate as f64 / rooms.len() as f64;
    let room_count = rooms.len();
    if cfg.rate > 0 && !cfg.churn {
        for (r, rid) in rooms.iter().enumerate() {
            let Some(client) = senders_clients.get(r).cloned() else {
                break;
            };
            let rid = rid.clone();
            let (sent, send_errors, accepted, window_ns, acks) = (
                sent.clone(),
                send_errors.clone(),
                accepted.clone(),
                window_ns.clone(),
                acks.clone(),
            );
            let total = cfg.warmup + cfg.duration;
            let limit = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
            senders.push(tokio::spawn(async move {
                let mut pace = Pacer::new(per_room, r, room_count);
                let mut n = 0u64;
                while start.elapsed() < total {
                    pace.tick().await;
                    let permit = limit.clone().acquire_owned().await.expect("semaphore");
                    let client = client.clone();
                    let rid = rid.clone();
                    let (sent, send_errors, accepted, acks) = (
                        sent.clone(),
                        send_errors.clone(),
                        accepted.clone(),
                        acks.clone(),
                    );
                    n += 1;
                    let window_ns = window_ns.clone();
                    tokio::spawn(async move {
                        let t = start.elapsed().as_nanos() as u64;
                        let counted = in_window(&window_ns, t);
                        match client.send(&rid, &format!("{t} {n}")).await {
                            Ok(s) if counted => {
                                let took = start.elapsed().as_nanos() as u64 - t;
                                let _ = acks.lock().expect("acks").record(took / 1000);
                                sent.fetch_add(1, Ordering::Relaxed);
                                if let Some(seq) = s.seq {
                                    accepted
                                        .lock()
                                        .expect("accepted")
                                        .entry(r)
                                        .or_default()
                                        .insert(seq);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => {
                                send_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        drop(permit);
                    });
                }
            }));
        }
    }

    // Churn: every client leaves and re-enters its room in turn, phases spread evenly.
    let churn_ops = Arc::new(AtomicU64::new(0));
    let churn_hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    if cfg.churn && cfg.rate > 0 {
        let per_client = cfg.rate as f64 / senders_clients.len().max(1) as f64;
        let n = senders_clients.len();
        for (i, client) in senders_clients.iter().enumerate() {
            let client = client.clone();
            let rid = rooms[i % rooms.len()].clone();
            let (ops, hist, errors, window_ns) = (
                churn_ops.clone(),
                churn_hist.clone(),
                send_errors.clone(),
                window_ns.clone(),
            );
            let total = cfg.warmup + cfg.duration;
            senders.push(tokio::spawn(async move {
                let mut pace = Pacer::new(per_client, i, n);
                let mut inside = true;
                while start.elapsed() < total {
                    pace.tick().await;
                    let t = start.elapsed().as_nanos() as u64;
                    let result = if inside {
                        client.leave(&rid).await
                    } else {
                        client.enter(&rid).await.map(|_| ())
                    };
                    match result {
                        Ok(()) => {
                            inside = !inside;
                            if in_window(&window_ns, t) {
                                let took = start.elapsed().as_nanos() as u64 - t;
                                let _ = hist.lock().expect("churn hist").record(took / 1000);
                                ops.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }

    tokio::time::sleep(cfg.warmup).await;
    if let Some(h) = &cfg.window_hook {
        (h.0)(true);
    }
    let cpu_before: Vec<f64> = cfg.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let own_before = cpu_seconds(std::process::id());
    window_ns
        .0
        .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let window = Instant::now();
    let mut peak_rss: Vec<u64> = cfg.pids.iter().map(|(_, p)| rss_kib(*p)).collect();
    while window.elapsed() < cfg.duration {
        tokio::time::sleep(Duration::from_secs(1).min(cfg.duration)).await;
        for (k, (_, p)) in cfg.pids.iter().enumerate() {
            peak_rss[k] = peak_rss[k].max(rss_kib(*p));
        }
        let d = deliveries.load(Ordering::Relaxed);
        progress(format!(
            "{:>4.0}s  sent {}  deliveries {}  ({:.0}/s)",
            window.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            d,
            d as f64 / window.elapsed().as_secs_f64()
        ));
    }
    window_ns
        .1
        .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let elapsed = window.elapsed().as_secs_f64();
    let cpu_after: Vec<f64> = cfg.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let generator_cpu_seconds = cpu_seconds(std::process::id()) - own_before;
    if let Some(h) = &cfg.window_hook {
        (h.0)(false);
    }
    progress("measured window over; waiting for senders".into());
    for s in senders {
        let _ = s.await;
    }
    progress("senders done".into());
    // Let in-flight deliveries land before counting losses.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total_deliveries = deliveries.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for r in receivers {
        let _ = r.await;
    }
    progress("receivers done".into());
    // Close every connection on purpose (their members leave); no waiting for the drain.
    for c in &senders_clients {
        c.connection()
            .quic()
            .close(quinn::VarInt::from_u32(0), b"bench done");
    }
    drop(senders_clients);
    // Let the close frames leave before the sockets go.
    for e in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
    }
    let mut hist = latency_histogram();
    for shard in shards.iter() {
        hist.add(&*shard.lock().expect("hist"))
            .expect("same bounds");
    }
    let accepted = accepted.lock().expect("accepted").clone();
    let acks = acks.lock().expect("acks").clone();
    let churn_hist = churn_hist.lock().expect("churn hist").clone();
    let churn_ops = churn_ops.load(Ordering::Relaxed);
    let (mut lost, mut duplicated) = (0, 0);
    for m in members.lock().expect("members").iter() {
        duplicated += m.dups;
        if let Some(acc) = accepted.get(&m.room) {
            lost += acc.iter().filter(|s| !m.seen.contains(s)).count() as u64;
        }
    }
    let servers: Vec<ProcessUse> = cfg
        .pids
        .iter()
        .enumerate()
        .map(|(k, (label, pid))| ProcessUse {
            label: label.clone(),
            pid: *pid,
            cpu_seconds: cpu_after[k] - cpu_before[k],
            peak_rss_kib: peak_rss[k],
        })
        .collect();
    let cpu_total: f64 = servers.iter().map(|s| s.cpu_seconds).sum();
    Ok(BenchReport {
        scenario: cfg.name,
        clients: cfg.clients,
        edges: cfg.edges.len(),
        rooms: rooms.len(),
        offered_msgs_per_sec: cfg.rate,
        duration_secs: elapsed,
        sent: sent.load(Ordering::Relaxed),
        send_errors: send_errors.load(Ordering::Relaxed),
        deliveries: total_deliveries,
        deliveries_per_sec: total_deliveries as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        ack_p50_us: acks.value_at_quantile(0.50),
        ack_p99_us: acks.value_at_quantile(0.99),
        churn_ops,
        churn_ops_per_sec: churn_ops as f64 / elapsed,
        churn_p50_us: churn_hist.value_at_quantile(0.50),
        churn_p99_us: churn_hist.value_at_quantile(0.99),
        lost,
        duplicated,
        setup_secs,
        server_cpu_us_per_delivery: (total_deliveries > 0 && !servers.is_empty())
            .then(|| cpu_total * 1e6 / total_deliveries as f64),
        servers,
        generator_cpu_seconds,
    })
}

/// Paces one of `of` workers at `per_sec` operations per second. The workers' phases are
/// spread evenly over one interval: started in phase, ten rooms at 2 msg/s each would send one
/// burst of ten messages every 500 ms instead of one message every 50 ms.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(per_sec: f64, worker: usize, of: usize) -> Pacer {
        let interval = Duration::from_secs_f64(1.0 / per_sec);
        Pacer {
            interval,
            next: Instant::now() + interval.mul_f64(worker as f64 / of.max(1) as f64),
        }
    }

    /// Waits for the next operation's turn (at once when behind schedule).
    async fn tick(&mut self) {
        self.next += self.interval;
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep(self.next - now).await;
        }
    }
}

fn in_window(w: &(AtomicU64, AtomicU64), t: u64) -> bool {
    t >= w.0.load(Ordering::Relaxed) && t < w.1.load(Ordering::Relaxed)
}

/// Histograms the receivers share (each receiver records into one): enough that they rarely
/// wait for each other's lock, few enough that their memory does not grow with the clients.
const LATENCY_SHARDS: usize = 64;

/// A latency histogram in µs, allocated up to a minute at once (it still grows past that).
fn latency_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_max(60_000_000, 3).expect("histogram bounds");
    h.auto(true);
    h
}

/// The send time a chat push's `msg` starts with. The edge writes `onChat` bodies as
/// `{"msg":"<ns> <n>",…}`: that shape is read directly (a JSON parse of every body cost the
/// generator more than the SDK's own receive path); any other goes through serde_json.
fn parse_sent_ns(body: &[u8]) -> Option<u64> {
    if let Some(rest) = body.strip_prefix(br#"{"msg":""#) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && rest.get(digits) == Some(&b' ') {
            return std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        }
    }
    #[derive(serde::Deserialize)]
    struct Chat<'a> {
        #[serde(borrow)]
        msg: std::borrow::Cow<'a, str>,
    }
    let chat: Chat<'_> = serde_json::from_slice(body).ok()?;
    chat.msg.split(' ').next()?.parse().ok()
}

/// utime + stime of a process, in seconds (from /proc; 0 where unavailable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl BenchReport {
    /// A table a person reads.
    pub fn table(&self) -> String {
        let unit = if self.churn_ops > 0 {
            "joins+leaves/s"
        } else {
            "msg/s"
        };
        let mut out = format!(
            "scenario {}: {} clients over {} edges in {} rooms, offered {} {unit} for {:.1}s\n",
            self.scenario,
            self.clients,
            self.edges,
            self.rooms,
            self.offered_msgs_per_sec,
            self.duration_secs
        );
        if self.sent > 0 || self.deliveries > 0 {
            out += &format!(
                "  sent {} (errors {}), deliveries {} = {:.0}/s\n",
                self.sent, self.send_errors, self.deliveries, self.deliveries_per_sec
            );
        } else if self.send_errors > 0 {
            out += &format!("  failed requests: {}\n", self.send_errors);
        }
        if self.deliveries > 0 {
            out += &format!(
                "  latency p50 {} µs, p90 {} µs, p99 {} µs, max {} µs\n",
                self.p50_us, self.p90_us, self.p99_us, self.max_us
            );
            out += &format!(
                "  send answered: p50 {} µs, p99 {} µs\n",
                self.ack_p50_us, self.ack_p99_us
            );
        }
        out += &format!("  lost {}, duplicated {}\n", self.lost, self.duplicated);
        if self.churn_ops > 0 {
            out += &format!(
                "  churn: {} joins+leaves = {:.0}/s, latency p50 {} µs, p99 {} µs\n",
                self.churn_ops, self.churn_ops_per_sec, self.churn_p50_us, self.churn_p99_us
            );
        }
        for s in &self.servers {
            out += &format!(
                "  {:<8} pid {:<7} cpu {:.2}s  peak rss {} KiB\n",
                s.label, s.pid, s.cpu_seconds, s.peak_rss_kib
            );
        }
        if let Some(us) = self.server_cpu_us_per_delivery {
            out += &format!("  server cpu per delivery: {us:.2} µs\n");
        }
        out += &format!(
            "  load generator (this process): cpu {:.2}s = {:.0}% of one core\n",
            self.generator_cpu_seconds,
            100.0 * self.generator_cpu_seconds / self.duration_secs.max(1e-9)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_from_a_chat_push() {
        let body = serde_json::to_vec(&roomcast_protocol::protocol::OnChat {
            msg: "123456789 17".into(),
            from: "bench-1-0".into(),
            target: "*".into(),
        })
        .expect("json");
        assert_eq!(parse_sent_ns(&body), Some(123_456_789));
        // Other shapes of the same JSON take the slow path, with the same answer.
        assert_eq!(
            parse_sent_ns(br#"{"msg":"12\u0020x","from":"a"}"#),
            Some(12)
        );
        assert_eq!(parse_sent_ns(br#"{"from":"a", "msg":"34 1"}"#), Some(34));
        assert_eq!(parse_sent_ns(br#"{"msg":"56"}"#), Some(56));
        assert_eq!(parse_sent_ns(br#"{"msg":"not a time"}"#), None);
        assert_eq!(parse_sent_ns(br#"{"from":"a"}"#), None);
        assert_eq!(parse_sent_ns(b"nope"), None);
    }

    #[test]
    fn latency_histograms_merge_and_grow_past_their_size() {
        let mut a = latency_histogram();
        a.record(120_000_000).expect("grows past a minute");
        let mut total = latency_histogram();
        total.add(&a).expect("same bounds");
        assert_eq!(total.len(), 1);
    }
}
