//! The multi-hop probe's clients, in the load process: members that join a room on one of the
//! edges and read its pushes, and one sender per room (a member of it, as in fanout-100) that
//! sends messages as requests on new bidirectional streams, paced evenly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::super::frame::{self, FRAME_BYTES};
use super::super::load::{client_side, Receipts};
use super::wire;

/// Handshakes in progress at once (as the one-hop probe's clients).
const CONNECT_CONCURRENCY: usize = 64;
/// Requests in flight per room: the senders share `IN_FLIGHT × rooms` permits (`roomcast-dev
/// bench` allows this many per room); beyond, a sender waits, so a stalled path slows the
/// senders instead of queueing without bound.
const IN_FLIGHT: u32 = 256;

/// One member: its room, where it joined, its connection (a sender's too), and what it read.
struct Member {
    room: usize,
    edge: usize,
    conn: Mutex<Option<quinn::Connection>>,
    /// Frames read.
    received: AtomicU64,
}

/// Running members; dropping it ends their tasks and closes their connections.
pub struct Members {
    pub receipts: Arc<Receipts>,
    members: Vec<Arc<Member>>,
    joined: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<quinn::Endpoint>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for e in &self.endpoints {
            e.close(0u32.into(), b"done");
        }
    }
}

/// `n` members: member `i` joins room `i % rooms` on edge `(i / rooms) % edges.len()`, so every
/// room has members on every edge. Returns once every handshake has been started.
pub fn connect(
    edges: &[SocketAddr],
    n: usize,
    rooms: usize,
    per_endpoint: usize,
    ca: &Path,
) -> Result<Members> {
    let receipts = Arc::new(Receipts::new()?);
    let (config, endpoints) = client_side(edges[0], n, per_endpoint, ca, 16)?;
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let joined = Arc::new(AtomicU64::new(0));
    let mut members = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let m = Arc::new(Member {
            room: i % rooms,
            edge: (i / rooms) % edges.len(),
            conn: Mutex::new(None),
            received: AtomicU64::new(0),
        });
        members.push(m.clone());
        let endpoint = endpoints[i / per_endpoint.max(1)].clone();
        let edge = edges[m.edge];
        let (config, receipts, permits, joined) = (
            config.clone(),
            receipts.clone(),
            permits.clone(),
            joined.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let stream = async {
                let conn = {
                    let _permit = permits.acquire().await.ok()?;
                    endpoint
                        .connect_with(config, edge, "localhost")
                        .ok()?
                        .await
                        .ok()?
                };
                let (mut send, mut recv) = conn.open_bi().await.ok()?;
                send.write_all(&wire::join(m.room)).await.ok()?;
                send.finish().ok()?;
                let answer = recv.read_to_end(1).await.ok()?;
                if answer != [1] {
                    return None;
                }
                *m.conn.lock().ok()? = Some(conn.clone());
                joined.fetch_add(1, Ordering::Relaxed);
                conn.accept_uni().await.ok()
            };
            let Some(mut stream) = stream.await else {
                receipts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut buf = [0u8; FRAME_BYTES];
            while stream.read_exact(&mut buf).await.is_ok() {
                m.received.fetch_add(1, Ordering::Relaxed);
                receipts.record(&buf);
            }
        }));
    }
    Ok(Members {
        receipts,
        members,
        joined,
        tasks,
        endpoints,
    })
}

impl Members {
    /// Members whose join was answered.
    pub fn joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    /// Members that did not read exactly the messages answered to their room (`answered[r]`,
    /// counted since the members joined).
    pub fn short_members(&self, answered: &[u64]) -> u64 {
        self.members
            .iter()
            .filter(|m| m.received.load(Ordering::Relaxed) != answered[m.room])
            .count() as u64
    }

    /// Starts one sender per room at `rate` messages/s in all (each room `rate / rooms`, the
    /// rooms' phases spread over the interval, as `roomcast-dev bench` paces them). The sender
    /// of room `r` is a member of it on edge `r % edges`, so both edges take requests.
    pub fn send(
        &self,
        rate: u64,
        rooms: usize,
        edges: usize,
        stats: Arc<SendStats>,
    ) -> Result<Senders> {
        let stop = Arc::new(AtomicBool::new(false));
        let limit = Arc::new(Semaphore::new(IN_FLIGHT as usize * rooms));
        let mut tasks = Vec::new();
        for r in 0..rooms {
            let pick = |edge: Option<usize>| {
                self.members
                    .iter()
                    .find(|m| m.room == r && edge.is_none_or(|e| m.edge == e))
            };
            let Some(conn) = pick(Some(r % edges))
                .or_else(|| pick(None))
                .and_then(|m| m.conn.lock().ok()?.clone())
            else {
                bail!("room {r} has no joined member to send");
            };
            let (stop, limit, stats) = (stop.clone(), limit.clone(), stats.clone());
            let receipts = self.receipts.clone();
            let interval = Duration::from_secs_f64(rooms as f64 / rate as f64);
            tasks.push(tokio::spawn(async move {
                let mut next = Instant::now() + interval.mul_f64(r as f64 / rooms as f64);
                while !stop.load(Ordering::Relaxed) {
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(permit) = limit.clone().acquire_owned().await else {
                        break;
                    };
                    let (conn, stats, receipts) = (conn.clone(), stats.clone(), receipts.clone());
                    tokio::spawn(async move {
                        let sent = frame::now_ns();
                        match request(&conn, r, sent).await {
                            Some(_seq) => {
                                stats.answered[r].fetch_add(1, Ordering::Relaxed);
                                if receipts.in_window(sent) {
                                    let us = frame::now_ns().saturating_sub(sent) / 1000;
                                    if let Ok(mut h) = stats.answers.lock() {
                                        h.saturating_record(us.max(1));
                                    }
                                }
                            }
                            None => {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        drop(permit);
                    });
                }
            }));
        }
        Ok(Senders {
            stop,
            limit,
            tasks,
            permits: IN_FLIGHT * rooms as u32,
        })
    }
}

/// One message: a new bidirectional stream to the sender's edge; the answer is the seq.
async fn request(conn: &quinn::Connection, room: usize, sent_ns: u64) -> Option<u64> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&wire::send(room, sent_ns)).await.ok()?;
    send.finish().ok()?;
    let answer = recv.read_to_end(wire::MAX_ANSWER).await.ok()?;
    wire::seq_of(&answer)
}

/// What the senders counted, over all rates.
pub struct SendStats {
    /// Messages answered, per room.
    pub answered: Vec<AtomicU64>,
    /// Requests that failed (stream or connection error, bad answer).
    pub errors: AtomicU64,
    /// Answer latency (µs) of the window's messages.
    pub answers: Mutex<Histogram<u64>>,
}

impl SendStats {
    pub fn new(rooms: usize) -> Result<SendStats> {
        Ok(SendStats {
            answered: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
            answers: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        })
    }

    pub fn answered(&self) -> Vec<u64> {
        self.answered
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }
}

/// Running senders.
pub struct Senders {
    stop: Arc<AtomicBool>,
    limit: Arc<Semaphore>,
    tasks: Vec<JoinHandle<()>>,
    permits: u32,
}

impl Senders {
    /// Stops sending and waits (up to `patience`) for the requests in flight to be answered.
    pub async fn stop(self, patience: Duration) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        match tokio::time::timeout(patience, self.limit.acquire_many(self.permits)).await {
            Ok(Ok(_)) => Ok(()),
            _ => bail!("requests still unanswered after {patience:?}"),
        }
    }
}
