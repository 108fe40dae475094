//! `roomcast-dev floor idle`: what an idle connection costs the transport alone (issue 13).
//!
//! A server child process (`roomcast-dev floor-server <kind> --idle --variant <v>`) accepts
//! `--connections` clients that then stay idle, and the probe reads the server's memory over
//! its control channel before any client connected and again after every one is established
//! and `--settle` seconds idle (by default 6 s: one round of 5 s keep-alives). Per connection
//! it reports the growth of VmRSS, of VmRSS after `malloc_trim(0)` (freed memory handed back,
//! e.g. handshake buffers), and of the live heap (glibc's `mallinfo2`: in-use bytes, no free
//! lists or fragmentation), each ÷ the connections open at the second reading. Kinds:
//! - `udp`: no QUIC, no TLS; a hash-map entry per peer address (the floor of knowing a peer);
//! - `quinn`: quinn's high-level API holding each accepted `Connection` (its driver task and
//!   event channel included), as the edge does;
//! - `proto`: one thread driving quinn-proto (the fanout probe's driver, `proto_server`) that
//!   holds each `Connection` in a table: no task, channel or waker per connection.
//!
//! Both QUIC kinds use the edge's TLS (ring, TLS 1.3, its certificate, ALPN `roomcast/1`,
//! 0-RTT accepted, rustls's default session tickets) and the edge's client-connection transport
//! config: 9 bidirectional + 3 unidirectional streams, 30 s idle timeout, 5 s keep-alive, ACK
//! frequency, no path MTU discovery (edge/src/node.rs). Each [`Variant`] changes one setting of
//! that, to see which ones move the floor. What the probe leaves out: roomcast's session (its
//! task, handle, room, control stream) and WebTransport's second certificate and ALPN.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::rustls;
use roomcast_net::tls;
use roomcast_protocol::protocol::CLIENT_ALPN;
use serde::Serialize;

use super::control::Shared;
use super::outbox::SendMode;
use super::{load, proto_server, quinn_server, udp_server, Kind, Server};
use crate::cluster::Certs;

/// The servers the idle probe compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleKind {
    Udp,
    Quinn,
    Proto,
}

impl IdleKind {
    pub fn name(self) -> &'static str {
        match self {
            IdleKind::Udp => "udp",
            IdleKind::Quinn => "quinn",
            IdleKind::Proto => "proto",
        }
    }

    /// The `floor-server` kind that serves it (with `--idle`).
    fn server_kind(self) -> Kind {
        match self {
            IdleKind::Udp => Kind::UdpSendto,
            IdleKind::Quinn => Kind::Quinn,
            IdleKind::Proto => Kind::ProtoSendmmsg,
        }
    }
}

/// One change to the edge's server configuration (`edge` = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// The edge's client-connection configuration, unchanged.
    Edge,
    /// Path MTU discovery on (the edge turned it off in session 5).
    Pmtud,
    /// No streams the peer may open (the edge allows 9 bidirectional + 3 unidirectional).
    NoStreams,
    /// rustls sends no TLS 1.3 session tickets (default 2): no resumption, no 0-RTT.
    NoTickets,
    /// 0-RTT refused (`max_early_data_size` 0).
    #[value(name = "no-0rtt")]
    No0rtt,
    /// Small flow-control windows and crypto buffer: stream receive window 4 KiB, connection
    /// receive and send windows 16 KiB, crypto buffer 4 KiB (defaults: 1.25 MB, unlimited,
    /// 10 MB, 16 KiB).
    SmallWindows,
    /// No QUIC datagrams (`datagram_receive_buffer_size(None)`, send buffer 0).
    NoDatagrams,
    /// No ACK-frequency extension.
    NoAckFrequency,
    /// No keep-alives from the server (the client's still flow).
    NoKeepAlive,
    /// Connection migration refused.
    NoMigration,
    /// All of no-streams, no-tickets, no-0rtt, small-windows, no-datagrams, no-ack-frequency
    /// and no-migration at once: the leanest configuration that still keeps connections alive.
    Lean,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Edge => "edge",
            Variant::Pmtud => "pmtud",
            Variant::NoStreams => "no-streams",
            Variant::NoTickets => "no-tickets",
            Variant::No0rtt => "no-0rtt",
            Variant::SmallWindows => "small-windows",
            Variant::NoDatagrams => "no-datagrams",
            Variant::NoAckFrequency => "no-ack-frequency",
            Variant::NoKeepAlive => "no-keep-alive",
            Variant::NoMigration => "no-migration",
            Variant::Lean => "lean",
        }
    }

    fn has(self, v: Variant) -> bool {
        self == v
            || (self == Variant::Lean
                && matches!(
                    v,
                    Variant::NoStreams
                        | Variant::NoTickets
                        | Variant::No0rtt
                        | Variant::SmallWindows
                        | Variant::NoDatagrams
                        | Variant::NoAckFrequency
                        | Variant::NoMigration
                ))
    }
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Servers to measure, comma-separated: udp, quinn, proto.
    #[arg(long, value_delimiter = ',', default_value = "udp,quinn,proto")]
    pub kinds: Vec<IdleKind>,
    /// Configurations of the QUIC servers, comma-separated (see `Variant`): edge, pmtud,
    /// no-streams, no-tickets, no-0rtt, small-windows, no-datagrams, no-ack-frequency,
    /// no-keep-alive, no-migration, lean. `udp` runs once whatever this says.
    #[arg(long, value_delimiter = ',', default_value = "edge")]
    pub variants: Vec<Variant>,
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// QUIC clients sharing one client endpoint (UDP socket), as in `roomcast-dev bench`.
    #[arg(long, default_value_t = 500)]
    pub clients_per_endpoint: usize,
    /// Seconds the connections stay idle, all established, before the second reading.
    #[arg(long, default_value_t = 6)]
    pub settle: u64,
    /// Seconds allowed for all connections to be established.
    #[arg(long, default_value_t = 300)]
    pub connect_timeout: u64,
    /// Run the servers under heaptrack (Debian package `heaptrack`): each allocation site's
    /// bytes at the server's peak, in `heaptrack.floor-server.<pid>.gz` (`heaptrack_print`).
    /// The readings then include heaptrack's own tables.
    #[arg(long)]
    pub heaptrack: bool,
    /// Where development certificates are read from (generated if missing).
    #[arg(long, default_value = "certs")]
    pub certs: std::path::PathBuf,
}

/// The edge's transport limits for client connections (edge/src/node.rs with its defaults:
/// 8 requests in flight + the control stream, HTTP/3's 3 unidirectional streams).
fn edge_limits() -> tls::TransportLimits {
    tls::TransportLimits {
        max_bidi_streams: 9,
        max_uni_streams: 3,
        idle_timeout: Duration::from_secs(30),
        keep_alive: Duration::from_secs(5),
        early_data: true,
        mtu_discovery: false,
    }
}

/// The edge's server configuration (as `tls::server_config` builds it) with `variant` applied.
pub fn server_config(cert: &Path, key: &Path, variant: Variant) -> Result<quinn::ServerConfig> {
    let mut limits = edge_limits();
    if variant.has(Variant::Pmtud) {
        limits.mtu_discovery = true;
    }
    if variant.has(Variant::NoStreams) {
        (limits.max_bidi_streams, limits.max_uni_streams) = (0, 0);
    }
    if variant.has(Variant::No0rtt) {
        limits.early_data = false;
    }
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(tls::load_certs(cert)?, tls::load_key(key)?)
    .context("certificate and key do not match")?;
    tls.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
    if limits.early_data {
        tls.max_early_data_size = u32::MAX;
    }
    if variant.has(Variant::NoTickets) {
        tls.send_tls13_tickets = 0;
    }
    let mut transport = limits.transport()?;
    if variant.has(Variant::SmallWindows) {
        transport
            .stream_receive_window(4096u32.into())
            .receive_window(16_384u32.into())
            .send_window(16_384)
            .crypto_buffer_size(4096);
    }
    if variant.has(Variant::NoDatagrams) {
        transport
            .datagram_receive_buffer_size(None)
            .datagram_send_buffer_size(0);
    }
    if variant.has(Variant::NoAckFrequency) {
        transport.ack_frequency_config(None);
    }
    if variant.has(Variant::NoKeepAlive) {
        transport.keep_alive_interval(None);
    }
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(Arc::new(transport));
    if variant.has(Variant::NoMigration) {
        cfg.migration(false);
    }
    Ok(cfg)
}

/// The server process's side: holds connections until stdin closes.
pub fn serve(
    kind: Kind,
    socket: UdpSocket,
    config: Option<quinn::ServerConfig>,
    shared: Arc<Shared>,
) -> Result<()> {
    let quic = || config.context("QUIC server without a configuration");
    match kind {
        Kind::UdpSendto | Kind::UdpSendmmsg => udp_server::serve_idle(socket, shared),
        Kind::Quinn | Kind::QuinnSendmmsg => quinn_server::serve_idle(socket, quic()?, shared),
        Kind::ProtoSendto | Kind::ProtoSendmmsg => {
            proto_server::serve(socket, quic()?, 1, SendMode::Mmsg, true, shared)
        }
    }
}

/// One idle measurement.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRun {
    pub kind: String,
    pub variant: String,
    pub connections: usize,
    /// Connections the server counted as established.
    pub established: u64,
    /// Of which still open at the second reading.
    pub live: u64,
    /// Client handshakes that failed and were tried again.
    pub retried: u64,
    pub connect_secs: f64,
    pub settle_secs: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_kib_per_connection: f64,
    /// The same after `malloc_trim(0)` in the server (the first reading is taken trimmed).
    pub rss_trimmed_kib_per_connection: f64,
    pub heap_before_bytes: u64,
    pub heap_after_bytes: u64,
    /// Live heap growth ÷ connections open (`live`), in KiB (1024 bytes).
    pub heap_kib_per_connection: f64,
}

impl IdleRun {
    pub const HEADER: &'static str = "| server | variant | connections | established / open at the end | handshakes retried | connected in | RSS KiB/conn | RSS after malloc_trim KiB/conn | live heap KiB/conn |\n|---|---|---|---|---|---|---|---|---|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} / {} | {} | {:.1} s | {:.2} | {:.2} | {:.2} |",
            self.kind,
            self.variant,
            self.connections,
            self.established,
            self.live,
            self.retried,
            self.connect_secs,
            self.rss_kib_per_connection,
            self.rss_trimmed_kib_per_connection,
            self.heap_kib_per_connection,
        )
    }
}

/// How long the number of established connections may stand still, short of all of them,
/// before the probe measures what it has.
const STALL: Duration = Duration::from_secs(60);

/// What the server said on `memory`.
struct Memory {
    rss_kib: u64,
    heap_bytes: u64,
    live: u64,
}

fn memory(server: &mut Server) -> Result<Memory> {
    server.command("memory")?;
    let line = server.line("memory ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|w| w.parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad memory line `{line}`"))?;
    match v[..] {
        [rss_kib, heap_bytes, live] => Ok(Memory {
            rss_kib,
            heap_bytes,
            live,
        }),
        _ => Err(anyhow!("bad memory line `{line}`")),
    }
}

fn trimmed(server: &mut Server) -> Result<Memory> {
    server.command("trim")?;
    server.line("trimmed")?;
    memory(server)
}

/// Measures every kind with every variant; prints a JSON line per run and a table at the end.
pub fn run(bin: &Path, args: IdleArgs) -> Result<Vec<IdleRun>> {
    if args.connections == 0 || args.clients_per_endpoint == 0 {
        bail!("--connections and --clients-per-endpoint must be at least 1");
    }
    if args.variants.is_empty() {
        bail!("--variants needs at least one");
    }
    let certs = Certs::ensure(&args.certs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let program = if args.heaptrack {
        crate::scenarios::heaptrack_wrapper(bin, "floor-server")?
    } else {
        bin.to_path_buf()
    };
    let mut runs = Vec::new();
    for &kind in &args.kinds {
        let variants = if kind == IdleKind::Udp {
            &args.variants[..1]
        } else {
            &args.variants[..]
        };
        for &variant in variants {
            let r = one(&program, &rt, kind, variant, &args, &certs)?;
            println!("{}", serde_json::to_string(&r)?);
            println!("{}", r.row());
            runs.push(r);
        }
    }
    println!(
        "\nidle connections on one server, {} s idle after the last connected (per connection: growth ÷ connections open)",
        args.settle
    );
    println!("{}", IdleRun::HEADER);
    for r in &runs {
        println!("{}", r.row());
    }
    Ok(runs)
}

fn one(
    // The server's program: roomcast-dev, or its heaptrack wrapper.
    bin: &Path,
    rt: &tokio::runtime::Runtime,
    kind: IdleKind,
    variant: Variant,
    args: &IdleArgs,
    certs: &Certs,
) -> Result<IdleRun> {
    let extra = ["--idle", "--variant", variant.name()].map(String::from);
    let mut server = Server::start(bin, kind.server_kind(), &extra, certs, args.heaptrack)?;
    // Its runtime's threads and the endpoint are up once it listens; let it settle a moment.
    std::thread::sleep(Duration::from_millis(500));
    // Trimmed, so that both readings after start from the same baseline.
    let before = trimmed(&mut server)?;
    let t0 = Instant::now();
    let n = args.connections;
    let load = {
        let _guard = rt.enter();
        match kind {
            IdleKind::Udp => rt.block_on(load::udp_idle(server.addr, n))?,
            _ => rt.block_on(load::quic_idle(
                server.addr,
                n,
                args.clients_per_endpoint,
                &certs.ca,
            ))?,
        }
    };
    let limit = Duration::from_secs(args.connect_timeout);
    let (mut last, mut since) = (0, Instant::now());
    let established = loop {
        let s = server.stats()?;
        if s.connections >= n as u64 {
            break s.connections;
        }
        if s.connections != last {
            (last, since) = (s.connections, Instant::now());
        } else if s.connections > 0 && since.elapsed() > STALL {
            // A few handshakes that never complete on the server (the client saw its side
            // finish) must not hold up the reading: it is then divided by the connections
            // open, and the run says how many were established.
            eprintln!(
                "{}/{}: {} of {n} established, none more in {STALL:?}: measuring those",
                kind.name(),
                variant.name(),
                s.connections
            );
            break s.connections;
        }
        let errors = load
            .receipts
            .errors
            .load(std::sync::atomic::Ordering::Relaxed);
        if t0.elapsed() > limit || errors > 0 {
            bail!(
                "{}/{}: {} of {n} connections established in {limit:?} ({errors} client errors)",
                kind.name(),
                variant.name(),
                s.connections
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let connect_secs = t0.elapsed().as_secs_f64();
    let retried = load
        .receipts
        .retried
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.settle));
    let after = memory(&mut server)?;
    let after_trimmed = trimmed(&mut server)?;
    drop(load);
    server.stop();
    // Per connection held at the reading (all N, unless some never completed: see STALL).
    let held = after.live.max(1);
    let per = |b: u64, a: u64| a.saturating_sub(b) as f64 / held as f64;
    Ok(IdleRun {
        kind: kind.name().into(),
        variant: if kind == IdleKind::Udp {
            "-".into()
        } else {
            variant.name().into()
        },
        connections: n,
        established,
        live: after.live,
        retried,
        connect_secs,
        settle_secs: args.settle,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        rss_kib_per_connection: per(before.rss_kib, after.rss_kib),
        rss_trimmed_kib_per_connection: per(before.rss_kib, after_trimmed.rss_kib),
        heap_before_bytes: before.heap_bytes,
        heap_after_bytes: after.heap_bytes,
        heap_kib_per_connection: per(before.heap_bytes, after.heap_bytes) / 1024.0,
    })
}
