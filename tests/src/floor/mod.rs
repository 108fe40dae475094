//! `roomcast-dev floor`: the transport's own cost per delivery, without roomcast (issue 13).
//!
//! The fanout-100 shape (1000 clients, 10 rooms of 100, a message to one room at a time,
//! spread evenly over the second) pushed by servers that are nothing but a transport:
//! - `udp-sendto` / `udp-sendmmsg`: one 100-byte datagram per delivery, no crypto; the floor
//!   of any design that sends one datagram per delivery, unbatched and batched;
//! - `quinn`: quinn's high-level API, one uni stream per connection, one `write_chunks` per
//!   delivery polled once; `quinn-sendmmsg`: the same on the edge's batching socket
//!   (`roomcast_net::batch`, `--udp-send-batching on`);
//! - `proto-sendto` / `proto-sendmmsg`: one thread driving quinn-proto itself, transmits of
//!   all connections sent one `sendto` each or batched into `sendmmsg`.
//!
//! The server runs as a child process (`roomcast-dev floor-server <kind>`), so its CPU time
//! (/proc utime, stime) and, with `--callgrind`, its instructions are its own; the clients
//! run in this process. Layout:
//! - [`control`]: the server's control channel (stdin/stdout) and message schedule;
//! - [`frame`]: the 100-byte frame and its send stamp;
//! - [`outbox`]: datagrams sent by `sendto` or `sendmmsg`, counting the calls;
//! - [`backlog`]: the bounded per-stream queue of the QUIC servers;
//! - [`udp_server`], [`quinn_server`], [`proto_server`]: the servers;
//! - [`load`]: the clients; [`report`]: one measured window;
//! - [`hops`]: `--path backend|direct`, fanout-100's whole message path (sender → edge →
//!   backend → Redis → both edges → members) with bare parts, instead of one hop;
//! - [`idle`]: `roomcast-dev floor idle`, the memory of idle connections instead (its servers
//!   are the same kinds started with `--idle`); [`memory`]: the readings it takes.
//!
//! See BENCHMARKS.md § Transport floor and § Idle floor for the numbers and what the probes
//! leave out.

pub mod backlog;
pub mod control;
pub mod frame;
pub mod hops;
pub mod idle;
pub mod load;
pub mod memory;
pub mod outbox;
pub mod proto_server;
pub mod quinn_server;
pub mod report;
pub mod udp_server;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, ValueEnum};
use roomcast_net::tls;
use roomcast_protocol::protocol::CLIENT_ALPN;

use crate::callgrind::Callgrind;
use crate::cluster::Certs;
use report::{cpu_ticks, Run, TICKS_PER_SEC};

/// The servers the probe compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(name = "udp-sendto")]
    UdpSendto,
    #[value(name = "udp-sendmmsg")]
    UdpSendmmsg,
    #[value(name = "quinn")]
    Quinn,
    #[value(name = "quinn-sendmmsg")]
    QuinnSendmmsg,
    #[value(name = "proto-sendto")]
    ProtoSendto,
    #[value(name = "proto-sendmmsg")]
    ProtoSendmmsg,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::UdpSendto => "udp-sendto",
            Kind::UdpSendmmsg => "udp-sendmmsg",
            Kind::Quinn => "quinn",
            Kind::QuinnSendmmsg => "quinn-sendmmsg",
            Kind::ProtoSendto => "proto-sendto",
            Kind::ProtoSendmmsg => "proto-sendmmsg",
        }
    }

    fn is_udp(self) -> bool {
        matches!(self, Kind::UdpSendto | Kind::UdpSendmmsg)
    }
}

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// The message path: `one-hop` (each message made inside the `--kinds` servers), `backend`
    /// (sender → edge → backend → Redis EVALSHA → pub/sub → 2 edges → members, fanout-100's
    /// hops with bare quinn and Redis) or `direct` (the same without the backend: the edges
    /// run the script). `backend` and `direct` ignore `--kinds`.
    #[arg(long, value_enum, default_value = "one-hop")]
    pub path: hops::MsgPath,
    /// Servers to measure, comma-separated: udp-sendto, udp-sendmmsg, quinn, quinn-sendmmsg,
    /// proto-sendto, proto-sendmmsg.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "udp-sendto,udp-sendmmsg,quinn,quinn-sendmmsg,proto-sendto,proto-sendmmsg"
    )]
    pub kinds: Vec<Kind>,
    /// Offered messages per second (each to one room), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,600")]
    pub rates: Vec<u64>,
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// QUIC clients sharing one client endpoint (UDP socket), as in `roomcast-dev bench`.
    #[arg(long, default_value_t = 500)]
    pub clients_per_endpoint: usize,
    /// Seconds measured per rate.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Run the server (with `--path backend|direct`: the edges and the backend) under
    /// valgrind's callgrind and report its user-space instructions per delivery over the
    /// window. ~50x slower: use few clients and low rates
    /// (e.g. `--clients 200 --rates 20`).
    #[arg(long)]
    pub callgrind: bool,
    /// Where development certificates are read from (generated if missing).
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
}

/// `roomcast-dev floor-server <kind>`: the server side, started by [`run`].
#[derive(Debug, Parser)]
#[command(name = "roomcast-dev floor-server")]
pub struct ServeArgs {
    pub kind: Kind,
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// TLS certificate and key (QUIC servers).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Hold idle connections instead of pushing (`roomcast-dev floor idle`).
    #[arg(long)]
    pub idle: bool,
    /// With --idle: the server configuration's variant.
    #[arg(long, value_enum, default_value = "edge")]
    pub variant: idle::Variant,
    /// A role in the multi-hop probe (`floor --path backend|direct`) instead of pushing.
    #[arg(long, value_enum)]
    pub hop: Option<hops::Role>,
    /// With --hop: the Redis to run the script on and subscribe to.
    #[arg(long)]
    pub redis: Option<String>,
    /// With --hop edge: forward messages to this backend (without it the edge runs the script).
    #[arg(long)]
    pub backend: Option<SocketAddr>,
    /// With --hop: the CA of the mutual TLS between edge and backend.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// The server process: binds, prints `listening <addr>`, then serves until stdin closes.
pub fn serve(args: ServeArgs) -> Result<()> {
    tls::install_crypto_provider();
    if args.rooms == 0 {
        bail!("--rooms must be at least 1");
    }
    // The edge's socket: 4 MiB buffers requested.
    let socket = roomcast_net::net::udp_socket(args.listen)?;
    if let Some(role) = args.hop {
        if args.kind != Kind::Quinn || args.idle {
            bail!("--hop runs the quinn server only, without --idle");
        }
        return hops::serve(role, &args, socket);
    }
    let config = match (args.kind.is_udp(), &args.cert, &args.key) {
        (true, _, _) => None,
        (false, Some(cert), Some(key)) if args.idle => {
            Some(idle::server_config(cert, key, args.variant)?)
        }
        (false, Some(cert), Some(key)) => Some(tls::server_config(
            cert,
            key,
            CLIENT_ALPN,
            &edge_limits(),
            None,
        )?),
        (false, _, _) => bail!("{} needs --cert and --key", args.kind.name()),
    };
    println!("listening {}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let shared = Arc::new(control::Shared::default());
    control::spawn_stdin(shared.clone());
    if args.idle {
        return idle::serve(args.kind, socket, config, shared);
    }
    use outbox::SendMode::{Mmsg, OneByOne};
    let quic = || config.context("QUIC server without a configuration");
    match args.kind {
        Kind::UdpSendto => udp_server::serve(socket, args.rooms, OneByOne, shared),
        Kind::UdpSendmmsg => udp_server::serve(socket, args.rooms, Mmsg, shared),
        Kind::Quinn => quinn_server::serve(socket, quic()?, args.rooms, false, shared),
        Kind::QuinnSendmmsg => quinn_server::serve(socket, quic()?, args.rooms, true, shared),
        Kind::ProtoSendto => {
            proto_server::serve(socket, quic()?, args.rooms, OneByOne, false, shared)
        }
        Kind::ProtoSendmmsg => {
            proto_server::serve(socket, quic()?, args.rooms, Mmsg, false, shared)
        }
    }
}

/// The transport limits the edge gives client connections (edge/src/node.rs, WebTransport
/// off): the probe's QUIC servers run the edge's configuration, ACK frequency included.
fn edge_limits() -> tls::TransportLimits {
    tls::TransportLimits {
        max_bidi_streams: 9,
        max_uni_streams: 0,
        idle_timeout: Duration::from_secs(30),
        keep_alive: Duration::from_secs(5),
        early_data: true,
        mtu_discovery: false,
    }
}

/// Measures every kind at every rate; prints a JSON line per window and a table at the end.
pub fn run(bin: &Path, args: FloorArgs) -> Result<Vec<Run>> {
    if args.path != hops::MsgPath::OneHop {
        bail!(
            "--path {} is measured by floor::hops::run",
            args.path.name()
        );
    }
    if args.clients == 0 || args.rooms == 0 || args.clients_per_endpoint == 0 {
        bail!("--clients, --rooms and --clients-per-endpoint must be at least 1");
    }
    if args.rates.contains(&0) {
        bail!("--rates must be positive");
    }
    let certs = Certs::ensure(&args.certs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let callgrind = if args.callgrind {
        Some(Callgrind::wrap(bin, "floor-server")?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for &kind in &args.kinds {
        let program = callgrind
            .as_ref()
            .map(|c| c.script())
            .unwrap_or(bin.to_path_buf());
        let rooms = ["--rooms".to_string(), args.rooms.to_string()];
        let mut server = Server::start(&program, kind, &rooms, &certs, callgrind.is_some())?;
        let load = {
            let _guard = rt.enter();
            if kind.is_udp() {
                rt.block_on(load::udp(server.addr, args.clients))?
            } else {
                rt.block_on(load::quic(
                    server.addr,
                    args.clients,
                    args.clients_per_endpoint,
                    &certs.ca,
                ))?
            }
        };
        server.wait_for_clients(args.clients, &load, callgrind.is_some())?;
        for &rate in &args.rates {
            let r = measure(&mut server, &load, kind, rate, &args, callgrind.as_ref())?;
            println!("{}", serde_json::to_string(&r)?);
            println!("{}", r.row());
            runs.push(r);
        }
        drop(load);
        server.stop();
    }
    report::print_table(
        &format!(
            "fanout shape: {} clients, {} rooms, {} s windows after {} s warm-up",
            args.clients, args.rooms, args.duration, args.warmup
        ),
        Run::HEADER,
        runs.iter().map(Run::row),
        callgrind.as_ref(),
    );
    Ok(runs)
}

/// What the server reported on `stats`.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    connections: u64,
    deliveries: u64,
    send_calls: u64,
    datagrams: u64,
    dropped: u64,
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    addr: SocketAddr,
    /// Replies wait this long (valgrind makes the server ~50x slower).
    patience: Duration,
}

impl Server {
    fn start(
        program: &Path,
        kind: Kind,
        extra: &[String],
        certs: &Certs,
        slow: bool,
    ) -> Result<Server> {
        let mut args = extra.to_vec();
        args.extend(hops::cert_args(&certs.edge_cert, &certs.edge_key));
        Server::spawn(program, kind, &args, slow)
    }

    /// Starts `program floor-server <kind> <args>` and reads the address it listens on.
    fn spawn(program: &Path, kind: Kind, args: &[String], slow: bool) -> Result<Server> {
        let mut cmd = Command::new(program);
        cmd.arg("floor-server")
            .arg(kind.name())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        crate::child::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdin = child.stdin.take();
        // Bounded: the server writes a line per command, and we read each reply.
        let (tx, lines) = std::sync::mpsc::sync_channel(64);
        let stdout = child.stdout.take().context("server stdout")?;
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            child,
            stdin,
            lines,
            addr: "127.0.0.1:0".parse()?,
            patience: Duration::from_secs(if slow { 120 } else { 20 }),
        };
        let line = s.line("listening ")?;
        s.addr = line
            .parse()
            .with_context(|| format!("server said `listening {line}`"))?;
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the next line that starts with `prefix`.
    fn line(&mut self, prefix: &str) -> Result<String> {
        let deadline = Instant::now() + self.patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Ok(rest.to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("the server said no `{prefix}` in {:?}", self.patience)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!("the server exited ({status})")
                }
            }
        }
    }

    fn command(&mut self, c: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("server stdin closed")?;
        writeln!(stdin, "{c}")
            .and_then(|_| stdin.flush())
            .context("the server stopped reading commands")
    }

    fn stats(&mut self) -> Result<Stats> {
        self.command("stats")?;
        let line = self.line("stats ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad stats line `{line}`"))?;
        match v[..] {
            [connections, deliveries, send_calls, datagrams, dropped] => Ok(Stats {
                connections,
                deliveries,
                send_calls,
                datagrams,
                dropped,
            }),
            _ => Err(anyhow!("bad stats line `{line}`")),
        }
    }

    fn wait_for_clients(&mut self, n: usize, load: &load::Load, slow: bool) -> Result<()> {
        let limit = Duration::from_secs(if slow { 600 } else { 120 });
        let deadline = Instant::now() + limit;
        loop {
            let s = self.stats()?;
            if s.connections >= n as u64 {
                return Ok(());
            }
            let errors = load
                .receipts
                .errors
                .load(std::sync::atomic::Ordering::Relaxed);
            if Instant::now() > deadline || errors > 0 {
                bail!(
                    "{} of {n} clients connected in {limit:?} ({errors} client errors)",
                    s.connections
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Closes the server's stdin (it exits), waits for it, kills it if it lingers.
    fn stop(mut self) {
        self.stdin = None;
        crate::child::terminate_all(&mut [&mut self.child], Duration::from_secs(5));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn measure(
    server: &mut Server,
    load: &load::Load,
    kind: Kind,
    rate: u64,
    args: &FloorArgs,
    callgrind: Option<&Callgrind>,
) -> Result<Run> {
    use std::sync::atomic::Ordering::Relaxed;
    let receipts = &load.receipts;
    let received_at_go = receipts.received.load(Relaxed);
    let at_go = server.stats()?;
    server.command(&format!("go {rate}"))?;
    std::thread::sleep(Duration::from_secs(args.warmup));
    let pid = server.pid();
    if callgrind.is_some() {
        Callgrind::zero(pid);
    }
    let s0 = server.stats()?;
    let (u0, k0) = cpu_ticks(pid);
    let (lu0, lk0) = cpu_ticks(std::process::id());
    let t0 = Instant::now();
    receipts.open_window(frame::now_ns());
    std::thread::sleep(Duration::from_secs(args.duration));
    let s1 = server.stats()?;
    let (u1, k1) = cpu_ticks(pid);
    let (lu1, lk1) = cpu_ticks(std::process::id());
    let secs = t0.elapsed().as_secs_f64();
    receipts.close_window(frame::now_ns());
    let instructions = callgrind.map(|c| c.window_instructions(pid)).transpose()?;
    server.command("stop")?;
    // The server reads `stop` between messages; give it that long before the final count.
    std::thread::sleep(Duration::from_millis(200));
    let at_stop = server.stats()?;
    let sent = at_stop.deliveries - at_go.deliveries;
    // Wait for the clients to read what is in flight: until all arrived, or 2 s without
    // progress (what is missing then is lost).
    let received = receipts.wait_for(
        received_at_go,
        sent,
        server.patience.min(Duration::from_secs(10)) / 5,
    );
    let deliveries = s1.deliveries - s0.deliveries;
    let per = |x: f64| x / deliveries.max(1) as f64;
    let user = per((u1 - u0) as f64 / TICKS_PER_SEC * 1e6);
    let sys = per((k1 - k0) as f64 / TICKS_PER_SEC * 1e6);
    let (p50_us, p99_us) = receipts.latency();
    Ok(Run {
        kind: kind.name().into(),
        clients: args.clients,
        rooms: args.rooms,
        rate,
        window_secs: secs,
        deliveries,
        deliveries_per_sec: deliveries as f64 / secs,
        server_user_us_per_delivery: user,
        server_sys_us_per_delivery: sys,
        server_cpu_us_per_delivery: user + sys,
        send_calls_per_delivery: per((s1.send_calls - s0.send_calls) as f64),
        datagrams_per_delivery: per((s1.datagrams - s0.datagrams) as f64),
        p50_us,
        p99_us,
        lost: sent.saturating_sub(received),
        dropped: at_stop.dropped - at_go.dropped,
        client_errors: receipts.errors.load(Relaxed),
        load_cpu_secs: ((lu1 + lk1) - (lu0 + lk0)) as f64 / TICKS_PER_SEC,
        instructions_per_delivery: instructions.map(|i| per(i as f64)),
        instructions_per_datagram: instructions
            .map(|i| i as f64 / (s1.datagrams - s0.datagrams).max(1) as f64),
    })
}
