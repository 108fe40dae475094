//! A private `redis-server` for one test (or one dev stack), on a free loopback port.
//!
//! Started with `--bind 127.0.0.1 --save "" --appendonly no` in its own temporary directory,
//! killed by its own pid when dropped. It never touches a Redis it did not start.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Working directory (logs); removed on drop.
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a new server on a free port and waits until it answers PING.
    pub fn start() -> Result<RedisServer> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "roomcast-redis-{}-{port}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer {
            port,
            child: None,
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow!(
                    "redis-server not found on PATH: install it (Debian: apt-get install redis-server)"
                ),
                _ => anyhow!("cannot start redis-server: {e}"),
            })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(5))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ping(self.port).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                bail!("redis-server exited with {status}: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "redis-server on port {} did not answer PING within {limit:?}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` of the server: every connection drops, all data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        // The port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).context("restarting redis-server"),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

fn ping(port: u16) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        bail!("unexpected PING answer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_restarts_empty_and_cleans_up() {
        let mut r = RedisServer::start().unwrap();
        let port = r.port();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"SET k v\r\n").unwrap();
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        r.restart().unwrap();
        assert_eq!(r.port(), port);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"EXISTS k\r\n").unwrap();
        let mut n = [0u8; 4];
        s.read_exact(&mut n).unwrap();
        assert_eq!(&n, b":0\r\n", "data survived a restart");
        let dir = r.dir.clone();
        drop(r);
        assert!(ping(port).is_err(), "server still running after drop");
        assert!(!dir.exists());
    }
}
