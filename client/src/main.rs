//! `roomcast`: the command-line chat client.
//!
//! `roomcast chat --user alice --room lobby` connects through the gate, enters the room, prints
//! pushes as readable lines and sends what you type (`/to bob hi` for a private message, `/quit`).
//! `roomcast query --uid alice` prints the gate's answer as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use roomcast_client::format::{parse_input, push_line, Input};
use roomcast_client::{Client, ClientError, ClientOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(name = "roomcast", about = "roomcast command-line client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat in a room from this terminal.
    Chat {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        room: String,
    },
    /// Load generator: clients over edges in rooms, an offered rate; prints a JSON line and a
    /// table (see BENCHMARKS.md; `cargo scenario <name>` runs whole scenarios).
    Bench {
        #[command(flatten)]
        conn: ConnArgs,
        /// Edge addresses to spread clients over (comma-separated); default: the gate.
        #[arg(long, value_delimiter = ',')]
        edges: Vec<SocketAddr>,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Messages per second offered in total.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Server processes to account CPU and memory for: label=pid, comma-separated.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<String>,
        /// Churn: `--rate` joins + leaves per second over all clients instead of messages.
        #[arg(long)]
        churn: bool,
        /// Count this generator's own instructions per delivery over the measured window: run
        /// it as `valgrind --tool=callgrind --callgrind-out-file=FILE roomcast bench
        /// --callgrind FILE …`; the counters are zeroed as the window opens and dumped
        /// (`FILE.1`) as it closes. Valgrind is ~50x slower: use low rates.
        #[arg(long, value_name = "FILE")]
        callgrind: Option<PathBuf>,
    },
    /// Measure this machine's raw UDP ceiling: datagrams per second one thread sends to many
    /// receivers over loopback (the reference the benchmarks compare fan-out with).
    UdpCeiling {
        #[arg(long, default_value_t = 1000)]
        receivers: usize,
        #[arg(long, default_value_t = 200)]
        payload: usize,
        #[arg(long, default_value_t = 3)]
        secs: u64,
    },
    /// Print which edge the gate assigns to a uid.
    Query {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long)]
        uid: String,
    },
}

#[derive(Args)]
struct ConnArgs {
    /// Gates: edges' addresses (any edge answers the gate query), tried in order; repeat the
    /// flag or separate them with commas. Several keep the client working when one edge is
    /// dead or draining.
    #[arg(
        long = "gate",
        env = "ROOMCAST_GATE",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001"
    )]
    gates: Vec<SocketAddr>,
    /// CA certificate that signed the edges' certificates.
    #[arg(long, env = "ROOMCAST_CA", default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// Name checked in the edge's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Preferred region.
    #[arg(long)]
    region: Option<String>,
    /// Login token (JWT). Without one, a development deployment's gate mints one.
    #[arg(long, env = "ROOMCAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ConnArgs {
    fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::with_gates(self.gates.clone(), self.ca.clone());
        o.server_name = self.server_name.clone();
        o.region = self.region.clone();
        o.token = self.token.clone();
        o
    }
}

#[tokio::main]
async fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat { conn, user, room } => chat(conn.options(), &user, &room).await,
        Command::Query { conn, uid } => query(conn.options(), &uid).await,
        Command::UdpCeiling {
            receivers,
            payload,
            secs,
        } => roomcast_client::ceiling::udp_ceiling(
            receivers,
            payload,
            std::time::Duration::from_secs(secs),
        )
        .map_err(|e| ClientError::Config(format!("UDP ceiling: {e}")))
        .map(|c| {
            println!("{}", serde_json::to_string(&c).unwrap_or_default());
            println!(
                "raw UDP: one thread sent {:.0} datagrams/s ({} bytes) to {} receivers; {} of {} read back",
                c.sent_per_sec, c.payload_bytes, c.receivers, c.received, c.sent
            );
        }),
        Command::Bench {
            conn,
            edges,
            clients,
            rooms,
            rate,
            duration,
            warmup,
            pids,
            churn,
            callgrind,
        } => {
            let edges = if edges.is_empty() {
                conn.gates.clone()
            } else {
                edges
            };
            let pids = pids
                .iter()
                .filter_map(|p| {
                    let (label, pid) = p.split_once('=')?;
                    Some((label.to_string(), pid.parse().ok()?))
                })
                .collect();
            let cfg = roomcast_client::bench::BenchConfig {
                name: "custom".into(),
                edges,
                options: conn.options(),
                clients,
                rooms,
                rate,
                duration: std::time::Duration::from_secs(duration),
                warmup: std::time::Duration::from_secs(warmup),
                pids,
                in_flight: 256,
                connect_concurrency: 64,
                clients_per_socket: 500,
                churn,
                window_hook: None,
            };
            let (cfg, counted) = match callgrind {
                Some(file) => {
                    let (hook, counted) = roomcast_client::callgrind::own_window(file);
                    (
                        roomcast_client::bench::BenchConfig {
                            window_hook: Some(hook),
                            ..cfg
                        },
                        Some(counted),
                    )
                }
                None => (cfg, None),
            };
            match roomcast_client::bench::run(cfg, |l| eprintln!("{l}")).await {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    println!("{}", r.table());
                    if let Some(counted) = counted {
                        match counted.lock().expect("callgrind lock").take() {
                            Some(Ok(n)) => println!(
                                "  load generator instructions in the window: {n} = {:.0} per delivery",
                                n as f64 / r.deliveries.max(1) as f64
                            ),
                            Some(Err(e)) => eprintln!("roomcast: callgrind: {e}"),
                            None => eprintln!("roomcast: callgrind: the window never closed"),
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("roomcast: {e}");
        std::process::exit(1);
    }
}

async fn query(opts: ClientOptions, uid: &str) -> Result<(), ClientError> {
    let answer = roomcast_client::client::query_entry(&opts, uid).await?;
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}

async fn chat(opts: ClientOptions, user: &str, room: &str) -> Result<(), ClientError> {
    let client = Client::connect(opts, user).await?;
    let mut pushes = client
        .pushes()
        .ok_or_else(|| ClientError::Config("the pushes were already taken".into()))?;
    let entered = client.enter(room).await?;
    let others: Vec<&str> = entered
        .users
        .iter()
        .map(String::as_str)
        .filter(|u| *u != user)
        .collect();
    println!(
        "connected to edge {}; in {room} with: {}",
        client.edge(),
        if others.is_empty() {
            "nobody yet".to_string()
        } else {
            others.join(", ")
        }
    );
    println!("type to talk; /to <user> <message> for a private message; /quit to leave");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                Some(p) => println!("{}", push_line(&p, user, Some(room))),
                None => {
                    let why = client.connection().close_reason().unwrap_or_else(|| "connection lost".into());
                    return Err(ClientError::Closed(why));
                }
            },
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) | Err(_) => break,
                };
                let result = match parse_input(&line) {
                    Input::Say(text) => client.send(room, text).await.map(|_| ()),
                    // The edge sends the sender no copy of a private message: echo it here.
                    Input::To { target, text } => client.send_to(room, target, text).await.map(|_| {
                        println!("[{room}] (private) you -> {target}: {text}");
                    }),
                    Input::Quit => break,
                    Input::Nothing => Ok(()),
                    Input::Invalid(help) => { println!("{help}"); Ok(()) }
                };
                // A refused request (`error <code>: <message>`), a timeout or a connection being
                // replaced is reported and the chat goes on: the client reconnects by itself, and
                // the push channel ending (above) is what says the connection is gone for good.
                match result {
                    Ok(()) => {}
                    Err(e @ ClientError::Request { .. }) => println!("{e}"),
                    Err(e) => println!("error: {e}"),
                }
            }
        }
    }
    let _ = client.leave(room).await;
    client.close().await;
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(args: &[&str]) -> Vec<SocketAddr> {
        let cli = Cli::try_parse_from(
            ["roomcast", "query", "--uid", "u"]
                .iter()
                .chain(args)
                .copied(),
        )
        .expect("parses");
        match cli.command {
            Command::Query { conn, .. } => conn.gates,
            _ => unreachable!(),
        }
    }

    #[test]
    fn gates_may_be_repeated_or_comma_separated() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let c: SocketAddr = "[::1]:7003".parse().unwrap();
        assert_eq!(
            gates(&["--gate", "127.0.0.1:7001", "--gate", "127.0.0.1:7002"]),
            vec![a, b]
        );
        assert_eq!(
            gates(&[
                "--gate",
                "127.0.0.1:7001,127.0.0.1:7002",
                "--gate",
                "[::1]:7003"
            ]),
            vec![a, b, c]
        );
        let bad = Cli::try_parse_from(["roomcast", "query", "--uid", "u", "--gate", "nope:1"]);
        assert!(bad.is_err(), "a bad address is a clear error, not a panic");
    }
}
