//! The clients of a chaos run, all SDK users on loopback:
//! - **observers** ([`observer`]): enter their rooms once and never send or leave; they record
//!   every answer and every push. They run their own reconnect/resume loop on the SDK's
//!   `Connection` (not `Client`) because `Client` hides the resume answer — its member lists
//!   and `gap` — which the checker needs.
//! - **senders** ([`sender`]): `Client`s in every room, sending at the configured rate; they
//!   record every `chat.send` and its answer.
//! - **churners** ([`churner`]): `Client`s that enter and leave rooms, close, lose their
//!   connection (and resume), and log in again, so presence changes all the time.
//!
//! Every loop ends when its stop flag is raised, and every wait inside is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use roomcast_client::{Client, ClientError, ClientOptions, Connection, Push};
use roomcast_protocol::protocol::{
    route, DevToken, DevTokenRequest, Enter, Entered, EntryAnswer, QueryEntry, Resume, ResumeAnswer,
};

use super::history::{Event, Recorder};
use super::Rng;

/// What every client task shares.
#[derive(Clone)]
pub struct Ctx {
    /// Every edge's client address (restarted edges come back on the same one).
    pub edges: Arc<Vec<SocketAddr>>,
    pub ca: PathBuf,
    pub rec: Recorder,
}

impl Ctx {
    /// Options with edge `gate` (modulo the edge count) as the gate.
    fn options(&self, gate: usize) -> ClientOptions {
        let mut o = ClientOptions::new(self.edges[gate % self.edges.len()], self.ca.clone());
        o.request_timeout = Duration::from_secs(5);
        // Long enough to outlive any fault of the run; the stop flag ends the client anyway.
        o.reconnect_for = Duration::from_secs(3600);
        o
    }
}

/// A stop flag that tasks can poll and sleep on.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `d` in small steps; false if the flag was raised meanwhile.
    pub async fn sleep(&self, d: Duration) -> bool {
        let end = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < end {
            if self.is_raised() {
                return false;
            }
            let step = (end - tokio::time::Instant::now()).min(Duration::from_millis(100));
            tokio::time::sleep(step).await;
        }
        !self.is_raised()
    }
}

/// Asks the gate at edge `gate` for `uid`'s edge and connects there.
async fn connect_via_gate(ctx: &Ctx, uid: &str, gate: usize) -> Result<Connection, ClientError> {
    let opts = ctx.options(gate);
    let answer = roomcast_client::client::query_entry(&opts, uid).await?;
    let addr: SocketAddr = format!("{}:{}", answer.host, answer.port)
        .parse()
        .map_err(|e| ClientError::Config(format!("gate answered a bad address: {e}")))?;
    Connection::connect(&opts, addr).await
}

/// An observer declares its edge dead after this long without an answer to its heartbeat.
/// (At least; see [`observer`].) Longer than the longest pause the runner injects (8 s), so a
/// paused edge keeps its
/// observers (and the presence split it causes stays visible); far shorter than QUIC's 30 s
/// idle timeout, which is how long a client of a `kill -9`'d edge otherwise waits: the edge
/// restarted on the same address cannot reset the old connections.
pub const OBSERVER_DEAD_AFTER: Duration = Duration::from_secs(12);

/// Asks the edge a cheap question (the gate query, answered from its cache) every second;
/// closes the connection (as a network loss, code 99) when no answer came for
/// `dead_after`.
async fn heartbeat(conn: Arc<Connection>, uid: String, dead_after: Duration) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if conn.quic().close_reason().is_some() {
            return;
        }
        let q = QueryEntry {
            uid: uid.clone(),
            region: None,
        };
        let asked = conn.request_json::<_, EntryAnswer>(route::QUERY_ENTRY, &q);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), asked).await {
            last_ok = tokio::time::Instant::now();
        } else if last_ok.elapsed() >= dead_after {
            conn.quic().close(
                quinn::VarInt::from_u32(99),
                b"chaos observer: edge silent (heartbeat)",
            );
            return;
        }
    }
}

/// Records one push of an observer.
fn record_push(ctx: &Ctx, who: &str, conn: u32, p: &Push) {
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap_or_default();
    let s = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let gap = match (body.get("from").and_then(|v| v.as_u64()), body.get("to")) {
        (Some(f), Some(t)) if p.route == route::ON_GAP => t.as_u64().map(|t| (f, t)),
        _ => None,
    };
    ctx.rec.record(Event::Push {
        who: who.into(),
        conn,
        room: p.rid.clone(),
        route: p.route.clone(),
        seq: p.seq,
        msg: s("msg"),
        from: if p.route == route::ON_CHAT {
            s("from")
        } else {
            None
        },
        user: s("user"),
        gap,
    });
}

/// An observer: enters `rooms` once, then records every push; when its connection is lost it
/// reconnects through the gates (each edge in turn) and resumes with the last seq it saw per
/// room, recording the resume answer. Sends `()` on `ready` once it is in every room. Runs
/// until `stop`; records `GaveUp` if it is not back in its rooms then.
///
/// Observer `index` declares a silent edge dead after [`OBSERVER_DEAD_AFTER`] + `index` × 2 s:
/// observers of one killed edge then resume one after the other, not in the same millisecond.
/// Two sessions re-joining one room on one edge at the same instant can lose an `onAdd` (see
/// ARCHITECTURE.md § Checked under chaos); staggered, a run with only kills tests what is
/// known to work, and churners still race observers at random.
pub async fn observer(
    ctx: Ctx,
    uid: String,
    rooms: Vec<String>,
    index: usize,
    stop: Stop,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
) {
    ctx.rec.record(Event::Observer {
        who: uid.clone(),
        rooms: rooms.clone(),
    });
    let mut gate = index;
    let dead_after = OBSERVER_DEAD_AFTER + Duration::from_secs(2 * index.min(8) as u64);
    let mut conn_no: u32 = 0;
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut session: Option<String> = None;
    let mut token = String::new();
    let mut delay = Duration::from_millis(50);
    let mut failures = 0u32;
    while !stop.is_raised() {
        let conn = match connect_via_gate(&ctx, &uid, gate).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                gate += 1;
                failures += 1;
                if session.is_none() && failures >= 10 {
                    let _ = ready.send(Err(format!("{uid} cannot connect: {e}"))).await;
                    return;
                }
                stop.sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(mut rx) = conn.pushes() else {
            continue;
        };
        ctx.rec.record(Event::Connected {
            who: uid.clone(),
            conn: conn_no,
            edge: conn.welcome().edge.clone(),
            session: conn.welcome().session.clone(),
        });
        match &session {
            None => {
                // First login: the runner starts faults only once every observer is in.
                let first = async {
                    let t: DevToken = conn
                        .request_json(route::DEV_TOKEN, &DevTokenRequest { uid: uid.clone() })
                        .await?;
                    token = t.token;
                    for room in &rooms {
                        let e: Entered = conn
                            .request_json(
                                route::ENTER,
                                &Enter {
                                    username: uid.clone(),
                                    rid: room.clone(),
                                    token: token.clone(),
                                },
                            )
                            .await?;
                        ctx.rec.record(Event::Enter {
                            who: uid.clone(),
                            conn: conn_no,
                            room: room.clone(),
                            seq: e.seq,
                            users: e.users,
                        });
                        let l = last.entry(room.clone()).or_insert(e.seq);
                        *l = (*l).max(e.seq);
                    }
                    Ok::<(), ClientError>(())
                };
                if let Err(e) = first.await {
                    let _ = ready
                        .send(Err(format!("{uid} could not enter its rooms: {e}")))
                        .await;
                    conn.close().await;
                    return;
                }
                let _ = ready.send(Ok(())).await;
            }
            Some(old) => {
                let answer: Result<ResumeAnswer, ClientError> = conn
                    .request_json(
                        route::RESUME,
                        &Resume {
                            username: uid.clone(),
                            session: old.clone(),
                            rooms: last.clone(),
                            token: token.clone(),
                        },
                    )
                    .await;
                match answer {
                    Ok(a) => {
                        for (room, r) in a.rooms {
                            ctx.rec.record(Event::Resume {
                                who: uid.clone(),
                                conn: conn_no,
                                room: room.clone(),
                                seq: r.seq,
                                users: r.users,
                                gap: r.gap,
                            });
                            // An `onGap` push comes first on the room's stream and moves `last`.
                        }
                    }
                    Err(e) => {
                        // Another gate next time; the old session still holds the claim.
                        tracing::info!("{uid}: resume failed: {e}");
                        conn.close().await;
                        gate += 1;
                        stop.sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                }
            }
        }
        delay = Duration::from_millis(50);
        session = Some(conn.welcome().session.clone());
        let beat = tokio::spawn(heartbeat(conn.clone(), uid.clone(), dead_after));
        // Read until the connection ends or the run stops.
        loop {
            let p = tokio::select! {
                p = rx.recv() => p,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.is_raised() {
                        // Pushes already queued are part of what was delivered.
                        while let Ok(p) = rx.try_recv() {
                            record_push(&ctx, &uid, conn_no, &p);
                        }
                        beat.abort();
                        conn.close().await;
                        return;
                    }
                    continue;
                }
            };
            let Some(p) = p else { break };
            if p.rid.is_empty() {
                continue;
            }
            record_push(&ctx, &uid, conn_no, &p);
            let l = last.entry(p.rid.clone()).or_insert(0);
            *l = (*l).max(p.seq);
        }
        beat.abort();
        ctx.rec.record(Event::Lost {
            who: uid.clone(),
            conn: conn_no,
            reason: conn.close_reason().unwrap_or_default(),
        });
        conn_no += 1;
    }
    // Stopped while out of its rooms (between a loss and a successful resume).
    ctx.rec.record(Event::GaveUp {
        who: uid.clone(),
        reason: "not back in its rooms when the run ended".into(),
    });
}

/// Connects a `Client` through the gates (each edge in turn), a bounded number of tries.
async fn connect_client(ctx: &Ctx, uid: &str, first_gate: usize, tries: usize) -> Result<Client> {
    let mut last = None;
    for i in 0..tries {
        match Client::connect(ctx.options(first_gate + i), uid).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow!(
        "{uid} cannot connect: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Reads and discards a client's pushes, so its buffer never fills and stalls the edge.
fn drain(c: &Client) {
    if let Some(mut rx) = c.pushes() {
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
    }
}

/// A sender: enters every room, then sends to a random room every `interval` (±50 %) until
/// `stop`, recording each send and its answer.
pub async fn sender(
    ctx: Ctx,
    uid: String,
    rooms: Vec<String>,
    interval: Duration,
    seed: u64,
    stop: Stop,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut rng = Rng::new(seed);
    let c = match connect_client(&ctx, &uid, seed as usize, 10).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}"))).await;
            return;
        }
    };
    drain(&c);
    for room in &rooms {
        if let Err(e) = c.enter(room).await {
            let _ = ready
                .send(Err(format!("{uid} cannot enter {room}: {e}")))
                .await;
            return;
        }
    }
    let _ = ready.send(Ok(())).await;
    let mut n = 0u64;
    while stop.sleep(interval.mul_f64(0.5 + rng.unit())).await {
        let room = &rooms[rng.below(rooms.len())];
        let msg = format!("{uid}#{n}");
        n += 1;
        let (code, seq, error) = match c.send(room, &msg).await {
            Ok(s) => (200, s.seq, None),
            Err(e) => (e.code().unwrap_or(0), None, Some(e.to_string())),
        };
        ctx.rec.record(Event::Send {
            who: uid.clone(),
            room: room.clone(),
            msg,
            code,
            seq,
            error,
        });
        if code == 403 {
            // Removed from the room by a fault (reaped, store lost): get back in.
            let _ = c.enter(room).await;
        }
    }
    c.close().await;
}

/// A churner: logs in, enters one or two rooms, stays a while, then leaves and closes, or
/// loses its connection (and lets the SDK resume) before closing, or just closes; again until
/// `stop`. Failures are part of the chaos: it retries after a pause.
pub async fn churner(ctx: Ctx, uid: String, rooms: Vec<String>, seed: u64, stop: Stop) {
    let mut rng = Rng::new(seed);
    while !stop.is_raised() {
        let c = match connect_client(&ctx, &uid, rng.below(ctx.edges.len()), 1).await {
            Ok(c) => c,
            Err(_) => {
                stop.sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        drain(&c);
        let mut mine = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let room = rooms[rng.below(rooms.len())].clone();
            if c.enter(&room).await.is_ok() && !mine.contains(&room) {
                mine.push(room);
            }
        }
        stop.sleep(Duration::from_millis(500 + rng.below(2500) as u64))
            .await;
        match rng.below(3) {
            0 => {
                for room in &mine {
                    let _ = c.leave(room).await;
                }
            }
            1 => {
                // A network loss, as the SDK sees it: it reconnects and resumes by itself.
                let seen = c.reconnects();
                c.connection()
                    .quic()
                    .close(quinn::VarInt::from_u32(99), b"chaos: simulated loss");
                let _ = c.reconnected(seen, Duration::from_secs(5)).await;
                stop.sleep(Duration::from_millis(500 + rng.below(1500) as u64))
                    .await;
            }
            _ => {}
        }
        c.close().await;
        stop.sleep(Duration::from_millis(200 + rng.below(800) as u64))
            .await;
    }
}
