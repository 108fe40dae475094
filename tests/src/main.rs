//! `roomcast-dev`: the local stack and its nodes in one binary.
//!
//! - `roomcast-dev up` (the default): Redis + two edges + one chat backend, see README.
//! - `roomcast-dev edge …`: an edge, same flags as `roomcast-edge`.
//! - `roomcast-dev chat …`: the chat backend, same flags as `roomcast-chat`.
//! - `roomcast-dev bench <scenario>`: the benchmarks of BENCHMARKS.md.
//! - `roomcast-dev floor`: the transport floor probe (raw UDP, bare quinn, quinn-proto);
//!   it starts `roomcast-dev floor-server <kind>` children; `roomcast-dev floor idle`: the
//!   memory of idle connections on the same kinds of server.
//!
//! One binary, so that the stack and the end-to-end tests can start real node processes with
//! nothing but `cargo run` / `cargo test` (cargo builds a package's own binaries for its tests).

use clap::Parser;

#[derive(Parser)]
#[command(name = "roomcast-dev", about = "roomcast local stack")]
struct Up {
    #[command(flatten)]
    args: roomcast_e2e::stack::StackArgs,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let node = |f: fn(Vec<String>) -> anyhow::Result<()>| {
        roomcast_common::telemetry::init_logging();
        if let Err(e) = f(args[1..].to_vec()) {
            eprintln!("roomcast-dev {}: {e:#}", args[1]);
            std::process::exit(1);
        }
    };
    match args.get(1).map(String::as_str) {
        Some("edge") => node(|a| runtime()?.block_on(roomcast_edge::run_cli(a))),
        Some("chat") => node(|a| runtime()?.block_on(roomcast_backend::run_cli(a))),
        // Its own flags (and exit codes: 1 = violations found), so it is parsed apart.
        Some("bench") if args.get(2).map(String::as_str) == Some("chaos") => {
            roomcast_common::telemetry::init_logging();
            let bin = std::env::current_exe().expect("current executable");
            std::process::exit(roomcast_e2e::chaos::main_cli(&bin, &args[3..]));
        }
        Some("bench") => {
            #[derive(Parser)]
            #[command(name = "roomcast-dev bench")]
            struct Bench {
                #[command(flatten)]
                args: roomcast_e2e::scenarios::BenchArgs,
            }
            let b = Bench::parse_from(&args[1..]);
            let bin = std::env::current_exe().expect("current executable");
            if let Err(e) = roomcast_e2e::scenarios::run(&bin, b.args) {
                eprintln!("roomcast-dev bench: {e:#}");
                std::process::exit(1);
            }
        }
        Some("floor") if args.get(2).map(String::as_str) == Some("idle") => {
            #[derive(Parser)]
            #[command(name = "roomcast-dev floor idle")]
            struct Idle {
                #[command(flatten)]
                args: roomcast_e2e::floor::idle::IdleArgs,
            }
            let f = Idle::parse_from(&args[2..]);
            let bin = std::env::current_exe().expect("current executable");
            if let Err(e) = roomcast_e2e::floor::idle::run(&bin, f.args) {
                eprintln!("roomcast-dev floor idle: {e:#}");
                std::process::exit(1);
            }
        }
        Some("floor") => {
            #[derive(Parser)]
            #[command(name = "roomcast-dev floor")]
            struct Floor {
                #[command(flatten)]
                args: roomcast_e2e::floor::FloorArgs,
            }
            let f = Floor::parse_from(&args[1..]);
            let bin = std::env::current_exe().expect("current executable");
            let result = match f.args.path {
                roomcast_e2e::floor::hops::MsgPath::OneHop => {
                    roomcast_e2e::floor::run(&bin, f.args).map(drop)
                }
                _ => roomcast_e2e::floor::hops::run(&bin, f.args).map(drop),
            };
            if let Err(e) = result {
                eprintln!("roomcast-dev floor: {e:#}");
                std::process::exit(1);
            }
        }
        Some("floor-server") => {
            let a = roomcast_e2e::floor::ServeArgs::parse_from(&args[1..]);
            if let Err(e) = roomcast_e2e::floor::serve(a) {
                eprintln!("roomcast-dev floor-server: {e:#}");
                std::process::exit(1);
            }
        }
        _ => {
            let rest: Vec<String> = std::iter::once("roomcast-dev up".to_string())
                .chain(args.iter().skip(1).filter(|a| *a != "up").cloned())
                .collect();
            let up = Up::parse_from(rest);
            let bin = std::env::current_exe().expect("current executable");
            if let Err(e) = roomcast_e2e::stack::run(&bin, up.args) {
                eprintln!("roomcast-dev: {e:#}");
                std::process::exit(1);
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
