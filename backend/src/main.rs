//! `roomcast-chat`: the chat backend. See `roomcast-chat --help` and README.md.

#[tokio::main]
async fn main() {
    roomcast_common::telemetry::init_logging();
    if let Err(e) = roomcast_backend::run_cli(std::env::args()).await {
        eprintln!("roomcast-chat: {e:#}");
        std::process::exit(1);
    }
}
