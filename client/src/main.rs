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
    /// Any edge's address; it answers the gate query.
    #[arg(long, env = "ROOMCAST_GATE", default_value = "127.0.0.1:7001")]
    gate: SocketAddr,
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
        let mut o = ClientOptions::new(self.gate, self.ca.clone());
        o.server_name = self.server_name.clone();
        o.region = self.region.clone();
        o.token = self.token.clone();
        o
    }
}

#[tokio::main]
async fn main() {
    roomcast_common::telemetry::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat { conn, user, room } => chat(conn.options(), &user, &room).await,
        Command::Query { conn, uid } => query(conn.options(), &uid).await,
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
    let mut pushes = client.pushes().expect("pushes are taken once");
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
                Some(p) => println!("{}", push_line(&p, user)),
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
                    Input::To { target, text } => client.send_to(room, target, text).await.map(|_| ()),
                    Input::Quit => break,
                    Input::Nothing => Ok(()),
                    Input::Invalid(help) => { println!("{help}"); Ok(()) }
                };
                match result {
                    Ok(()) => {}
                    Err(e @ ClientError::Request { .. }) => println!("{e}"),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let _ = client.leave(room).await;
    client.close().await;
    Ok(())
}
