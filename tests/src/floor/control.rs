//! The server process's side of the probe's control channel, and its message schedule.
//!
//! The load process drives the server through the server's stdin, one command a line:
//! `go <messages/s>` starts (or re-paces) pushing, `stop` pauses it, `stats` asks for the
//! counters, which the server answers on stdout as
//! `stats <connections> <deliveries> <send_calls> <datagrams> <dropped>`. The idle probe adds
//! `memory`, answered `memory <VmRSS KiB> <live heap bytes> <live connections>`, and `trim`
//! (glibc's `malloc_trim(0)`: hands freed heap pages back), answered `trimmed`. End of stdin
//! ends the server. A thread reads the commands and answers `stats` from atomics, so the server loops
//! never block on the control channel; they only read the pace.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the control thread and a server loop share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Messages per second to push; 0 = paused.
    pub rate: AtomicU64,
    /// Bumped by every `go`/`stop`, so the schedule restarts from "now" at the new pace
    /// instead of catching up on a backlog.
    pub epoch: AtomicU64,
    /// Connections (or UDP peers) that are ready to receive pushes.
    pub connections: AtomicU64,
    /// Frames handed to the transport (one per member per message).
    pub deliveries: AtomicU64,
    /// Send system calls made (sendto/sendmsg: 1 each; sendmmsg: 1 per call).
    pub send_calls: AtomicU64,
    /// UDP datagrams those calls sent (GSO and sendmmsg send several per call).
    pub datagrams: AtomicU64,
    /// Frames not handed over because a stream's backlog was full (counted as lost).
    pub dropped: AtomicU64,
    /// Set by a server on the batching socket, whose flusher counts its own `sendmmsg` calls
    /// and datagrams; added to `send_calls` and `datagrams` in the stats.
    pub batch_counters: std::sync::OnceLock<Arc<roomcast_net::batch::SendCounters>>,
    /// Idle servers only: connections established and not closed since (the idle probe checks
    /// that none was lost while it measured).
    pub live: AtomicU64,
}

impl Shared {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn stats_line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (calls, datagrams) = self
            .batch_counters
            .get()
            .map_or((0, 0), |c| (g(&c.calls), g(&c.datagrams)));
        format!(
            "stats {} {} {} {} {}",
            g(&self.connections),
            g(&self.deliveries),
            g(&self.send_calls) + calls,
            g(&self.datagrams) + datagrams,
            g(&self.dropped)
        )
    }
}

/// Reads commands from stdin on a thread of its own; exits the process at end of input (the
/// load process closed the pipe or died).
pub fn spawn_stdin(shared: Arc<Shared>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            match (words.next(), words.next().map(str::parse::<u64>)) {
                (Some("go"), Some(Ok(rate))) => {
                    shared.rate.store(rate, Ordering::Relaxed);
                    shared.epoch.fetch_add(1, Ordering::Relaxed);
                }
                (Some("stop"), None) => {
                    shared.rate.store(0, Ordering::Relaxed);
                    shared.epoch.fetch_add(1, Ordering::Relaxed);
                }
                (Some("stats"), None) => println!("{}", shared.stats_line()),
                (Some("memory"), None) => println!(
                    "memory {} {} {}",
                    super::memory::rss_kib(std::process::id()),
                    super::memory::heap_bytes(),
                    shared.live.load(Ordering::Relaxed)
                ),
                (Some("trim"), None) => {
                    super::memory::trim();
                    println!("trimmed");
                }
                _ => eprintln!("floor server: unknown command `{line}`"),
            }
        }
        std::process::exit(0);
    });
}

/// When each message goes out and to which room: message `k` goes to room `k % rooms`, one
/// message every `1/rate` s, so the rooms' messages are spread evenly over time (as the
/// roomcast load generator spreads its rooms' phases).
pub struct Schedule {
    rooms: usize,
    epoch: u64,
    interval: Option<Duration>,
    next: Instant,
    /// Messages scheduled so far (across epochs).
    pub seq: u64,
}

impl Schedule {
    pub fn new(rooms: usize) -> Schedule {
        Schedule {
            rooms: rooms.max(1),
            epoch: 0,
            interval: None,
            next: Instant::now(),
            seq: 0,
        }
    }

    /// Picks up a new pace from the control thread.
    fn sync(&mut self, shared: &Shared, now: Instant) {
        let epoch = shared.epoch.load(Ordering::Relaxed);
        if epoch != self.epoch {
            self.epoch = epoch;
            let rate = shared.rate.load(Ordering::Relaxed);
            self.interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
            self.next = now;
        }
    }

    /// The room of the next message if it is due at `now` (call until `None`).
    pub fn due(&mut self, shared: &Shared, now: Instant) -> Option<usize> {
        self.sync(shared, now);
        let interval = self.interval?;
        if self.next > now {
            return None;
        }
        self.next += interval;
        let room = (self.seq % self.rooms as u64) as usize;
        self.seq += 1;
        Some(room)
    }

    /// When the next message is due (`None` while paused).
    pub fn deadline(&mut self, shared: &Shared, now: Instant) -> Option<Instant> {
        self.sync(shared, now);
        self.interval.map(|_| self.next)
    }
}

/// Bound on how long a server loop sleeps, so that it notices a `go` within this long.
pub const CONTROL_POLL: Duration = Duration::from_millis(20);
