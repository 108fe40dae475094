//! Command-line flags shared by the edge and the backends, defined once.
//!
//! Each struct is a `#[derive(clap::Args)]` group that the edge's and the backends' configs
//! flatten, so a shared flag has one name, one environment variable, one default and one help
//! text everywhere. Settings that every node of a deployment must agree on (the Redis prefix,
//! history bounds, the presence limit, id rules) live here so that they cannot drift apart.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use roomcast_protocol::ids::{IdRules, MAX_ID_BYTES};

/// Default `--redis-url`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// Default `--prefix`.
pub const DEFAULT_PREFIX: &str = "rc";
/// Default `--history-len` (pushes kept per room).
pub const DEFAULT_HISTORY_LEN: u64 = 1000;
/// Default `--history-age-secs`.
pub const DEFAULT_HISTORY_AGE_SECS: u64 = 300;
/// Default `--presence-max-members`.
pub const DEFAULT_PRESENCE_MAX_MEMBERS: u64 = 1000;

/// Where the deployment's state lives.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RedisArgs {
    /// Redis holding all state: rooms, sessions, the edge and backend registry.
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// Prefix of every Redis key and channel (every edge and backend of a deployment must use
    /// the same; several deployments can share one Redis with different prefixes).
    #[arg(long, env = "ROOMCAST_PREFIX", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
}

/// Which node a [`TlsArgs`] is for: its certificate, key and their environment variables.
pub trait TlsRole: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Default `--cert`.
    const CERT: &'static str;
    /// Default `--key`.
    const KEY: &'static str;
    /// Environment variable of `--cert`.
    const CERT_ENV: &'static str;
    /// Environment variable of `--key`.
    const KEY_ENV: &'static str;
    /// Help of `--cert`: who the certificate is presented to.
    const CERT_HELP: &'static str;
}

/// An edge's TLS identity (presented to clients, and to backends for mutual TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeTls;

impl TlsRole for EdgeTls {
    const CERT: &'static str = "certs/edge.pem";
    const KEY: &'static str = "certs/edge.key";
    const CERT_ENV: &'static str = "ROOMCAST_EDGE_CERT";
    const KEY_ENV: &'static str = "ROOMCAST_EDGE_KEY";
    const CERT_HELP: &'static str = "Certificate (PEM) presented to clients, and to backends \
        as the edge's cluster identity (signed by the cluster CA)";
}

/// A backend's TLS identity (presented to edges; mutual TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendTls;

impl TlsRole for BackendTls {
    const CERT: &'static str = "certs/backend.pem";
    const KEY: &'static str = "certs/backend.key";
    const CERT_ENV: &'static str = "ROOMCAST_BACKEND_CERT";
    const KEY_ENV: &'static str = "ROOMCAST_BACKEND_KEY";
    const CERT_HELP: &'static str =
        "Certificate (PEM) presented to edges (signed by the cluster CA)";
}

/// `--cert`, `--key`, `--ca`. The flag names and the CA are the same for every node; the
/// certificate's defaults and variables depend on the role `R` ([`EdgeTls`], [`BackendTls`]).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct TlsArgs<R: TlsRole> {
    #[arg(long, env = R::CERT_ENV, default_value = R::CERT, help = R::CERT_HELP)]
    pub cert: PathBuf,

    #[arg(long, env = R::KEY_ENV, default_value = R::KEY, help = "Private key (PEM) of --cert")]
    pub key: PathBuf,

    /// The cluster CA (PEM): edges and backends accept each other only with a certificate it
    /// signed (mutual TLS).
    #[arg(long, env = "ROOMCAST_CA", default_value = "certs/ca.pem")]
    pub ca: PathBuf,

    #[arg(skip)]
    pub role: PhantomData<R>,
}

/// Room settings that Redis scripts apply with the calling node's values, so every edge and
/// backend of a deployment must use the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct RoomArgs {
    /// Pushes kept per room for resume and gap filling (every edge and backend must use the
    /// same value).
    #[arg(long, env = "ROOMCAST_HISTORY_LEN", default_value_t = DEFAULT_HISTORY_LEN)]
    pub history_len: u64,

    /// Seconds a push stays in a room's history (every edge and backend must use the same
    /// value).
    #[arg(long, env = "ROOMCAST_HISTORY_AGE_SECS", default_value_t = DEFAULT_HISTORY_AGE_SECS)]
    pub history_age_secs: u64,

    /// Rooms with more members than this get no onAdd/onLeave pushes and no member list in
    /// enter/resume answers (only the count): a room filling up to N members would otherwise
    /// cost O(N²) pushes. 0 = no limit. Applied by the join/leave scripts with the calling
    /// node's value, so every edge and backend must use the same.
    #[arg(
        long,
        env = "ROOMCAST_PRESENCE_MAX_MEMBERS",
        default_value_t = DEFAULT_PRESENCE_MAX_MEMBERS
    )]
    pub presence_max_members: u64,
}

impl RoomArgs {
    /// `--history-age-secs` as a duration.
    pub fn history_age(&self) -> Duration {
        Duration::from_secs(self.history_age_secs)
    }
}

/// Which user ids and room ids are accepted (edges check them on enter, the chat service on
/// every message; they should agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct IdArgs {
    /// Longest user id or room id, in bytes.
    #[arg(long, env = "ROOMCAST_MAX_ID_BYTES", default_value_t = MAX_ID_BYTES)]
    pub max_id_bytes: usize,

    /// Accept only printable ASCII in user ids and room ids (default: any UTF-8 without
    /// control characters).
    #[arg(long, env = "ROOMCAST_ASCII_IDS")]
    pub ascii_ids: bool,
}

impl IdArgs {
    pub fn rules(&self) -> IdRules {
        IdRules {
            max_bytes: self.max_id_bytes,
            ascii_only: self.ascii_ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli<R: TlsRole> {
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        tls: TlsArgs<R>,
        #[command(flatten)]
        rooms: RoomArgs,
        #[command(flatten)]
        ids: IdArgs,
    }

    /// Declared default of `--<flag>` (read from the command, so that variables set in the
    /// environment running the tests do not matter).
    fn default_of<R: TlsRole>(flag: &str) -> String {
        use clap::CommandFactory;
        let cmd = Cli::<R>::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .unwrap_or_else(|| panic!("no --{flag}"));
        arg.get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn defaults_depend_on_the_role_only_for_the_certificate() {
        assert_eq!(default_of::<EdgeTls>("cert"), "certs/edge.pem");
        assert_eq!(default_of::<EdgeTls>("key"), "certs/edge.key");
        assert_eq!(default_of::<BackendTls>("cert"), "certs/backend.pem");
        assert_eq!(default_of::<BackendTls>("key"), "certs/backend.key");
        for (flag, want) in [
            ("ca", "certs/ca.pem"),
            ("redis-url", DEFAULT_REDIS_URL),
            ("prefix", "rc"),
            ("history-len", "1000"),
            ("history-age-secs", "300"),
            ("presence-max-members", "1000"),
            ("max-id-bytes", "128"),
        ] {
            assert_eq!(default_of::<EdgeTls>(flag), want, "--{flag}");
            assert_eq!(default_of::<BackendTls>(flag), want, "--{flag}");
        }
        assert_eq!(
            RoomArgs {
                history_len: 1,
                history_age_secs: 300,
                presence_max_members: 1
            }
            .history_age(),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn flags_parse_and_bad_values_are_errors() {
        let cli = Cli::<BackendTls>::try_parse_from([
            "x",
            "--redis-url",
            "redis://r:1/",
            "--prefix",
            "p",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--ca",
            "ca.pem",
            "--history-len",
            "5",
            "--history-age-secs",
            "7",
            "--presence-max-members",
            "2",
            "--max-id-bytes",
            "8",
            "--ascii-ids",
        ])
        .unwrap();
        assert_eq!(cli.redis.redis_url, "redis://r:1/");
        assert_eq!(cli.redis.prefix, "p");
        assert_eq!(cli.tls.cert, PathBuf::from("c.pem"));
        assert_eq!(cli.tls.key, PathBuf::from("k.pem"));
        assert_eq!(cli.tls.ca, PathBuf::from("ca.pem"));
        assert_eq!((cli.rooms.history_len, cli.rooms.history_age_secs), (5, 7));
        assert_eq!(cli.rooms.presence_max_members, 2);
        assert_eq!(
            cli.ids.rules(),
            IdRules {
                max_bytes: 8,
                ascii_only: true
            }
        );
        let err = Cli::<EdgeTls>::try_parse_from(["x", "--presence-max-members", "lots"])
            .err()
            .expect("a non-number is refused");
        assert!(err.to_string().contains("--presence-max-members"), "{err}");
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        for cmd in [Cli::<EdgeTls>::command(), Cli::<BackendTls>::command()] {
            for arg in cmd.get_arguments() {
                if ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                assert!(arg.get_env().is_some(), "--{} has no env", arg.get_id());
            }
        }
    }
}
