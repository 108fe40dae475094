//! Shared set-up of the end-to-end tests: a private redis-server, edge and backend processes,
//! clients, and helpers to wait for pushes with a bound.

#![allow(dead_code)]

use std::time::Duration;

use roomcast_client::{Client, ClientOptions, Push};
use roomcast_e2e::cluster::{Certs, ClusterConfig, Node};
use roomcast_e2e::redis_server::RedisServer;
use tokio::sync::mpsc::Receiver;

/// The HS256 secret test edges verify tokens with.
pub const TEST_JWT_SECRET: &str = "roomcast-test-secret";

/// A token for `uid` allowing `rooms`, signed with the test secret.
pub fn token(uid: &str, rooms: &[&str]) -> String {
    let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
    roomcast_common::auth::Minter::hs256(TEST_JWT_SECRET.as_bytes()).mint(
        uid,
        &rooms,
        Duration::from_secs(600),
    )
}

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// Fields drop in order: nodes before the Redis they use.
pub struct Env {
    pub edges: Vec<Node>,
    pub backends: Vec<Node>,
    pub cluster: ClusterConfig,
    pub redis: RedisServer,
}

impl Env {
    pub fn start(edges: &[&str], backends: &[&str]) -> Env {
        Env::start_with(edges, backends, &[], &[])
    }

    /// Like [`Env::start`], with extra flags for every edge and every backend.
    pub fn start_with(
        edges: &[&str],
        backends: &[&str],
        edge_args: &[&str],
        backend_args: &[&str],
    ) -> Env {
        let redis = RedisServer::start().expect("start redis-server");
        let cluster = ClusterConfig {
            bin: env!("CARGO_BIN_EXE_roomcast-dev").into(),
            redis_url: redis.url(),
            prefix: "rc".into(),
            certs: Certs::for_tests().expect("certificates"),
            jwt_secret: TEST_JWT_SECRET.into(),
            dev_tokens: !edge_args.contains(&"--no-dev-tokens"),
        };
        let edge_args: Vec<&str> = edge_args
            .iter()
            .copied()
            .filter(|a| *a != "--no-dev-tokens")
            .collect();
        let edge_args = &edge_args[..];
        let backends = backends
            .iter()
            .map(|id| cluster.chat(id, backend_args).expect("start backend"))
            .collect();
        let edges = edges
            .iter()
            .map(|id| cluster.edge(id, edge_args).expect("start edge"))
            .collect();
        let env = Env {
            redis,
            cluster,
            edges,
            backends,
        };
        env.wait_registry();
        env
    }

    /// Waits until every node is in the Redis registry and every edge's caches (refreshed every
    /// second) have seen them all, so the gate can choose any edge and requests find a backend.
    ///
    /// Observed, not assumed: an edge refresh writes its lease's `heartbeat` and then reads the
    /// registry, one refresh after the other. So once every node is registered, the second
    /// change of an edge's heartbeat proves that a complete read of the registry happened in
    /// between — however slowly a busy machine runs the refreshes.
    fn wait_registry(&self) {
        let mut conn = redis::Client::open(self.redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let prefix = &self.cluster.prefix;
        let deadline = std::time::Instant::now() + WAIT * 3;
        loop {
            let edges: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{prefix}:edges"))
                .query(&mut conn)
                .unwrap();
            let backends: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{prefix}:backends"))
                .query(&mut conn)
                .unwrap();
            if edges.len() >= self.edges.len() && backends.len() >= self.backends.len() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nodes did not register"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Per edge: the heartbeats seen since every node was registered.
        let mut seen: Vec<Vec<Option<String>>> = vec![Vec::new(); self.edges.len()];
        loop {
            for (edge, seen) in self.edges.iter().zip(&mut seen) {
                let hb: Option<String> = redis::cmd("HGET")
                    .arg(format!("{prefix}:edge:{}", edge.id))
                    .arg("heartbeat")
                    .query(&mut conn)
                    .unwrap();
                if seen.last() != Some(&hb) {
                    seen.push(hb);
                }
            }
            if seen.iter().all(|s| s.len() >= 3) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "edges did not refresh their registry caches: heartbeats seen {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Client options using edge `i` as the gate.
    pub fn options(&self, i: usize) -> ClientOptions {
        let mut o = ClientOptions::new(self.edges[i].addr, self.cluster.certs.ca.clone());
        o.request_timeout = WAIT;
        o
    }

    /// Connects `uid` to edge `i` directly, with `gate` as the gate for reconnects.
    pub async fn connect_via(&self, i: usize, gate: usize, uid: &str) -> Client {
        let opts = self.options(gate);
        Client::connect_direct(opts, self.edges[i].addr, uid)
            .await
            .unwrap_or_else(|e| panic!("connect {uid} to edge {i}: {e}"))
    }

    /// Connects `uid` through the gate on edge 0.
    pub async fn connect(&self, uid: &str) -> Client {
        Client::connect(self.options(0), uid)
            .await
            .unwrap_or_else(|e| panic!("connect {uid}: {e}"))
    }

    /// Connects `uid` to edge `i` directly (no gate).
    pub async fn connect_to(&self, i: usize, uid: &str) -> Client {
        Client::connect_direct(self.options(i), self.edges[i].addr, uid)
            .await
            .unwrap_or_else(|e| panic!("connect {uid} to edge {i}: {e}"))
    }

    /// alice on edge `a` and bob on edge `b`, both in `lobby`, and bob's pushes.
    #[allow(dead_code)] // not every test binary uses it
    pub async fn alice_and_bob_in_lobby(
        &self,
        a: usize,
        b: usize,
    ) -> (Client, Client, Receiver<Push>) {
        let alice = self.connect_to(a, "alice").await;
        let bob = self.connect_to(b, "bob").await;
        let brx = bob.pushes().expect("bob's pushes");
        alice.enter("lobby").await.expect("alice enters");
        bob.enter("lobby").await.expect("bob enters");
        (alice, bob, brx)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// A raw QUIC client configuration (no SDK), for tests that must misbehave: trusts the test CA,
/// speaks `alpn`, presents `identity` if given, and allows 0-RTT when `early_data`.
pub fn raw_client_config(
    env: &Env,
    alpn: &[u8],
    identity: Option<(&std::path::Path, &std::path::Path)>,
    early_data: bool,
) -> quinn::ClientConfig {
    let limits = roomcast_net::tls::TransportLimits {
        max_bidi_streams: 0,
        max_uni_streams: 16,
        idle_timeout: Duration::from_secs(30),
        keep_alive: Duration::from_secs(1),
        early_data,
        mtu_discovery: true,
    };
    roomcast_net::tls::client_config(&env.cluster.certs.ca, alpn, &limits, identity)
        .expect("client TLS config")
}

/// A client endpoint on a free loopback port.
pub fn raw_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Asserts that `r` is the server's error `want` with a message mentioning `mentions`.
pub fn expect_error(
    r: Result<impl std::fmt::Debug, roomcast_client::ClientError>,
    want: u16,
    mentions: &str,
) {
    match r {
        Err(roomcast_client::ClientError::Request { code, message }) => {
            assert_eq!(code, want, "{message}");
            assert!(
                message.contains(mentions),
                "`{message}` does not mention `{mentions}`"
            );
        }
        other => panic!("expected error {want} ({mentions}), got {other:?}"),
    }
}

/// The next push, or `None` after `wait`.
pub async fn next_push(rx: &mut Receiver<Push>, wait: Duration) -> Option<Push> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

/// Pushes until `n` of route `route` have arrived (others are kept too), bounded by [`WAIT`].
pub async fn collect_route(rx: &mut Receiver<Push>, route: &str, n: usize) -> Vec<Push> {
    let mut all = Vec::new();
    let mut got = 0;
    while got < n {
        match next_push(rx, WAIT).await {
            Some(p) => {
                if p.route == route {
                    got += 1;
                }
                all.push(p);
            }
            None => panic!("only {got} of {n} `{route}` pushes arrived; got {all:?}"),
        }
    }
    all
}

/// The JSON body of a push.
pub fn body(p: &Push) -> serde_json::Value {
    serde_json::from_slice(&p.body).expect("push body is JSON")
}

/// Sends `connector.resume` for `uid` by hand on `client`'s connection (a test token for
/// `rid`), with `since` as the last seq seen in `rid`; the answer as the edge gave it.
pub async fn resume_by_hand(
    client: &Client,
    uid: &str,
    session: String,
    rid: &str,
    since: u64,
) -> roomcast_protocol::protocol::ResumeAnswer {
    client
        .connection()
        .request_json(
            "connector.resume",
            &roomcast_protocol::protocol::Resume {
                username: uid.into(),
                session,
                rooms: [(rid.to_string(), since)].into(),
                token: token(uid, &[rid]),
            },
        )
        .await
        .expect("connector.resume answered")
}

/// Sends `sig` (`STOP`, `CONT`, …) to `pid` with kill(1).
#[allow(dead_code)] // not every test binary uses it
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}
