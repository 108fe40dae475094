//! The high-level client: ask the gate which edge to use, connect there, enter rooms, send —
//! and when the connection is lost (network change, edge death, edge drain), reconnect through
//! the gate by itself and resume: the edge replays what was missed in every room, so the
//! application sees each room's pushes once, in order, with no gap it is not told about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use roomcast_protocol::protocol::{
    close, code, route, ChatSend, DevToken, DevTokenRequest, Enter, Entered, EntryAnswer, Leave,
    QueryEntry, Resume, ResumeAnswer, Sent,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::connection::{Connection, Push};
use crate::error::ClientError;

/// How to reach and trust the system.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Any edge: it answers the gate query.
    pub gate: SocketAddr,
    /// CA certificate that signed the edges' certificates.
    pub ca: PathBuf,
    /// TLS name checked in edge certificates.
    pub server_name: String,
    /// Preferred region for the gate's choice (default: the gate edge's region).
    pub region: Option<String>,
    /// Bound of every request (and of connecting).
    pub request_timeout: Duration,
    /// Pushes buffered before the SDK stops reading (and flow control slows the edge).
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

impl ClientOptions {
    pub fn new(gate: SocketAddr, ca: PathBuf) -> ClientOptions {
        ClientOptions {
            gate,
            ca,
            server_name: "localhost".into(),
            region: None,
            request_timeout: Duration::from_secs(10),
            push_capacity: 4096,
            reconnect: true,
            reconnect_for: Duration::from_secs(60),
            token: None,
            endpoint: None,
        }
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
}

/// A user connected to one edge (then another, after reconnects).
pub struct Client {
    shared: Arc<Shared>,
    pushes: Mutex<Option<mpsc::Receiver<Push>>>,
}

impl Client {
    /// Asks the gate which edge `uid` should use, then connects to that edge.
    pub async fn connect(opts: ClientOptions, uid: &str) -> Result<Client, ClientError> {
        let addr = gate_addr(&opts, uid).await?;
        Client::connect_direct(opts, addr, uid).await
    }

    /// Connects to the edge at `addr` without asking the gate (reconnects still use the gate).
    pub async fn connect_direct(
        opts: ClientOptions,
        addr: SocketAddr,
        uid: &str,
    ) -> Result<Client, ClientError> {
        let conn = Arc::new(Connection::connect(&opts, addr).await?);
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
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        self.pushes.lock().expect("pushes lock").take()
    }

    /// Logs in as this client's uid (on first use) and joins `rid`.
    pub async fn enter(&self, rid: &str) -> Result<Entered, ClientError> {
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

/// Asks the gate which edge `uid` should use.
async fn gate_addr(opts: &ClientOptions, uid: &str) -> Result<SocketAddr, ClientError> {
    let answer = query_entry(opts, uid).await?;
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

/// Asks the gate at `opts.gate` which edge `uid` should use.
pub async fn query_entry(opts: &ClientOptions, uid: &str) -> Result<EntryAnswer, ClientError> {
    query_entry_early(opts, uid).await.map(|(answer, _)| answer)
}

/// [`query_entry`], also saying whether the query travelled as 0-RTT data. The gate query is
/// idempotent, so it is sent in 0-RTT whenever a TLS session with the gate can be resumed (a
/// reconnect then reaches the gate's answer one round trip sooner); if the gate rejects the
/// early data, the query is simply asked again on a normal connection.
pub async fn query_entry_early(
    opts: &ClientOptions,
    uid: &str,
) -> Result<(EntryAnswer, bool), ClientError> {
    let query = QueryEntry {
        uid: uid.to_string(),
        region: opts.region.clone(),
    };
    match Connection::connect_early(opts, opts.gate).await {
        Ok(gate) => {
            let answer = gate.request_json(route::QUERY_ENTRY, &query).await;
            let early = gate.handshake_done().await;
            gate.close().await;
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
    let gate = Connection::connect(opts, opts.gate).await?;
    let answer = gate.request_json(route::QUERY_ENTRY, &query).await;
    gate.close().await;
    Ok((answer?, false))
}

/// Forwards the current connection's pushes to the application; when the connection is lost,
/// reconnects and resumes.
async fn supervise(shared: Arc<Shared>, mut conn: Arc<Connection>, tx: mpsc::Sender<Push>) {
    let mut forwarder = tokio::spawn(forward(shared.clone(), conn.clone(), tx.clone()));
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

/// Hands the connection's pushes to the application, dropping replayed duplicates.
async fn forward(shared: Arc<Shared>, conn: Arc<Connection>, tx: mpsc::Sender<Push>) {
    let Some(mut rx) = conn.pushes() else {
        return;
    };
    drop(conn);
    while let Some(push) = rx.recv().await {
        if !push.rid.is_empty() {
            let mut rooms = shared.rooms.lock().expect("rooms lock");
            match rooms.get_mut(&push.rid) {
                Some(last) if push.seq <= *last => continue,
                Some(last) => *last = push.seq,
                None => {}
            }
        }
        if tx.send(push).await.is_err() {
            return;
        }
    }
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
        match resume_once(shared, &old_session, tx).await {
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
    tx: &mpsc::Sender<Push>,
) -> Result<(Arc<Connection>, tokio::task::JoinHandle<()>), ClientError> {
    let addr = gate_addr(&shared.opts, &shared.uid).await?;
    let conn = Arc::new(Connection::connect(&shared.opts, addr).await?);
    // Start forwarding before resuming: the replay arrives while the request runs.
    let forwarder = tokio::spawn(forward(shared.clone(), conn.clone(), tx.clone()));
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

/// A number in [0, 1) that differs between clients and calls, for backoff jitter.
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (nanos ^ std::process::id().rotate_left(7)).wrapping_mul(2_654_435_761);
    f64::from(x % 1000) / 1000.0
}
