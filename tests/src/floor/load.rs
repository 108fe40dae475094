//! The probe's load side: the clients that receive the pushes, in the load process (not the
//! server's, so that the server's CPU time is its own). QUIC clients are ordinary quinn
//! clients sharing endpoints (as the roomcast load generator shares them); UDP clients are
//! plain sockets that say hello once so the server learns their address.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use roomcast_net::{net, tls};
use roomcast_protocol::protocol::CLIENT_ALPN;
use tokio::task::JoinHandle;

use super::frame::{self, FRAME_BYTES};

/// Handshakes in progress at once (as the roomcast generator's connect concurrency).
const CONNECT_CONCURRENCY: usize = 64;

/// What the clients received.
pub struct Receipts {
    /// Frames received, in or out of a window.
    pub received: AtomicU64,
    /// Frames stamped within [start, end) (ns since the epoch) are the window's: their latency
    /// is recorded. Closed (start = end = 0) outside a window.
    window: (AtomicU64, AtomicU64),
    /// Latency in µs of the window's frames; fixed size (hdrhistogram, bounded range).
    latency: Mutex<Histogram<u64>>,
    /// Connections or reads that failed, and datagrams that were not frames.
    pub errors: AtomicU64,
    /// Idle probe: handshakes that failed and were tried again (see [`quic_idle`]).
    pub retried: AtomicU64,
}

impl Receipts {
    /// Waits for the clients to read the `sent` frames handed out since `received` counted
    /// `base`: until all arrived, or `quiet` passed without progress (what is missing then is
    /// lost). Returns how many arrived.
    pub fn wait_for(&self, base: u64, sent: u64, quiet: Duration) -> u64 {
        let (mut last, mut since) = (u64::MAX, Instant::now());
        loop {
            let got = self.received.load(Ordering::Relaxed) - base;
            if got >= sent {
                return got;
            }
            if got != last {
                (last, since) = (got, Instant::now());
            } else if since.elapsed() > quiet {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn new() -> Result<Receipts> {
        Ok(Receipts {
            received: AtomicU64::new(0),
            window: (AtomicU64::new(0), AtomicU64::new(0)),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            errors: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        })
    }

    pub(super) fn record(&self, f: &[u8]) {
        let Some(sent) = frame::sent_ns(f) else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.received.fetch_add(1, Ordering::Relaxed);
        if self.in_window(sent) {
            let us = frame::now_ns().saturating_sub(sent) / 1000;
            if let Ok(mut h) = self.latency.lock() {
                h.saturating_record(us.max(1));
            }
        }
    }

    /// Whether a frame stamped `sent_ns` is the window's.
    pub fn in_window(&self, sent_ns: u64) -> bool {
        let (start, end) = (&self.window.0, &self.window.1);
        sent_ns >= start.load(Ordering::Relaxed) && sent_ns < end.load(Ordering::Relaxed)
    }

    /// Starts a window at `start_ns` (its end is open until [`Receipts::close_window`]).
    pub fn open_window(&self, start_ns: u64) {
        if let Ok(mut h) = self.latency.lock() {
            h.reset();
        }
        self.window.0.store(start_ns, Ordering::Relaxed);
        self.window.1.store(u64::MAX, Ordering::Relaxed);
    }

    pub fn close_window(&self, end_ns: u64) {
        self.window.1.store(end_ns, Ordering::Relaxed);
    }

    /// p50 and p99 latency (µs) of the window's frames received so far.
    pub fn latency(&self) -> (u64, u64) {
        self.latency
            .lock()
            .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
            .unwrap_or((0, 0))
    }

    /// p50, p90, p99 and max latency (µs) of the window's frames received so far.
    pub fn quantiles(&self) -> [u64; 4] {
        self.latency
            .lock()
            .map(|h| {
                [
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.9),
                    h.value_at_quantile(0.99),
                    h.max(),
                ]
            })
            .unwrap_or_default()
    }
}

/// Running clients; dropping it ends their tasks and closes their connections.
pub struct Load {
    pub receipts: Arc<Receipts>,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<quinn::Endpoint>,
}

impl Drop for Load {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for e in &self.endpoints {
            e.close(0u32.into(), b"done");
        }
    }
}

/// The clients' configuration (30 s idle timeout, 5 s keep-alive, `max_uni` streams the server
/// may open) and one client endpoint per `per_endpoint` of the `n` clients.
pub(super) fn client_side(
    server: SocketAddr,
    n: usize,
    per_endpoint: usize,
    ca: &Path,
    max_uni: u32,
) -> Result<(quinn::ClientConfig, Vec<quinn::Endpoint>)> {
    let limits = tls::TransportLimits {
        max_bidi_streams: 0,
        max_uni_streams: max_uni,
        idle_timeout: Duration::from_secs(30),
        keep_alive: Duration::from_secs(5),
        early_data: false,
        mtu_discovery: true,
    };
    let config = tls::client_config(ca, CLIENT_ALPN, &limits, None)?;
    let endpoints = (0..n.div_ceil(per_endpoint.max(1)))
        .map(|_| net::endpoint(net::any_addr_for(&server), None))
        .collect::<Result<Vec<_>>>()?;
    Ok((config, endpoints))
}

/// `n` quinn clients of `server`, `per_endpoint` to a UDP socket, each reading its one uni
/// stream frame by frame. Returns once every handshake has been started.
pub async fn quic(server: SocketAddr, n: usize, per_endpoint: usize, ca: &Path) -> Result<Load> {
    let receipts = Arc::new(Receipts::new()?);
    let (config, endpoints) = client_side(server, n, per_endpoint, ca, 16)?;
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let endpoint = endpoints[i / per_endpoint.max(1)].clone();
        let (config, receipts, permits) = (config.clone(), receipts.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let connected = async {
                let _permit = permits.acquire().await.ok()?;
                endpoint
                    .connect_with(config, server, "localhost")
                    .ok()?
                    .await
                    .ok()
            };
            let Some(conn) = connected.await else {
                receipts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let Ok(mut stream) = conn.accept_uni().await else {
                receipts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut buf = [0u8; FRAME_BYTES];
            while stream.read_exact(&mut buf).await.is_ok() {
                receipts.record(&buf);
            }
        }));
    }
    Ok(Load {
        receipts,
        tasks,
        endpoints,
    })
}

/// A UDP client socket on 127.0.0.1 for the raw-UDP probes.
fn udp_client() -> Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("UDP client socket")?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UdpSocket::from_std(socket)?)
}

/// `n` UDP sockets on 127.0.0.1, each saying hello to `server` (again every half second until
/// its first frame, in case a hello was lost) and counting the frames it receives.
pub async fn udp(server: SocketAddr, n: usize) -> Result<Load> {
    let receipts = Arc::new(Receipts::new()?);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = udp_client()?;
        let receipts = receipts.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut heard = false;
            loop {
                if !heard && socket.send_to(b"hello", server).await.is_err() {
                    receipts.errors.fetch_add(1, Ordering::Relaxed);
                }
                let got = if heard {
                    match socket.recv(&mut buf).await {
                        Ok(len) => Some(len),
                        Err(_) => {
                            receipts.errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                } else {
                    tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                };
                if let Some(len) = got {
                    heard = true;
                    receipts.record(&buf[..len]);
                }
            }
        }));
    }
    Ok(Load {
        receipts,
        tasks,
        endpoints: Vec::new(),
    })
}

/// Handshakes an idle client tries before it counts as failed: with 100 000 connections being
/// set up on two shared cores a rare handshake times out (as `roomcast-dev bench idle` sees),
/// which says nothing about the memory being measured.
const IDLE_CONNECT_ATTEMPTS: u32 = 3;

/// The idle probe's clients: `n` quinn clients of `server` with the SDK's keep-alive (5 s),
/// `per_endpoint` to a UDP socket, that connect and then hold their connection without a
/// stream. Returns once every handshake has been started; handshakes tried again count in
/// `retried`, clients that gave up in `errors`.
pub async fn quic_idle(
    server: SocketAddr,
    n: usize,
    per_endpoint: usize,
    ca: &Path,
) -> Result<Load> {
    let receipts = Arc::new(Receipts::new()?);
    let (config, endpoints) = client_side(server, n, per_endpoint, ca, 0)?;
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let endpoint = endpoints[i / per_endpoint.max(1)].clone();
        let (config, receipts, permits) = (config.clone(), receipts.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let mut attempt = 0;
            let conn = loop {
                attempt += 1;
                let connected = async {
                    let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
                    endpoint
                        .connect_with(config.clone(), server, "localhost")
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                };
                match connected.await {
                    Ok(conn) => break conn,
                    Err(e) if attempt < IDLE_CONNECT_ATTEMPTS => {
                        eprintln!("idle client: handshake failed ({e}); trying again");
                        receipts.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("idle client: handshake failed ({e}); giving up");
                        receipts.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            };
            // Held until the probe drops the load (which aborts this task).
            let _ = conn.closed().await;
        }));
    }
    Ok(Load {
        receipts,
        tasks,
        endpoints,
    })
}

/// `n` UDP sockets on 127.0.0.1 that each say hello to `server` until it answers (again every
/// half second), then stay open and quiet.
pub async fn udp_idle(server: SocketAddr, n: usize) -> Result<Load> {
    let receipts = Arc::new(Receipts::new()?);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = udp_client()?;
        let receipts = receipts.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                if socket.send_to(b"hello", server).await.is_err() {
                    receipts.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let answer =
                    tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf));
                if let Ok(Ok(_)) = answer.await {
                    break;
                }
            }
            // The socket stays bound (so its address stays the server's peer) until aborted.
            std::future::pending::<()>().await;
        }));
    }
    Ok(Load {
        receipts,
        tasks,
        endpoints: Vec::new(),
    })
}
