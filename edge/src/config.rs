//! Edge configuration. Every flag has an environment variable and a documented default
//! (`README.md` lists them). Flags shared with the backends (Redis, TLS, room settings, id
//! rules) are defined once in [`roomcast_common::config`] and flattened in here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use roomcast_common::config::{EdgeTls, IdArgs, RedisArgs, RoomArgs, TlsArgs};

#[derive(Debug, Clone, Args)]
pub struct EdgeConfig {
    /// `--pomelo-listen` and the Pomelo listener's settings (POMELO.md).
    #[command(flatten)]
    pub pomelo: crate::pomelo::PomeloArgs,

    /// Unique edge id (A-Z a-z 0-9 . _ -); defaults to `edge-<random>`.
    #[arg(long, env = "ROOMCAST_EDGE_ID")]
    pub id: Option<String>,

    /// UDP address clients connect to.
    #[arg(long, env = "ROOMCAST_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,

    /// host:port the gate hands to clients for this edge; defaults to the bound listen address.
    #[arg(long, env = "ROOMCAST_ADVERTISE")]
    pub advertise: Option<String>,

    /// Region label; the gate prefers edges of the client's (or the answering edge's) region.
    #[arg(long, env = "ROOMCAST_REGION", default_value = "local")]
    pub region: String,

    /// `--redis-url`, `--prefix`.
    #[command(flatten)]
    pub redis: RedisArgs,

    /// `--cert`, `--key`, `--ca`.
    #[command(flatten)]
    pub tls: TlsArgs<EdgeTls>,

    /// `--webtransport-cert`, `--webtransport-key`, `--webtransport-pin`, `--no-webtransport`.
    #[command(flatten)]
    pub webtransport: crate::webtransport::WebTransportArgs,

    /// `--history-len`, `--history-age-secs`, `--presence-max-members`.
    #[command(flatten)]
    pub rooms: RoomArgs,

    /// `--max-id-bytes`, `--ascii-ids`.
    #[command(flatten)]
    pub ids: IdArgs,

    /// Largest frame accepted from a client, in bytes (length prefix excluded).
    #[arg(
        long,
        env = "ROOMCAST_MAX_FRAME",
        default_value_t = roomcast_protocol::protocol::DEFAULT_MAX_FRAME
    )]
    pub max_frame: usize,

    /// Requests one client may have in flight (QUIC bidirectional stream limit). quinn keeps a
    /// slot for every stream a peer may open, so each one costs every connection memory even
    /// when idle (BENCHMARKS.md, `idle`); more requests wait for stream credit.
    #[arg(long, env = "ROOMCAST_MAX_REQUESTS_IN_FLIGHT", default_value_t = 8)]
    pub max_requests_in_flight: u32,

    /// Rooms one session may be in at once.
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_SESSION", default_value_t = 64)]
    pub max_rooms_per_session: usize,

    /// `on`: the client-facing QUIC socket batches the datagrams of all connections into
    /// `sendmmsg` calls (Linux; `roomcast_net::batch`, BENCHMARKS.md § Batched sends);
    /// `off`: quinn's own socket, one `sendmsg` per transmit. Ignored elsewhere than Linux.
    #[arg(long, env = "ROOMCAST_UDP_SEND_BATCHING", value_enum, default_value_t = OnOff::Off)]
    pub udp_send_batching: OnOff,

    /// Frames queued per push stream before the session is closed as a slow consumer. Larger
    /// than the history length, so a full replay after a resume fits.
    #[arg(long, env = "ROOMCAST_PUSH_QUEUE", default_value_t = 4096)]
    pub push_queue: usize,

    /// Milliseconds a client has to open its control stream and send `Hello`.
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT_MS", default_value_t = 5000)]
    pub handshake_timeout_ms: u64,

    /// Sessions (client connections) one edge accepts; further connections are refused.
    #[arg(long, env = "ROOMCAST_MAX_SESSIONS", default_value_t = 100_000)]
    pub max_sessions: usize,

    /// Requests per second one session may make (token bucket refill rate); excess gets 429.
    #[arg(long, env = "ROOMCAST_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,

    /// Requests one session may make in a burst; sustained excess closes the connection.
    #[arg(long, env = "ROOMCAST_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,

    /// Service route prefixes this edge serves itself with the built-in chat service (e.g.
    /// `chat.`), comma-separated, instead of forwarding them to a backend: one hop less, but
    /// the handlers run in the edge process (ARCHITECTURE.md, *Local routes*). Each must lie
    /// within the chat service's routes (`chat.`). Empty: every service route is forwarded.
    #[arg(long, env = "ROOMCAST_LOCAL_ROUTES", value_delimiter = ',')]
    pub local_routes: Vec<String>,

    /// `--max-content-bytes`: the chat service's limits, for `--local-routes` (the same flag,
    /// and value, as the chat backends').
    #[command(flatten)]
    pub chat: roomcast_backend::chat::ChatArgs,

    /// Milliseconds a backend has to answer one attempt before the edge tries another.
    #[arg(long, env = "ROOMCAST_BACKEND_ATTEMPT_MS", default_value_t = 2000)]
    pub backend_attempt_ms: u64,

    /// Milliseconds before a forwarded request fails with 504, all attempts included.
    #[arg(long, env = "ROOMCAST_BACKEND_DEADLINE_MS", default_value_t = 6000)]
    pub backend_deadline_ms: u64,

    /// Seconds a client connection may stay silent before it is closed.
    #[arg(long, env = "ROOMCAST_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub idle_timeout_secs: u64,

    /// Milliseconds a lost session keeps its rooms, so that a client that reconnects and
    /// resumes in time is not reported as leaving and re-joining.
    #[arg(long, env = "ROOMCAST_RESUME_GRACE_MS", default_value_t = 10_000)]
    pub resume_grace_ms: u64,

    /// Secret for HS256 client tokens (shared by every edge, and whoever issues tokens).
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS256/ES256 client tokens (instead of --jwt-secret).
    #[arg(long, env = "ROOMCAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Algorithm of --jwt-public-key: RS256 or ES256.
    #[arg(long, env = "ROOMCAST_JWT_ALG", default_value = "RS256")]
    pub jwt_alg: String,

    /// DEVELOPMENT ONLY: the gate mints a token for any username (`gate.devToken`), signed with
    /// --jwt-secret. Anyone can then log in as anyone. Off by default.
    #[arg(long, env = "ROOMCAST_DEV_TOKENS")]
    pub dev_tokens: bool,

    /// Milliseconds the edge's lease lives after its last refresh (refreshes come every second):
    /// a killed edge's members are removed about this long after its death. Must exceed the
    /// refresh period comfortably; values below 2000 are raised to 2000.
    #[arg(long, env = "ROOMCAST_LEASE_TTL_MS", default_value_t = 5000)]
    pub lease_ttl_ms: u64,

    /// Seconds a draining edge waits for its clients to move before it exits.
    #[arg(long, env = "ROOMCAST_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,
}

impl EdgeConfig {
    pub fn backend_attempt(&self) -> Duration {
        Duration::from_millis(self.backend_attempt_ms)
    }

    pub fn id_rules(&self) -> roomcast_protocol::ids::IdRules {
        self.ids.rules()
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms.max(2000))
    }

    pub fn resume_grace(&self) -> Duration {
        Duration::from_millis(self.resume_grace_ms)
    }

    pub fn history(&self) -> roomcast_store::HistoryConfig {
        roomcast_store::HistoryConfig {
            max_len: self.rooms.history_len,
            max_age: self.rooms.history_age(),
        }
    }

    pub fn backend_deadline(&self) -> Duration {
        Duration::from_millis(self.backend_deadline_ms)
    }

    /// `--local-routes` without blanks (`--local-routes ""` and `a,,b` are accepted).
    pub fn local_prefixes(&self) -> Vec<String> {
        self.local_routes
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The chat service's limits for the routes this edge serves itself: `--max-content-bytes`
    /// and the deployment's id rules.
    pub fn chat_limits(&self) -> roomcast_backend::chat::ChatLimits {
        self.chat.limits(self.id_rules())
    }
}

/// A feature switch spelled `on` / `off` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}

/// How long a client has to deliver a request frame once it opened its stream.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the edge refreshes its registry entry and its caches of edges and backends.
pub const REGISTRY_REFRESH: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: EdgeConfig,
    }

    /// README promises an environment variable for every flag.
    #[test]
    fn every_flag_has_an_environment_variable() {
        let cmd = Cli::command();
        let missing: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.get_env().is_none() && a.get_id() != "help")
            .map(|a| format!("--{}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "flags without env: {missing:?}");
    }

    #[test]
    fn shared_flags_parse_into_their_groups() {
        let cli = Cli::try_parse_from([
            "roomcast-edge",
            "--redis-url",
            "redis://r:1/",
            "--cert",
            "e.pem",
            "--presence-max-members",
            "3",
            "--history-len",
            "9",
            "--max-id-bytes",
            "8",
        ])
        .unwrap();
        assert_eq!(cli.cfg.redis.redis_url, "redis://r:1/");
        assert_eq!(cli.cfg.tls.cert, PathBuf::from("e.pem"));
        assert_eq!(cli.cfg.rooms.presence_max_members, 3);
        assert_eq!(cli.cfg.history().max_len, 9);
        assert_eq!(cli.cfg.id_rules().max_bytes, 8);
    }

    #[test]
    fn local_routes_are_a_comma_separated_list() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("roomcast-edge").chain(args.iter().copied()))
                .unwrap()
                .cfg
        };
        assert!(parse(&[]).local_prefixes().is_empty());
        assert!(parse(&["--local-routes", ""]).local_prefixes().is_empty());
        assert_eq!(
            parse(&["--local-routes", "chat.send, chat.x,,"]).local_prefixes(),
            ["chat.send", "chat.x"]
        );
        assert_eq!(parse(&["--local-routes=chat."]).local_prefixes(), ["chat."]);
        let cfg = parse(&["--max-content-bytes", "10", "--max-id-bytes", "8"]);
        assert_eq!(cfg.chat_limits().max_content_bytes, 10);
        assert_eq!(cfg.chat_limits().ids.max_bytes, 8);
        assert_eq!(
            parse(&[]).chat_limits(),
            roomcast_backend::chat::ChatLimits::default()
        );
    }

    #[test]
    fn udp_send_batching_is_on_or_off() {
        let parse = |v: &str| {
            Cli::try_parse_from(["roomcast-edge", "--udp-send-batching", v]).map(|c| c.cfg)
        };
        assert_eq!(parse("on").unwrap().udp_send_batching, OnOff::On);
        assert_eq!(parse("off").unwrap().udp_send_batching, OnOff::Off);
        assert!(parse("yes").is_err(), "a clear error for anything else");
    }
}
