//! `roomcast-edge`: see `roomcast-edge --help` and README.md.

#[tokio::main]
async fn main() {
    roomcast_common::telemetry::init_logging();
    if let Err(e) = roomcast_edge::run_cli(std::env::args()).await {
        eprintln!("roomcast-edge: {e:#}");
        std::process::exit(1);
    }
}
