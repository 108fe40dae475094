//! roomcast backends: stateless servers that run handlers for service routes (`chat.*`),
//! change room state in Redis and publish pushes. Kill one and nothing is lost: every room lives
//! in Redis, and edges retry a request on another backend (the request key keeps the retry
//! from publishing twice).
//!
//! Layout, one concern per module:
//! - [`channel`]: `ChannelService`, Pomelo's channel service over the Redis store (add, leave,
//!   members, member, push to a room, push to uids, broadcast, destroy).
//! - [`handler`]: the API services are written in: `Context`, `HandlerError`, `Router`.
//! - [`server`]: `BackendServer`, the QUIC endpoint edges connect to; one stream per request,
//!   one task per stream, bounded per connection.
//! - [`registry`]: the backend's lease in the Redis registry, refreshed while it runs and
//!   removed on a clean shutdown.
//! - [`chat`]: the chat service (`chat.send` → `onChat`).
//! - [`node`]: configuration (`BackendConfig`), start-up, shutdown and the `roomcast-chat`
//!   command line.
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
//! // Registers for the `game.` prefix: edges forward every `game.*` route here.
//! let backend = node::start(cfg, router).await?;
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
pub use node::{run_cli, start, start_with_store, BackendConfig, RunningBackend};
pub use server::BackendServer;
