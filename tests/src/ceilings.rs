//! Reference ceilings measured in the same run as a scenario, so each result can be read as a
//! fraction of what this machine allows: raw UDP datagrams per second from one thread, and
//! Redis's throughput for roomcast's own scripts (through the same client library the edges and
//! backends use, many requests in flight, no edges or QUIC involved) and for a bare PUBLISH
//! (`redis-benchmark`).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use roomcast_client::ceiling::{udp_ceiling, UdpCeiling};
use roomcast_store::keys::Keys;
use roomcast_store::Store;
use serde::Serialize;

use crate::redis_server::RedisServer;

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    pub udp: UdpCeiling,
    /// `chat.send`'s script (membership check, seq, publish, history), per second.
    pub redis_room_publish_per_sec: f64,
    /// The join and leave scripts, alternating, per second.
    pub redis_join_leave_per_sec: f64,
    /// `redis-benchmark` of a bare PUBLISH of 100 bytes (absent when redis-benchmark is not installed).
    pub redis_benchmark_publish_per_sec: Option<f64>,
}

/// Requests kept in flight against Redis while measuring.
const IN_FLIGHT: usize = 64;

pub fn measure(rt: &tokio::runtime::Runtime, redis: &RedisServer) -> Result<Ceilings> {
    let udp = udp_ceiling(1000, 200, Duration::from_secs(2))?;
    let (publish, churn) = rt.block_on(async {
        // A prefix of its own: the scenario's rooms are not touched.
        let store = Store::connect(&redis.url(), Keys::new("ceiling")).await?;
        store.join("r", "sender", "edge-x", None).await?;
        let s = store.clone();
        let publish = per_sec(Duration::from_secs(2), move |i| {
            let store = s.clone();
            async move {
                let body = format!("{{\"msg\":\"{i:0>90}\"}}");
                store
                    .publish_room("r", "onChat", body.as_bytes(), Some("sender"), None)
                    .await
                    .is_ok()
            }
        })
        .await;
        let s = store.clone();
        let churn = per_sec(Duration::from_secs(2), move |i| {
            let store = s.clone();
            async move {
                let uid = format!("u{}", i / 2 % 10_000);
                if i % 2 == 0 {
                    store
                        .join("churn", &uid, "edge-x", Some(("onAdd", b"{}")))
                        .await
                        .is_ok()
                } else {
                    store
                        .leave("churn", &uid, None, Some(("onLeave", b"{}")))
                        .await
                        .is_ok()
                }
            }
        })
        .await;
        anyhow::Ok((publish, churn))
    })?;
    Ok(Ceilings {
        udp,
        redis_room_publish_per_sec: publish,
        redis_join_leave_per_sec: churn,
        redis_benchmark_publish_per_sec: redis_benchmark_publish(redis.port()),
    })
}

/// Runs `op(i)` with [`IN_FLIGHT`] workers for `d`; successful operations per second.
async fn per_sec<F, Fut>(d: Duration, op: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (op, next, ok) = (op.clone(), next.clone(), ok.clone());
            tokio::spawn(async move {
                while start.elapsed() < d {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if op(i).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// How long `redis-benchmark` may run before it is killed (it normally takes about a second).
const REDIS_BENCHMARK_LIMIT: Duration = Duration::from_secs(30);

fn redis_benchmark_publish(port: u16) -> Option<f64> {
    let mut child = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-n",
            "100000",
            "-c",
            "50",
            "--csv",
            "PUBLISH",
            "ceiling-channel",
        ])
        .arg("x".repeat(100))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    while child.try_wait().ok()?.is_none() {
        if started.elapsed() > REDIS_BENCHMARK_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().ok()?;
    // "test","rps",… then "PUBLISH ceiling-channel xxx…","131062.91",…
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("\"PUBLISH"))?
        .split(',')
        .nth(1)?
        .trim_matches('"')
        .parse()
        .ok()
}
