//! The high-level client: ask the gate which edge to use, connect there, enter rooms, send —
//! and when the connection is lost (network change, edge death, edge drain), reconnect through
//! the gate by itself and resume: the edge replays what was missed in every room, so the
//! application sees each room's pushes once, in order, with no gap it is not told about.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::VarInt;
use roomcast_protocol::protocol::{
    close, code, route, ChatSend, DevToken, DevTokenRequest, Enter, Entered, EntryAnswer, Leave,
    QueryEntry, Resume, ResumeAnswer, Sent,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::{Connection, Push};
use crate::error::ClientError;

/// How to reach and trust the system.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Gates, tried in order (any edge answers the gate query): on connect and on every
    /// reconnect the client asks the first one that answers, and if the edge it names cannot
    /// be reached, asks the next; failing that, it connects to a gate that answered (every
    /// gate is an edge). Give several, so that one dead or draining edge is not the only way in.
    pub gates: Vec<SocketAddr>,
    /// CA certificate that signed the edges' certificates.
    pub ca: PathBuf,
    /// TLS name checked in edge certificates.
    pub server_name: String,
    /// Preferred region for the gate's choice (default: the gate edge's region).
    pub region: Option<String>,
    /// Bound of every request (and of the `Hello`/`Welcome` exchange).
    pub request_timeout: Duration,
    /// Bound of the QUIC handshake with one address: what a dead gate or edge costs before the
    /// next one is tried.
    pub connect_timeout: Duration,
    /// A connection on which nothing at all arrives for this long is declared dead (QUIC idle
    /// timeout; the smaller of both sides' values applies). With `keep_alive` it decides how
    /// soon a client notices that its edge was killed and reconnects elsewhere.
    pub idle_timeout: Duration,
    /// Interval of QUIC keep-alive probes: the edge acknowledges each one, so on a healthy
    /// connection something arrives at least this often, whatever the traffic.
    pub keep_alive: Duration,
    /// Pushes buffered for the application (the channel [`Client::pushes`] returns) before
    /// the SDK stops reading the push streams, so that QUIC flow control slows the edge. The
    /// SDK itself holds at most one received chunk's worth of decoded pushes beyond this (and,
    /// during a resume, the pushes that arrive before the edge's answer).
    pub push_capacity: usize,
    /// Reconnect and resume when the connection is lost.
    pub reconnect: bool,
    /// Give up reconnecting after this long.
    pub reconnect_for: Duration,
    /// The JWT presented at login. `None`: ask the gate for a development token (only edges
    /// started with `--dev-tokens` mint them).
    pub token: Option<String>,
    /// A QUIC endpoint (one UDP socket) to open connections on, shared by every client given
    /// the same one: a process holding thousands of connections (the load generator) then
    /// uses a few sockets instead of one per connection. `None`: each connection binds its
    /// own. Rebinding a shared endpoint moves every connection on it.
    pub endpoint: Option<quinn::Endpoint>,
}

/// Default [`ClientOptions::idle_timeout`]: a killed edge is noticed within 10 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ClientOptions::keep_alive`]: several probes fit in one idle timeout, so a few
/// lost packets do not end a healthy connection.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Default [`ClientOptions::connect_timeout`] (the edge's own handshake timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl ClientOptions {
    /// Options with one gate.
    pub fn new(gate: SocketAddr, ca: PathBuf) -> ClientOptions {
        ClientOptions::with_gates(vec![gate], ca)
    }

    /// Options with several gates, tried in order.
    pub fn with_gates(gates: Vec<SocketAddr>, ca: PathBuf) -> ClientOptions {
        ClientOptions {
            gates,
            ca,
            server_name: "localhost".into(),
            region: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            push_capacity: 4096,
            reconnect: true,
            reconnect_for: Duration::from_secs(60),
            token: None,
            endpoint: None,
        }
    }

    /// The first gate (the only one, for options made with [`ClientOptions::new`]).
    pub fn gate(&self) -> Option<SocketAddr> {
        self.gates.first().copied()
    }
}

struct Shared {
    uid: String,
    opts: ClientOptions,
    /// The live connection (replaced on every reconnect).
    conn: Mutex<Arc<Connection>>,
    /// Rooms entered and the last seq the application was handed in each: what a resume asks
    /// the edge to continue from, and the filter that drops replayed duplicates.
    rooms: Mutex<BTreeMap<String, u64>>,
    /// Set by `close()`: the connection ending is then not a loss.
    closing: AtomicBool,
    /// The token presented at login and resume.
    token: String,
    /// Connection generation: bumped after every successful reconnect.
    generation: watch::Sender<u64>,
    /// The gate that last answered: asked first on the next reconnect, so a dead gate early
    /// in the list costs its connect timeout once, not on every reconnect.
    good_gate: Mutex<Option<SocketAddr>>,
}

/// A user connected to one edge (then another, after reconnects).
pub struct Client {
    shared: Arc<Shared>,
    pushes: Mutex<Option<mpsc::Receiver<Push>>>,
}

impl Client {
    /// Asks the gates which edge `uid` should use, then connects to that edge (see
    /// [`ClientOptions::gates`] for what happens when a gate or that edge is unreachable).
    pub async fn connect(opts: ClientOptions, uid: &str) -> Result<Client, ClientError> {
        let (conn, gate) = connect_through(&opts, &opts.gates, uid).await?;
        let client = Client::start(opts, Arc::new(conn), uid).await?;
        *client.shared.good_gate.lock().expect("gate lock") = Some(gate);
        Ok(client)
    }

    /// Connects to the edge at `addr` without asking the gate (reconnects still use the gates).
    pub async fn connect_direct(
        opts: ClientOptions,
        addr: SocketAddr,
        uid: &str,
    ) -> Result<Client, ClientError> {
        let conn = Arc::new(Connection::connect(&opts, addr).await?);
        Client::start(opts, conn, uid).await
    }

    async fn start(
        opts: ClientOptions,
        conn: Arc<Connection>,
        uid: &str,
    ) -> Result<Client, ClientError> {
        let token = match &opts.token {
            Some(t) => t.clone(),
            // Development deployments mint tokens; elsewhere login fails with a clear 401.
            None => conn
                .request_json::<_, DevToken>(
                    route::DEV_TOKEN,
                    &DevTokenRequest {
                        uid: uid.to_string(),
                    },
                )
                .await
                .map(|t| t.token)
                .unwrap_or_default(),
        };
        let (tx, rx) = mpsc::channel(opts.push_capacity.max(1));
        let shared = Arc::new(Shared {
            token,
            uid: uid.to_string(),
            opts,
            conn: Mutex::new(conn.clone()),
            rooms: Mutex::new(BTreeMap::new()),
            closing: AtomicBool::new(false),
            generation: watch::channel(0).0,
            good_gate: Mutex::new(None),
        });
        tokio::spawn(supervise(shared.clone(), conn, tx));
        Ok(Client {
            shared,
            pushes: Mutex::new(Some(rx)),
        })
    }

    pub fn uid(&self) -> &str {
        &self.shared.uid
    }

    /// The current connection.
    pub fn connection(&self) -> Arc<Connection> {
        self.shared.conn.lock().expect("conn lock").clone()
    }

    /// Id of the edge this client is connected to now.
    pub fn edge(&self) -> String {
        self.connection().welcome().edge.clone()
    }

    /// How many times the client has reconnected and resumed.
    pub fn reconnects(&self) -> u64 {
        *self.shared.generation.borrow()
    }

    /// Waits until the client has reconnected more than `seen` times.
    pub async fn reconnected(&self, seen: u64, wait: Duration) -> Result<u64, ClientError> {
        let mut rx = self.shared.generation.subscribe();
        let got = tokio::time::timeout(wait, rx.wait_for(|g| *g > seen))
            .await
            .map_err(|_| ClientError::Timeout(wait))?
            .map(|g| *g)
            .map_err(|_| ClientError::Closed("client gave up reconnecting".into()));
        got
    }

    /// The pushes (taken once). Across reconnects each room's pushes arrive once, in seq order;
    /// an `onGap` push (its seq is the last lost one) says when some could not be replayed.
    ///
    /// After every resume, each resumed room also gets one [`ON_RESUME`] push, made by the SDK
    /// (not sent by the edge): its `seq` is the room's seq at the resume and its body the
    /// edge's answer for the room (`users`, `members`, `seq`, and `gap` when some seqs were
    /// lost), as [`roomcast_protocol::protocol::Resumed`] JSON. It comes after the replayed
    /// pushes up to that seq and before any later one, so an application that replaces its
    /// member list with `users` there and then applies the `onAdd`/`onLeave` that follow has
    /// the room's membership exactly (the edge's view can have changed while the connection
    /// was lost: members who left meanwhile, or the client's own rejoin).
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        self.pushes.lock().expect("pushes lock").take()
    }

    /// Logs in as this client's uid (on first use) and joins `rid`. If the edge answers that it
    /// is draining (it became so after the gate named it), the client moves through its gates
    /// (a reconnect, which resumes the rooms it is in) and enters there instead.
    pub async fn enter(&self, rid: &str) -> Result<Entered, ClientError> {
        match self.enter_once(rid).await {
            Err(e) if e.is_edge_draining() && self.shared.opts.reconnect => {
                let seen = self.reconnects();
                tracing::info!(
                    "edge {} is draining; moving before entering {rid}",
                    self.edge()
                );
                // Not code 0: that would make the edge drop our rooms instead of keeping them
                // for the resume.
                self.connection()
                    .quic()
                    .close(VarInt::from_u32(close::SHUTDOWN), b"edge draining: moving");
                self.reconnected(seen, self.shared.opts.reconnect_for)
                    .await?;
                self.enter_once(rid).await
            }
            other => other,
        }
    }

    async fn enter_once(&self, rid: &str) -> Result<Entered, ClientError> {
        let entered: Entered = self
            .connection()
            .request_json(
                route::ENTER,
                &Enter {
                    username: self.shared.uid.clone(),
                    rid: rid.to_string(),
                    token: self.shared.token.clone(),
                },
            )
            .await?;
        let mut rooms = self.shared.rooms.lock().expect("rooms lock");
        let last = rooms.entry(rid.to_string()).or_insert(entered.seq);
        *last = (*last).max(entered.seq);
        Ok(entered)
    }

    pub async fn leave(&self, rid: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .connection()
            .request_json(
                route::LEAVE,
                &Leave {
                    rid: rid.to_string(),
                },
            )
            .await?;
        self.shared.rooms.lock().expect("rooms lock").remove(rid);
        Ok(())
    }

    /// Sends `content` to the whole room.
    pub async fn send(&self, rid: &str, content: &str) -> Result<Sent, ClientError> {
        self.chat(rid, "*", content).await
    }

    /// Sends `content` to one member of the room.
    pub async fn send_to(
        &self,
        rid: &str,
        target: &str,
        content: &str,
    ) -> Result<Sent, ClientError> {
        self.chat(rid, target, content).await
    }

    async fn chat(&self, rid: &str, target: &str, content: &str) -> Result<Sent, ClientError> {
        self.connection()
            .request_json(
                route::CHAT_SEND,
                &ChatSend {
                    rid: rid.to_string(),
                    content: content.to_string(),
                    from: None,
                    target: Some(target.to_string()),
                },
            )
            .await
    }

    /// Any request, raw body, on the current connection.
    pub async fn request(&self, route: &str, body: Bytes) -> Result<Bytes, ClientError> {
        self.connection().request(route, body).await
    }

    /// Any request with JSON bodies both ways, on the current connection.
    pub async fn request_json<T: Serialize, R: DeserializeOwned>(
        &self,
        route: &str,
        body: &T,
    ) -> Result<R, ClientError> {
        self.connection().request_json(route, body).await
    }

    /// A notify (no answer) on the current connection.
    pub async fn notify(&self, route: &str, body: Bytes) -> Result<(), ClientError> {
        self.connection().notify(route, body).await
    }

    /// Closes the connection on purpose; the edge then makes the uid leave its rooms at once.
    pub async fn close(self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.connection().close().await;
    }
}

/// Where the gate's answer points.
async fn answer_addr(answer: &EntryAnswer, uid: &str) -> Result<SocketAddr, ClientError> {
    // Pomelo's gate answered `{code: 500}` in the body; keep honouring that shape.
    if answer.code != code::OK {
        return Err(ClientError::Request {
            code: answer.code,
            message: format!("the gate found no edge for `{uid}`"),
        });
    }
    let where_ = format!("{}:{}", answer.host, answer.port);
    let found = tokio::net::lookup_host((answer.host.clone(), answer.port)).await;
    found
        .map_err(|e| ClientError::Connect {
            addr: where_.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ClientError::Connect {
            addr: where_,
            reason: "no address".into(),
        })
}

/// Whether `e` says nothing answers at that address (as opposed to an answer we dislike).
fn unreachable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Closed(_)
    )
}

/// Asks `gates` in turn which edge `uid` should use and connects there; also returns the gate
/// that answered. A gate that does not answer, or refuses, is skipped; if the edge a gate names
/// cannot be reached (killed, its lease not expired yet), the next gate is asked; if every
/// answer was unreachable, the gates that answered are tried as edges themselves (every gate is
/// an edge). The error is the last failure.
async fn connect_through(
    opts: &ClientOptions,
    gates: &[SocketAddr],
    uid: &str,
) -> Result<(Connection, SocketAddr), ClientError> {
    let mut dead: Vec<SocketAddr> = Vec::new();
    let mut answered: Vec<SocketAddr> = Vec::new();
    let mut last: Option<ClientError> = None;
    for &gate in gates {
        if dead.contains(&gate) {
            continue;
        }
        let answer = match query_gate(opts, gate, uid).await {
            Ok((answer, _)) => answer,
            Err(e) => {
                tracing::debug!("gate {gate} did not help: {e}");
                if unreachable(&e) {
                    dead.push(gate);
                }
                last = Some(e);
                continue;
            }
        };
        answered.push(gate);
        let addr = match answer_addr(&answer, uid).await {
            Ok(a) => a,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        if dead.contains(&addr) {
            continue;
        }
        match Connection::connect(opts, addr).await {
            Ok(conn) => return Ok((conn, gate)),
            Err(e) => {
                tracing::debug!("edge {} at {addr}, named by gate {gate}: {e}", answer.edge);
                if unreachable(&e) {
                    dead.push(addr);
                }
                last = Some(e);
            }
        }
    }
    // Every edge named was unreachable (the gates' registry still lists a dead edge until its
    // lease expires): a gate that answered is a live edge itself.
    for gate in answered {
        if dead.contains(&gate) {
            continue;
        }
        match Connection::connect(opts, gate).await {
            Ok(conn) => return Ok((conn, gate)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Config("no gate given (ClientOptions::gates)".into())))
}

/// Asks the gates (in order, the first that answers) which edge `uid` should use.
pub async fn query_entry(opts: &ClientOptions, uid: &str) -> Result<EntryAnswer, ClientError> {
    query_entry_early(opts, uid).await.map(|(answer, _)| answer)
}

/// [`query_entry`], also saying whether the query travelled as 0-RTT data. The gate query is
/// idempotent, so it is sent in 0-RTT whenever a TLS session with the gate can be resumed (a
/// reconnect then reaches the gate's answer one round trip sooner); if the gate rejects the
/// early data, the query is simply asked again on a normal connection. A gate that does not
/// answer, or refuses, is skipped for the next one; the error is the last gate's.
pub async fn query_entry_early(
    opts: &ClientOptions,
    uid: &str,
) -> Result<(EntryAnswer, bool), ClientError> {
    let mut last = None;
    for &gate in &opts.gates {
        match query_gate(opts, gate, uid).await {
            Ok(answer) => return Ok(answer),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Config("no gate given (ClientOptions::gates)".into())))
}

/// Asks the gate at `gate` (see [`query_entry_early`]).
pub async fn query_gate(
    opts: &ClientOptions,
    gate: SocketAddr,
    uid: &str,
) -> Result<(EntryAnswer, bool), ClientError> {
    let query = QueryEntry {
        uid: uid.to_string(),
        region: opts.region.clone(),
    };
    match Connection::connect_early(opts, gate).await {
        Ok(conn) => {
            let answer = conn.request_json(route::QUERY_ENTRY, &query).await;
            let early = conn.handshake_done().await;
            conn.close().await;
            match answer {
                Ok(answer) => return Ok((answer, early)),
                // The gate's own refusal is final; asking again would get the same answer.
                Err(e @ ClientError::Request { .. }) => return Err(e),
                // Anything else may be early data the gate rejected: ask after a full handshake.
                Err(e) => tracing::debug!("gate query in 0-RTT failed ({e}); asking again"),
            }
        }
        // Nothing reachable there: a second attempt would only wait as long again.
        Err(e @ (ClientError::Connect { .. } | ClientError::Timeout(_))) => return Err(e),
        Err(e) => tracing::debug!("0-RTT connection to the gate failed ({e}); asking again"),
    }
    let conn = Connection::connect(opts, gate).await?;
    let answer = conn.request_json(route::QUERY_ENTRY, &query).await;
    conn.close().await;
    Ok((answer?, false))
}

/// Forwards the current connection's pushes to the application; when the connection is lost,
/// reconnects and resumes.
async fn supervise(shared: Arc<Shared>, mut conn: Arc<Connection>, tx: mpsc::Sender<Push>) {
    let mut forwarder = tokio::spawn(forward(shared.clone(), conn.clone(), tx.clone(), None));
    loop {
        let _ = (&mut forwarder).await;
        if shared.closing.load(Ordering::SeqCst) || !shared.opts.reconnect {
            return;
        }
        if conn.close_code() == Some(close::REPLACED) {
            tracing::info!("session resumed by another connection; not reconnecting");
            return;
        }
        tracing::info!(
            "connection to {} lost ({}); reconnecting",
            conn.welcome().edge,
            conn.close_reason().unwrap_or_default()
        );
        match reconnect(&shared, &conn, &tx).await {
            Some((next, f)) => {
                conn = next;
                forwarder = f;
                shared.generation.send_modify(|g| *g += 1);
            }
            None => return,
        }
    }
}

/// The route of the pushes the SDK makes after a resume (see [`Client::pushes`]).
pub const ON_RESUME: &str = "onResume";

/// Hands the connection's pushes to the application, dropping replayed duplicates. With
/// `resumed`, the resume's answer is placed among the pushes (see [`Resumption`]).
async fn forward(
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    tx: mpsc::Sender<Push>,
    resumed: Option<oneshot::Receiver<ResumeAnswer>>,
) {
    // Read in this task: a push costs one wake-up here and one channel hop to the application.
    let Some(mut rx) = conn.push_streams() else {
        return;
    };
    drop(conn);
    if let Some(mut answer) = resumed {
        let mut r = Resumption::default();
        // Until the answer: hold what arrives, up to MAX_HELD_BEFORE_ANSWER (the oldest
        // beyond that go to the application unplaced, see `Resumption::hold`).
        let answer = loop {
            tokio::select! {
                a = &mut answer => break a.ok(),
                p = rx.recv() => match p {
                    Some(p) => {
                        if let Some(oldest) = r.hold(p) {
                            if !deliver(&shared, &tx, oldest).await {
                                return;
                            }
                        }
                    }
                    None => break None,
                },
            }
        };
        let Some(answer) = answer else {
            return;
        };
        let mut out = Vec::new();
        r.answered(&answer, &last_seqs(&shared), &mut out);
        if !deliver_all(&shared, &tx, out).await {
            return;
        }
        // Until every resumed room's replay is through (bounded: a replay that never ends
        // would be an edge bug, not a reason to hold pushes forever).
        let give_up = tokio::time::sleep(RESUME_REPLAY_WAIT);
        tokio::pin!(give_up);
        while r.waiting() {
            let mut out = Vec::new();
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => r.push(p, &mut out),
                    None => return,
                },
                _ = &mut give_up => {
                    tracing::warn!("resume replay incomplete after {RESUME_REPLAY_WAIT:?}");
                    r.flush(&mut out);
                }
            }
            if !deliver_all(&shared, &tx, out).await {
                return;
            }
        }
    }
    while let Some(push) = rx.recv().await {
        if !deliver(&shared, &tx, push).await {
            return;
        }
    }
}

/// How long pushes are held after a resume's answer for a room's replay to arrive.
const RESUME_REPLAY_WAIT: Duration = Duration::from_secs(10);

/// Pushes held while a resume's answer is awaited (each at most the edge's frame limit). The
/// replay of a long outage can exceed it; the oldest pushes then go to the application before
/// the answer, which costs at most the exact place of an `onResume` (it goes out when the
/// answer comes instead). Not reading instead would let the pushes fill QUIC's connection
/// window and hold back the answer itself.
pub const MAX_HELD_BEFORE_ANSWER: usize = 1024;

/// Places a resume's answer among the pushes. Replayed pushes travel on the room's stream and
/// the answer on the request's, so either can arrive first. A room's [`ON_RESUME`] push (its
/// `seq` the answer's) goes out right after the push with that seq (the last one replayed, or
/// the `onGap` that stands for what could not be), before the first one above it (the room's
/// stream is in seq order, so the replay is through then), or at once when the application
/// already has that seq. Pushes of other rooms and of the session are not held.
#[derive(Default)]
struct Resumption {
    /// Pushes received before the answer, in order; at most [`MAX_HELD_BEFORE_ANSWER`].
    held: VecDeque<Push>,
    /// Rooms whose `onResume` is not out yet: the answer's seq and that push.
    waiting: BTreeMap<String, (u64, Push)>,
}

impl Resumption {
    fn answered(
        &mut self,
        answer: &ResumeAnswer,
        last: &BTreeMap<String, u64>,
        out: &mut Vec<Push>,
    ) {
        for (rid, room) in &answer.rooms {
            let snapshot = Push {
                route: ON_RESUME.into(),
                rid: rid.clone(),
                seq: room.seq,
                body: serde_json::to_vec(room).unwrap_or_default().into(),
            };
            if last.get(rid).is_some_and(|l| *l >= room.seq) {
                out.push(snapshot);
            } else {
                self.waiting.insert(rid.clone(), (room.seq, snapshot));
            }
        }
        for p in std::mem::take(&mut self.held) {
            self.push(p, out);
        }
    }

    /// Holds `p` until the answer; gives back the oldest held push when the hold is full.
    fn hold(&mut self, p: Push) -> Option<Push> {
        self.held.push_back(p);
        if self.held.len() > MAX_HELD_BEFORE_ANSWER {
            self.held.pop_front()
        } else {
            None
        }
    }

    fn push(&mut self, p: Push, out: &mut Vec<Push>) {
        let at = match self.waiting.get(&p.rid) {
            Some((at, _)) if p.seq >= *at => *at,
            _ => {
                out.push(p);
                return;
            }
        };
        let Some((_, snapshot)) = self.waiting.remove(&p.rid) else {
            return;
        };
        if p.seq == at {
            out.push(p);
            out.push(snapshot);
        } else {
            out.push(snapshot);
            out.push(p);
        }
    }

    fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn flush(&mut self, out: &mut Vec<Push>) {
        out.extend(
            std::mem::take(&mut self.waiting)
                .into_values()
                .map(|(_, s)| s),
        );
    }
}

/// The last seq the application was handed in each room.
fn last_seqs(shared: &Shared) -> BTreeMap<String, u64> {
    shared.rooms.lock().expect("rooms lock").clone()
}

async fn deliver_all(shared: &Shared, tx: &mpsc::Sender<Push>, out: Vec<Push>) -> bool {
    for p in out {
        if !deliver(shared, tx, p).await {
            return false;
        }
    }
    true
}

/// Sends one push to the application (a room push only if it is new; the SDK's own
/// `onResume` always); false when the application dropped its receiver.
async fn deliver(shared: &Shared, tx: &mpsc::Sender<Push>, push: Push) -> bool {
    if !push.rid.is_empty() && push.route != ON_RESUME {
        let mut rooms = shared.rooms.lock().expect("rooms lock");
        match rooms.get_mut(&push.rid) {
            Some(last) if push.seq <= *last => return true,
            Some(last) => *last = push.seq,
            None => {}
        }
    }
    tx.send(push).await.is_ok()
}

/// Connects again (through the gate, with backoff and jitter) and resumes every room.
async fn reconnect(
    shared: &Arc<Shared>,
    old: &Arc<Connection>,
    tx: &mpsc::Sender<Push>,
) -> Option<(Arc<Connection>, tokio::task::JoinHandle<()>)> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let old_session = old.welcome().session.clone();
    while started.elapsed() < shared.opts.reconnect_for {
        if shared.closing.load(Ordering::SeqCst) {
            return None;
        }
        match resume_once(shared, &old_session, old.quic().remote_address(), tx).await {
            Ok(done) => return Some(done),
            Err(e) => tracing::info!("reconnect failed: {e}; retrying in about {delay:?}"),
        }
        let jitter = 0.5 + jitter_fraction();
        tokio::time::sleep(delay.mul_f64(jitter)).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    tracing::warn!("gave up reconnecting after {:?}", shared.opts.reconnect_for);
    None
}

async fn resume_once(
    shared: &Arc<Shared>,
    old_session: &str,
    lost: SocketAddr,
    tx: &mpsc::Sender<Push>,
) -> Result<(Arc<Connection>, tokio::task::JoinHandle<()>), ClientError> {
    let good = *shared.good_gate.lock().expect("gate lock");
    let gates = gate_order(&shared.opts.gates, good, lost);
    let (conn, gate) = connect_through(&shared.opts, &gates, &shared.uid).await?;
    *shared.good_gate.lock().expect("gate lock") = Some(gate);
    let conn = Arc::new(conn);
    // Start forwarding before resuming: the replay arrives while the request runs; it is held
    // until the answer, which goes to the application in its place among the pushes.
    let (answered, resumed) = oneshot::channel();
    let forwarder = tokio::spawn(forward(
        shared.clone(),
        conn.clone(),
        tx.clone(),
        Some(resumed),
    ));
    let rooms = shared.rooms.lock().expect("rooms lock").clone();
    let answer: Result<ResumeAnswer, ClientError> = conn
        .request_json(
            route::RESUME,
            &Resume {
                username: shared.uid.clone(),
                session: old_session.to_string(),
                rooms,
                token: shared.token.clone(),
            },
        )
        .await;
    match answer {
        Ok(a) => {
            for (rid, r) in &a.rooms {
                if let Some((from, to)) = r.gap {
                    tracing::warn!("{rid}: seqs {from}..={to} were lost (older than the history)");
                }
            }
            let _ = answered.send(a);
            *shared.conn.lock().expect("conn lock") = conn.clone();
            Ok((conn, forwarder))
        }
        Err(e) => {
            forwarder.abort();
            conn.close().await;
            Err(e)
        }
    }
}

/// The order gates are asked in on a reconnect: the gate that answered last time first, then
/// the others as configured, and last the edge whose connection was just lost — it may well be
/// dead, and a dead gate costs a whole connect timeout before the next one is asked.
fn gate_order(gates: &[SocketAddr], good: Option<SocketAddr>, lost: SocketAddr) -> Vec<SocketAddr> {
    let mut order: Vec<SocketAddr> = Vec::with_capacity(gates.len());
    order.extend(good.filter(|g| *g != lost && gates.contains(g)));
    order.extend(gates.iter().filter(|g| **g != lost && Some(**g) != good));
    order.extend(gates.iter().filter(|g| **g == lost).take(1));
    order
}

/// A number in [0, 1) that differs between clients and calls, for backoff jitter.
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (nanos ^ std::process::id().rotate_left(7)).wrapping_mul(2_654_435_761);
    f64::from(x % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(rid: &str, seq: u64) -> Push {
        Push {
            route: "onChat".into(),
            rid: rid.into(),
            seq,
            body: Bytes::new(),
        }
    }

    fn answer(rooms: &[(&str, u64)]) -> ResumeAnswer {
        ResumeAnswer {
            rooms: rooms
                .iter()
                .map(|(rid, seq)| {
                    let r: roomcast_protocol::protocol::Resumed =
                        serde_json::from_value(serde_json::json!({"users": [], "seq": seq}))
                            .expect("resumed");
                    (rid.to_string(), r)
                })
                .collect(),
        }
    }

    fn shape(out: &[Push]) -> Vec<String> {
        out.iter()
            .map(|p| {
                format!(
                    "{}:{}{}",
                    p.rid,
                    if p.route == ON_RESUME { "R" } else { "" },
                    p.seq
                )
            })
            .collect()
    }

    #[test]
    fn the_resume_answer_goes_after_the_replay_whichever_arrives_first() {
        // Before the answer: part of the replay, a later push, another room's push.
        let mut r = Resumption {
            held: [push("a", 11), push("b", 7), push("a", 12)].into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        let last = [("a".to_string(), 10), ("b".to_string(), 7)].into();
        r.answered(&answer(&[("a", 13), ("b", 7)]), &last, &mut out);
        // b had everything: its onResume at once; a's waits for seq 13.
        assert_eq!(shape(&out), ["b:R7", "a:11", "b:7", "a:12"]);
        assert!(r.waiting());
        let mut out = Vec::new();
        r.push(push("b", 8), &mut out);
        r.push(push("a", 13), &mut out);
        r.push(push("a", 14), &mut out);
        assert_eq!(shape(&out), ["b:8", "a:13", "a:R13", "a:14"]);
        assert!(!r.waiting());
    }

    #[test]
    fn the_hold_before_the_answer_is_bounded_and_gives_back_the_oldest() {
        let mut r = Resumption::default();
        let mut early = Vec::new();
        for seq in 1..=(MAX_HELD_BEFORE_ANSWER as u64 + 3) {
            early.extend(r.hold(push("a", seq)));
        }
        assert_eq!(shape(&early), ["a:1", "a:2", "a:3"]);
        assert_eq!(r.held.len(), MAX_HELD_BEFORE_ANSWER);
        // The answer still places onResume after its seq among what was held.
        let mut out = Vec::new();
        r.answered(
            &answer(&[("a", 10)]),
            &[("a".to_string(), 3)].into(),
            &mut out,
        );
        assert_eq!(
            shape(&out[..9]),
            ["a:4", "a:5", "a:6", "a:7", "a:8", "a:9", "a:10", "a:R10", "a:11"]
        );
        assert_eq!(out.len(), MAX_HELD_BEFORE_ANSWER + 1);
        assert!(!r.waiting());
    }

    #[test]
    fn a_push_above_the_answer_ends_the_replay() {
        let mut r = Resumption::default();
        let mut out = Vec::new();
        r.answered(
            &answer(&[("a", 20)]),
            &[("a".to_string(), 15)].into(),
            &mut out,
        );
        assert!(out.is_empty());
        r.push(push("a", 21), &mut out);
        assert_eq!(shape(&out), ["a:R20", "a:21"]);
        let mut r = Resumption::default();
        r.answered(&answer(&[("a", 20)]), &BTreeMap::new(), &mut out);
        let mut out = Vec::new();
        r.flush(&mut out);
        assert_eq!(shape(&out), ["a:R20"]);
    }

    #[test]
    fn reconnects_ask_the_last_good_gate_first_and_the_lost_edge_last() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(gate_order(&[a, b, c], None, other), vec![a, b, c]);
        assert_eq!(gate_order(&[a, b, c], Some(c), other), vec![c, a, b]);
        // The lost edge was the good gate: it goes last all the same.
        assert_eq!(gate_order(&[a, b, c], Some(a), a), vec![b, c, a]);
        assert_eq!(gate_order(&[a, b, c], Some(b), a), vec![b, c, a]);
        // A gate no longer configured is not asked; an empty list stays empty.
        assert_eq!(gate_order(&[a], Some(other), b), vec![a]);
        assert!(gate_order(&[], Some(a), a).is_empty());
    }
}
