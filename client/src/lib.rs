//! The roomcast client SDK (and, in `main.rs`, the `roomcast` command-line chat client).
//!
//! Layout, one concern per module:
//! - [`error`]: `ClientError`, carrying the server's status code and message when there is one.
//! - [`connection`]: one QUIC connection to one edge: handshake, requests (one stream each).
//! - [`push_streams`]: a connection's push streams, read (and their frames cut out without
//!   copies) in the task that consumes the pushes.
//! - [`client`]: the high-level `Client`: gate query, connect to the chosen edge, enter, send.
//! - [`bench`](mod@bench): the load generator behind `roomcast bench` (and the benchmark scenarios).
//! - [`callgrind`]: the load generator's own instructions per delivery, under callgrind.
//! - [`ceiling`]: the machine's raw UDP ceiling (datagrams per second from one thread), the
//!   reference fan-out is compared with.
//! - [`format`](mod@format): how the CLI prints pushes and parses input lines (plain code).
//!
//! ```no_run
//! use roomcast_client::{Client, ClientOptions};
//! # async fn example() -> Result<(), roomcast_client::ClientError> {
//! let opts = ClientOptions::new("127.0.0.1:7001".parse().unwrap(), "certs/ca.pem".into());
//! let client = Client::connect(opts, "alice").await?;
//! let mut pushes = client.pushes().expect("taken once");
//! let entered = client.enter("lobby").await?;
//! println!("in lobby with {:?}", entered.users);
//! client.send("lobby", "hello").await?;
//! while let Some(push) = pushes.recv().await {
//!     println!("{} #{}: {}", push.route, push.seq, String::from_utf8_lossy(&push.body));
//! }
//! # Ok(()) }
//! ```

pub mod bench;
pub mod callgrind;
pub mod ceiling;
pub mod client;
pub mod connection;
pub mod error;
pub mod format;
pub mod push_streams;

pub use client::{Client, ClientOptions, ON_RESUME};
pub use connection::{Connection, Push, Welcome};
pub use error::ClientError;
pub use push_streams::PushStreams;
