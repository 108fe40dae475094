//! Real edge and backend processes for tests and the dev stack.
//!
//! Every node is a child process of the `roomcast-dev` binary (`roomcast-dev edge …` /
//! `roomcast-dev chat …`), started on a free loopback port; a test can `kill -9` one. Nodes are
//! killed (by their own pid) when dropped, and get SIGTERM from the kernel if the process that
//! started them dies (see [`crate::child`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Certificates for a test run (generated once per directory).
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub edge_cert: PathBuf,
    pub edge_key: PathBuf,
    pub backend_cert: PathBuf,
    pub backend_key: PathBuf,
}

impl Certs {
    /// Development certificates in `dir`, generated if missing.
    pub fn ensure(dir: &Path) -> Result<Certs> {
        let g = roomcast_certs::ensure(dir)?;
        Ok(Certs {
            dir: dir.to_path_buf(),
            ca: g.ca_cert,
            edge_cert: g.edge_cert,
            edge_key: g.edge_key,
            backend_cert: g.backend_cert,
            backend_key: g.backend_key,
        })
    }

    /// Certificates shared by every test of this process, in a temporary directory.
    /// Generated once per process, whatever the number of test threads asking.
    pub fn for_tests() -> Result<Certs> {
        static CERTS: std::sync::OnceLock<Result<Certs, String>> = std::sync::OnceLock::new();
        CERTS
            .get_or_init(|| {
                let dir = std::env::temp_dir()
                    .join(format!("roomcast-test-certs-{}", std::process::id()));
                Certs::ensure(&dir).map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(|e| anyhow!(e))
    }
}

/// What kind of node a [`Node`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edge,
    Chat,
}

impl Role {
    fn subcommand(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Chat => "chat",
        }
    }
}

/// A running edge or backend process.
pub struct Node {
    pub role: Role,
    pub id: String,
    /// The address it listens on (the edge's client port, the backend's edge-facing port).
    pub addr: SocketAddr,
    /// An edge's Pomelo listener, if it runs one (`--pomelo-listen`).
    pub pomelo: Option<SocketAddr>,
    child: Child,
}

impl Node {
    /// Spawns `bin <role> <args>` and waits (up to 30 s) for its `… listening on <addr>` line.
    pub fn spawn(bin: &Path, role: Role, id: &str, args: &[String]) -> Result<Node> {
        let mut child = crate::child::die_with_parent(&mut Command::new(bin))
            .arg(role.subcommand())
            .arg("--id")
            .arg(id)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent {
                    if let Some((_, addr)) = line.split_once(" pomelo on ") {
                        let _ = tx.send(format!("pomelo {}", addr.trim()));
                        continue;
                    }
                    if let Some((_, addr)) = line.split_once(" listening on ") {
                        let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                        continue;
                    }
                }
                println!("[node] {line}");
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut pomelo = None;
        let addr = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(a) => match a.strip_prefix("pomelo ") {
                    Some(p) => pomelo = p.parse().ok(),
                    None => break Ok(a),
                },
                Err(e) => break Err(e),
            }
        };
        let addr = match addr {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} {id} did not report its address within 30 s",
                    role.subcommand()
                );
            }
        };
        let addr = addr
            .parse()
            .with_context(|| format!("bad address `{addr}` from {id}"))?;
        Ok(Node {
            role,
            id: id.to_string(),
            addr,
            pomelo,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (SIGKILL after that).
    pub fn terminate(&mut self, grace: Duration) {
        crate::child::terminate_all(&mut [&mut self.child], grace);
    }

    /// [`terminate`](Self::terminate) for several nodes at once: all get SIGTERM together and
    /// share one `grace`, so stopping N nodes takes at most `grace`, not N times it.
    pub fn terminate_all(nodes: &mut [Node], grace: Duration) {
        let mut children: Vec<&mut Child> = nodes.iter_mut().map(|n| &mut n.child).collect();
        crate::child::terminate_all(&mut children, grace);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Arguments shared by the nodes of one cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `roomcast-dev` binary (`env!("CARGO_BIN_EXE_roomcast-dev")` in tests).
    pub bin: PathBuf,
    pub redis_url: String,
    pub prefix: String,
    pub certs: Certs,
    /// HS256 secret every edge verifies client tokens with.
    pub jwt_secret: String,
    /// Development mode: the gate mints tokens for any username.
    pub dev_tokens: bool,
}

impl ClusterConfig {
    /// Starts an edge on a free loopback port.
    pub fn edge(&self, id: &str, extra: &[&str]) -> Result<Node> {
        self.edge_on(id, "127.0.0.1:0", extra)
    }

    /// Starts an edge listening on `listen`.
    pub fn edge_on(&self, id: &str, listen: &str, extra: &[&str]) -> Result<Node> {
        let mut args = vec![
            "--listen".to_string(),
            listen.into(),
            "--redis-url".into(),
            self.redis_url.clone(),
            "--prefix".into(),
            self.prefix.clone(),
            "--cert".into(),
            self.certs.edge_cert.display().to_string(),
            "--key".into(),
            self.certs.edge_key.display().to_string(),
            "--ca".into(),
            self.certs.ca.display().to_string(),
            "--jwt-secret".into(),
            self.jwt_secret.clone(),
        ];
        if self.dev_tokens {
            args.push("--dev-tokens".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Node::spawn(&self.bin, Role::Edge, id, &args)
    }

    /// Starts a chat backend on a free loopback port.
    pub fn chat(&self, id: &str, extra: &[&str]) -> Result<Node> {
        let mut args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--redis-url".into(),
            self.redis_url.clone(),
            "--prefix".into(),
            self.prefix.clone(),
            "--cert".into(),
            self.certs.backend_cert.display().to_string(),
            "--key".into(),
            self.certs.backend_key.display().to_string(),
            "--ca".into(),
            self.certs.ca.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Node::spawn(&self.bin, Role::Chat, id, &args)
    }
}
