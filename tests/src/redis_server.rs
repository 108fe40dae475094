//! A private `redis-server` for one test (or one dev stack), on a free loopback port.
//!
//! The server runs with `--bind 127.0.0.1 --save "" --appendonly no` (nothing is ever written to
//! disk) in its own temporary directory, which holds its log (`redis.log`) and is removed on drop.
//! It is killed by its own pid when dropped, and gets SIGTERM from the kernel if the process that
//! started it dies (see [`crate::child`]).
//!
//! It never touches a Redis it did not start: readiness is only accepted once the server that
//! answers on the port reports our child's pid (`INFO server`), so a port taken in the meantime
//! by someone else's server is detected (and [`RedisServer::start`] retries on another port).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

const PROGRAM: &str = "redis-server";
const LOG_FILE: &str = "redis.log";
/// How long a fresh server gets to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of [`RedisServer::start`], each on a new free port.
const START_ATTEMPTS: usize = 3;

/// A `redis-server` child process on `127.0.0.1:port`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Child,
    /// Working directory (`--dir`, log file); removed on drop.
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a new, empty server on a free loopback port and waits until it answers PING.
    pub fn start() -> Result<RedisServer> {
        Self::start_program(PROGRAM)
    }

    fn start_program(program: &str) -> Result<RedisServer> {
        let dir = unique_dir()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            // Another process may take the port between `free_port` and redis binding it; the
            // server then fails to start and another port is tried.
            let result = free_port().and_then(|port| Ok((port, spawn(program, port, &dir)?)));
            match result {
                Ok((port, child)) => return Ok(RedisServer { port, child, dir }),
                Err(e) if is_not_found(&e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    /// The TCP port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The pid of the current server process (changes on [`restart`](Self::restart)).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` of the server (its own pid only), then waits for it: every connection drops,
    /// all data is gone. Does nothing if it is already dead.
    pub fn kill(&mut self) {
        // `Child::kill` sends SIGKILL to the child's pid and never signals a child already
        // reaped, so a recycled pid is never hit.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        // The port is normally free at once (redis sets SO_REUSEADDR); retry briefly anyway.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match spawn(PROGRAM, self.port, &self.dir) {
                Ok(child) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline && !is_not_found(&e) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("restarting redis-server on port {}", self.port))
                }
            }
        }
    }

    /// Runs one command through a new synchronous connection, e.g. `cmd(&["SET", "k", "v"])`.
    pub fn cmd(&self, args: &[&str]) -> Result<redis::Value> {
        let (name, rest) = args.split_first().context("cmd: no command given")?;
        let client = redis::Client::open(self.url())?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .with_context(|| format!("cannot connect to {}", self.url()))?;
        con.set_read_timeout(Some(Duration::from_secs(10)))?;
        con.set_write_timeout(Some(Duration::from_secs(10)))?;
        redis::cmd(name)
            .arg(rest)
            .query(&mut con)
            .with_context(|| format!("redis {name} failed"))
    }

    /// The server's log so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(LOG_FILE)).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `program` on `port` and waits until it answers; kills it again if it does not.
fn spawn(program: &str, port: u16, dir: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
        .with_context(|| format!("cannot create the log file in {}", dir.display()))?;
    let mut child = crate::child::die_with_parent(&mut Command::new(program))
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--protected-mode", "yes"])
        .args(["--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "{program} not found on PATH: install it (Debian: apt-get install redis-server)"
            ),
            _ => anyhow!("cannot start {program}: {e}"),
        })?;
    match wait_ready(&mut child, port, dir) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Polls until the server on `port` answers PING and is `child` (by pid), up to
/// [`READY_TIMEOUT`].
fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
            bail!(
                "redis-server on port {port} exited with {status}: {}",
                log.trim()
            );
        }
        if let Ok(pid) = probe(port) {
            if pid == child.id() {
                return Ok(());
            }
            bail!("port {port} is served by another redis-server (pid {pid})");
        }
        if Instant::now() >= deadline {
            bail!("redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `PING` (expects `+PONG`) then `INFO server`, and returns the server's `process_id`.
fn probe(port: u16) -> Result<u32> {
    let stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;

    writer.write_all(b"PING\r\n")?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line != "+PONG\r\n" {
        bail!("unexpected PING answer {line:?}");
    }

    writer.write_all(b"INFO server\r\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    let len: usize = line
        .strip_prefix('$')
        .and_then(|n| n.trim_end().parse().ok())
        .with_context(|| format!("unexpected INFO answer {line:?}"))?;
    let mut body = vec![0; len + 2];
    reader.read_exact(&mut body)?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .context("no process_id in INFO server")
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn unique_dir() -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "roomcast-redis-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Whether `e` says the redis-server program is not installed (as opposed to failing to start).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.to_string().contains("not found on PATH")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn alive(pid: u32) -> bool {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn starts_restarts_empty_and_cleans_up() {
        let mut r = RedisServer::start().unwrap();
        let port = r.port();
        assert_eq!(r.url(), format!("redis://127.0.0.1:{port}/"));
        assert_eq!(
            r.cmd(&["PING"]).unwrap(),
            Value::SimpleString("PONG".into())
        );
        assert_eq!(r.cmd(&["SET", "k", "v"]).unwrap(), Value::Okay);
        assert_eq!(
            r.cmd(&["GET", "k"]).unwrap(),
            Value::BulkString(b"v".to_vec())
        );

        let first = r.pid();
        r.restart().unwrap();
        assert_eq!(r.port(), port, "restart changed the port");
        assert_ne!(r.pid(), first);
        assert!(!alive(first), "old server still running after restart");
        assert_eq!(r.cmd(&["GET", "k"]).unwrap(), Value::Nil, "data survived");
        assert_eq!(r.cmd(&["SET", "k", "w"]).unwrap(), Value::Okay);
        assert_eq!(
            r.cmd(&["GET", "k"]).unwrap(),
            Value::BulkString(b"w".to_vec())
        );

        let (pid, dir) = (r.pid(), r.dir.clone());
        assert!(alive(pid));
        assert!(dir.join(LOG_FILE).exists());
        drop(r);
        assert!(!alive(pid), "server still running after drop");
        assert!(probe(port).is_err(), "port still answering after drop");
        assert!(!dir.exists(), "temporary directory left behind");
    }

    #[test]
    fn kill_drops_the_server() {
        let mut r = RedisServer::start().unwrap();
        let pid = r.pid();
        r.kill();
        assert!(!alive(pid));
        assert!(r.cmd(&["PING"]).is_err());
        r.kill(); // idempotent
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let e = RedisServer::start_program("roomcast-no-such-redis-server").unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e:#}");
        assert!(
            e.to_string().contains("apt-get install redis-server"),
            "{e:#}"
        );
    }
}
