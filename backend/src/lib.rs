//! roomcast backends: stateless servers that run handlers for service routes (`chat.*`),
//! change room state in Redis and publish pushes. Kill one and nothing is lost: every room lives
//! in Redis, and edges retry a request on another backend.
//!
//! Layout, one concern per module:
//! - [`channel`]: `ChannelService`, Pomelo's channel service over the Redis store (add, leave,
//!   members, push to a room, push to uids, broadcast, destroy).
//! - [`handler`]: the API services are written in: `Context`, `HandlerError`, `Router`.
//! - [`server`]: the QUIC endpoint edges connect to; one stream per request.
//! - [`registry`]: the backend's entry in the Redis registry, refreshed while it runs.
//! - [`chat`]: the chat service (`chat.send`).
//! - [`node`]: configuration, start-up and shutdown of a backend process.
//!
//! A service of your own:
//!
//! ```no_run
//! use roomcast_backend::{handler::Router, node};
//! # async fn example(cfg: node::BackendConfig) -> anyhow::Result<()> {
//! let router = Router::new().route("game.move", |ctx, body| async move {
//!     let seq = ctx.channels.push_to_room("table-1", "onMove", &body).await?;
//!     Ok(format!("{{\"seq\":{seq}}}").into())
//! });
//! let backend = node::start(cfg, router, vec!["game.".into()]).await?;
//! backend.wait().await;
//! # Ok(()) }
//! ```

pub mod channel;
pub mod chat;
pub mod handler;
pub mod node;
pub mod registry;
pub mod server;

pub use channel::ChannelService;
pub use handler::{Context, HandlerError, Router};
pub use node::{run_cli, start, BackendConfig, RunningBackend};
