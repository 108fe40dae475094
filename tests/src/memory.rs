//! The Redis-free mode of `roomcast-dev up`: the edges and the chat service in this one process,
//! sharing one in-memory store ([`Store::memory`]), for a laptop, a demo or a small game on one
//! box.
//!
//! Everything else is the same code as the Redis deployment: clients still connect over QUIC to
//! edges that answer the gate, edges still forward `chat.*` to the chat backend over QUIC with
//! mutual TLS, and the memory engine keeps the store's contract (see `roomcast_store::engine`).
//! What it does not give: state is lost when the process exits, and no other process (another
//! edge, a backend of your own, redis-cli) can join, because the state lives in this process.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use roomcast_backend::BackendConfig;
use roomcast_edge::EdgeConfig;
use roomcast_store::keys::Keys;
use roomcast_store::Store;
use tokio::sync::oneshot;

use crate::cluster::Certs;
use crate::stack::{print_chat_commands, random_u64, StackArgs, EDGE_DRAIN_SECS, STOP_GRACE};

#[derive(Parser)]
struct EdgeCli {
    #[command(flatten)]
    cfg: EdgeConfig,
}

#[derive(Parser)]
struct ChatCli {
    #[command(flatten)]
    cfg: BackendConfig,
}

/// The chat backend's configuration for an in-process stack (flags as `roomcast-chat` takes them).
pub fn chat_config(certs: &Certs, id: &str, prefix: &str) -> Result<BackendConfig> {
    let path = |p: &std::path::Path| p.display().to_string();
    Ok(ChatCli::try_parse_from([
        "chat",
        "--id",
        id,
        "--prefix",
        prefix,
        "--cert",
        &path(&certs.backend_cert),
        "--key",
        &path(&certs.backend_key),
        "--ca",
        &path(&certs.ca),
    ])?
    .cfg)
}

/// An edge's configuration for an in-process stack in development mode (`--dev-tokens` with
/// `secret`), plus `extra` flags.
pub fn edge_config(
    certs: &Certs,
    id: &str,
    listen: &str,
    prefix: &str,
    secret: &str,
    extra: &[&str],
) -> Result<EdgeConfig> {
    let path = |p: &std::path::Path| p.display().to_string();
    let mut args = vec![
        "edge".to_string(),
        "--id".into(),
        id.into(),
        "--listen".into(),
        listen.into(),
        "--prefix".into(),
        prefix.into(),
        "--cert".into(),
        path(&certs.edge_cert),
        "--key".into(),
        path(&certs.edge_key),
        "--ca".into(),
        path(&certs.ca),
        "--jwt-secret".into(),
        secret.into(),
        "--dev-tokens".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Ok(EdgeCli::try_parse_from(args)?.cfg)
}

/// Runs the in-process stack until `stop` fires (SIGINT, SIGTERM or SIGHUP).
pub fn run(
    rt: tokio::runtime::Runtime,
    stop: oneshot::Receiver<&'static str>,
    args: &StackArgs,
) -> Result<()> {
    let certs = Certs::ensure(&args.certs)
        .with_context(|| format!("cannot prepare certificates in {}", args.certs.display()))?;
    rt.block_on(serve(certs, stop, args))
}

async fn serve(
    certs: Certs,
    stop: oneshot::Receiver<&'static str>,
    args: &StackArgs,
) -> Result<()> {
    let store = Store::memory(Keys::new(&args.prefix));
    let chat = chat_config(&certs, "chat-1", &args.prefix)?;
    let backend =
        roomcast_backend::start_with_store(chat, roomcast_backend::chat::router(), store.clone())
            .await
            .context("cannot start the chat service")?;
    // A fresh secret per run; the gate mints tokens so the CLI works without one.
    let secret = format!("dev-{:016x}", random_u64());
    let drain = EDGE_DRAIN_SECS.to_string();
    // Browsers: a fresh short-lived self-signed certificate, pinned by hash (crate::web).
    let (wt_cert, wt_key) =
        roomcast_certs::generate_webtransport(&certs.dir, &roomcast_certs::default_hosts())?;
    let (wt_cert_arg, wt_key_arg) = (wt_cert.display().to_string(), wt_key.display().to_string());
    let mut edges = Vec::new();
    for i in 0..args.edges {
        let port = args
            .first_port
            .checked_add(i as u16)
            .context("--first-port + --edges exceeds 65535")?;
        let listen = format!("127.0.0.1:{port}");
        let flags = crate::stack::dev_edge_flags(&drain, (&wt_cert_arg, &wt_key_arg), &listen);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let cfg = edge_config(
            &certs,
            &format!("edge-{}", i + 1),
            &listen,
            &args.prefix,
            &secret,
            &flags,
        )?;
        let edge = roomcast_edge::node::start_with_store(cfg, store.clone())
            .await
            .with_context(|| format!("cannot start edge-{}", i + 1))?;
        edges.push(edge);
    }
    // Every edge is a gate: the CLI gets them all, so one edge stopping is not its only way in.
    let gate = edges
        .iter()
        .map(|e| e.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    println!();
    println!("roomcast is up (Redis-free mode: one process, in-memory state, lost at exit):");
    println!("  chat     {:<8} {}", backend.id, backend.addr);
    for e in &edges {
        println!("  edge     {:<8} {}", e.id, e.addr);
        if let Some(p) = e.pomelo {
            println!(
                "  pomelo   {:<8} {:<21} (Pomelo clients: ws://{p} or tcp)",
                e.id, p
            );
        }
    }
    let addrs: Vec<_> = edges.iter().map(|e| e.addr).collect();
    let web = crate::web::WebServer::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], args.web_port)),
        crate::web::PageConfig::for_edges(&addrs, &wt_cert)?,
    )
    .await?;
    println!();
    println!("Chat in a browser (Chrome/Edge 97+, Firefox 114+; WebTransport):");
    println!("  {}", web.url());
    println!();
    print_chat_commands(&gate, &certs.ca);
    println!("Ctrl-C (or SIGTERM, SIGHUP) stops everything.");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let sig = stop.await.unwrap_or("signal");
    println!("{sig} received: stopping…");
    // Every edge drains at once (there is nowhere to move to), bounded like the process stack.
    let stopping = futures::future::join_all(edges.into_iter().map(|e| e.shutdown()));
    if tokio::time::timeout(STOP_GRACE, stopping).await.is_err() {
        println!("edges did not stop within {STOP_GRACE:?}; exiting anyway");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), backend.shutdown()).await;
    Ok(())
}
