//! One measured window of the probe, as a JSON line and as a row of a table a person reads.

use serde::Serialize;

/// utime and stime of a process, in clock ticks (USER_HZ, 100 per second on Linux), from
/// /proc; zeros where unavailable.
pub fn cpu_ticks(pid: u32) -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0, 0);
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (0, 0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    (field(11), field(12))
}

/// Clock ticks per second of /proc's utime and stime.
pub const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub kind: String,
    pub clients: usize,
    pub rooms: usize,
    /// Offered messages per second (each to one room's members).
    pub rate: u64,
    pub window_secs: f64,
    /// Frames the server handed to the transport in the window.
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub server_user_us_per_delivery: f64,
    pub server_sys_us_per_delivery: f64,
    pub server_cpu_us_per_delivery: f64,
    /// Send system calls per delivery (sendto/sendmsg count 1, sendmmsg 1 per call).
    pub send_calls_per_delivery: f64,
    /// UDP datagrams sent per delivery (QUIC: pushes, acknowledgements, handshakes' tail...).
    pub datagrams_per_delivery: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Frames handed to the transport (from `go` to `stop`) that no client received.
    pub lost: u64,
    /// Of which the server dropped itself (a stream's backlog was full).
    pub dropped: u64,
    /// Client-side errors (failed connections or reads).
    pub client_errors: u64,
    /// CPU seconds of the load process over the window (it shares the cores).
    pub load_cpu_secs: f64,
    /// Under --callgrind: the server's user-space instructions in the window per delivery.
    pub instructions_per_delivery: Option<f64>,
    /// The same per UDP datagram sent: steadier when a loaded machine makes the QUIC servers
    /// pack several frames into one packet (datagrams per delivery < 1).
    pub instructions_per_datagram: Option<f64>,
}

impl Run {
    pub const HEADER: &'static str = "| server | msg/s | deliveries/s | CPU µs/delivery (user + sys) | send calls/delivery | datagrams/delivery | p50 / p99 ms | lost | instr./delivery | instr./datagram |\n|---|---|---|---|---|---|---|---|---|---|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} ({:.2} + {:.2}) | {:.3} | {:.3} | {:.1} / {:.1} | {} | {} | {} |",
            self.kind,
            self.rate,
            self.deliveries_per_sec,
            self.server_cpu_us_per_delivery,
            self.server_user_us_per_delivery,
            self.server_sys_us_per_delivery,
            self.send_calls_per_delivery,
            self.datagrams_per_delivery,
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.lost,
            self.instructions_per_delivery
                .map(|i| format!("{i:.0}"))
                .unwrap_or_else(|| "-".into()),
            self.instructions_per_datagram
                .map(|i| format!("{i:.0}"))
                .unwrap_or_else(|| "-".into()),
        )
    }
}

/// Prints a probe's closing table: its title, the header and a row per window, and where the
/// callgrind output is when there is one.
pub fn print_table(
    title: &str,
    header: &str,
    rows: impl IntoIterator<Item = String>,
    callgrind: Option<&crate::callgrind::Callgrind>,
) {
    println!("\n{title}");
    println!("{header}");
    for row in rows {
        println!("{row}");
    }
    if let Some(c) = callgrind {
        println!(
            "callgrind output in {} (delete when done)",
            c.dir().display()
        );
    }
}
