//! Protocol constants shared by clients, edges and backends. `PROTOCOL.md` documents each one.

use serde::{Deserialize, Serialize};

/// Version carried in `Hello`/`Welcome`. An edge refuses versions it does not speak.
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN of the client ↔ edge protocol; a TLS handshake without it fails.
pub const CLIENT_ALPN: &[u8] = b"roomcast/1";
/// ALPN of the edge ↔ backend protocol, so a client can never speak to a backend port by accident.
pub const BACKEND_ALPN: &[u8] = b"roomcast-backend/1";

/// Default and hard upper bound of one frame (length prefix excluded).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
pub const HARD_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Status codes of `Response` and `Error` frames. HTTP-like where a meaning matches.
pub mod code {
    pub const OK: u16 = 200;
    /// The body is not valid JSON or misses a required field.
    pub const BAD_REQUEST: u16 = 400;
    /// The route needs a session bound to a user (`connector.enter` first).
    pub const NOT_ENTERED: u16 = 401;
    /// The token is missing, malformed, forged, expired or signed with the wrong algorithm.
    pub const UNAUTHENTICATED: u16 = 401;
    /// The token does not allow this (a room outside its claims, or another uid).
    pub const FORBIDDEN: u16 = 403;
    /// The sender is not a member of the room it addresses.
    pub const NOT_MEMBER: u16 = 403;
    /// No handler for this route.
    pub const UNKNOWN_ROUTE: u16 = 404;
    /// The target of a private message is not in the room.
    pub const TARGET_NOT_IN_ROOM: u16 = 410;
    /// The uid is already logged in (on this or another edge).
    pub const DUPLICATE_LOGIN: u16 = 409;
    /// A frame longer than the negotiated maximum.
    pub const FRAME_TOO_LARGE: u16 = 413;
    /// Bytes that are not a valid frame (unknown type, truncated field, invalid UTF-8).
    pub const MALFORMED_FRAME: u16 = 422;
    /// A request that must not be served from replayable 0-RTT data arrived in it.
    pub const TOO_EARLY: u16 = 425;
    /// The client's protocol version is not supported, or the handshake was wrong.
    pub const BAD_HANDSHAKE: u16 = 426;
    /// A configured limit (rooms per session, in-flight requests) was hit.
    pub const LIMIT_EXCEEDED: u16 = 429;
    /// A bug or an unexpected state on the server; the message says what.
    pub const INTERNAL: u16 = 500;
    /// No live backend serves this route.
    pub const BACKEND_UNAVAILABLE: u16 = 502;
    /// Redis is unreachable; retry later.
    pub const STORE_UNAVAILABLE: u16 = 503;
    /// The edge is draining: it answers the gate but refuses logins; ask a gate again (its
    /// answer names another edge). The message is [`super::DRAINING_MESSAGE`].
    pub const EDGE_DRAINING: u16 = 503;
    /// Backends did not answer in time.
    pub const BACKEND_TIMEOUT: u16 = 504;
}

/// The message of a [`code::EDGE_DRAINING`] answer, which tells it from Redis being down
/// (also 503).
pub const DRAINING_MESSAGE: &str = "edge draining: ask the gate again";

/// QUIC application close codes.
pub mod close {
    /// Normal close by either side.
    pub const NORMAL: u32 = 0;
    /// Handshake failed (version, timeout, wrong first frame).
    pub const BAD_HANDSHAKE: u32 = 1;
    /// The session could not keep up with its pushes (bounded outbound queue overflowed).
    pub const SLOW_CONSUMER: u32 = 2;
    /// The edge is shutting down (or draining): reconnect through the gate and resume.
    pub const SHUTDOWN: u32 = 3;
    /// Protocol violation on the control stream.
    pub const PROTOCOL_ERROR: u32 = 4;
    /// Another connection resumed this session.
    pub const REPLACED: u32 = 5;
    /// The client kept exceeding its request rate limit.
    pub const ABUSE: u32 = 6;
}

/// Route names. Pomelo's names are kept so that its users recognise the flow.
pub mod route {
    pub const QUERY_ENTRY: &str = "gate.queryEntry";
    /// Development mode only: mints a token for any uid.
    pub const DEV_TOKEN: &str = "gate.devToken";
    pub const ENTER: &str = "connector.enter";
    pub const LEAVE: &str = "connector.leave";
    pub const RESUME: &str = "connector.resume";
    pub const CHAT_SEND: &str = "chat.send";
    /// Routes with this prefix are forwarded to a backend.
    pub const BACKEND_PREFIXES: &[&str] = &["chat."];

    pub const ON_ADD: &str = "onAdd";
    pub const ON_LEAVE: &str = "onLeave";
    pub const ON_CHAT: &str = "onChat";
    /// Pushed to local members when a backend destroys their room.
    pub const ON_DESTROY: &str = "onDestroy";
    /// Pushed on a room's stream when seqs `from..=to` cannot be delivered (older than the
    /// history); the push's `seq` is `to`.
    pub const ON_GAP: &str = "onGap";
}

/// `gate.queryEntry` request body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryEntry {
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// `gate.queryEntry` response body (Pomelo's `{code, host, port}`, plus which edge it is).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryAnswer {
    pub code: u16,
    pub host: String,
    pub port: u16,
    pub edge: String,
    pub region: String,
    /// Where a browser reaches the same edge (WebTransport over HTTP/3 on the same UDP port).
    /// Absent from edges without WebTransport; native clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<WebTransportEntry>,
}

/// The WebTransport side of a `gate.queryEntry` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebTransportEntry {
    /// `https://host:port/roomcast`.
    pub url: String,
    /// SHA-256 of the edges' WebTransport certificate (lowercase hex), announced in development
    /// only (`--webtransport-pin`): a browser accepts a self-signed certificate through
    /// `serverCertificateHashes`. Production edges present a certificate from a public CA and
    /// leave this out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_hash: Option<String>,
}

/// `connector.enter` request body. The uid comes from the token; `username`, if given, must
/// equal it (Pomelo clients send one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Enter {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    pub rid: String,
    #[serde(default)]
    pub token: String,
}

/// `gate.devToken` request body (development mode only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DevTokenRequest {
    pub uid: String,
}

/// `gate.devToken` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DevToken {
    pub token: String,
}

/// `connector.enter` response body: the room's users, and the room sequence number as of the
/// join (the joiner receives every room push with a greater `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entered {
    /// Every member, sorted; empty in rooms larger than the edge's `--presence-max-members`.
    pub users: Vec<String>,
    pub seq: u64,
    /// How many members the room has, the joiner included.
    #[serde(default)]
    pub members: u64,
}

/// `connector.resume` request body: continue the session `session` (the `Welcome.session` of
/// the connection that was lost) on this connection, in every room of `rooms` (rid → last seq
/// the client received).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resume {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    pub session: String,
    pub rooms: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub token: String,
}

/// One room of a `connector.resume` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resumed {
    /// As in [`Entered`]: empty in rooms larger than the presence limit.
    pub users: Vec<String>,
    #[serde(default)]
    pub members: u64,
    /// The room's seq at the resume (the replay ran up to here, live pushes follow).
    pub seq: u64,
    /// Seqs the client missed that are older than the history: `[from, to]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<(u64, u64)>,
}

/// `connector.resume` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResumeAnswer {
    pub rooms: std::collections::BTreeMap<String, Resumed>,
}

/// `onGap` push body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OnGap {
    pub rid: String,
    pub from: u64,
    pub to: u64,
}

/// `connector.leave` request body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Leave {
    pub rid: String,
}

/// `chat.send` request body. `from` is accepted for Pomelo compatibility but ignored: the
/// sender is always the session's uid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatSend {
    pub rid: String,
    pub content: String,
    #[serde(default)]
    pub from: Option<String>,
    /// `*` (or absent) for the whole room, else one member's uid.
    #[serde(default)]
    pub target: Option<String>,
}

/// `onChat` push body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OnChat {
    pub msg: String,
    pub from: String,
    pub target: String,
}

/// `onAdd` / `onLeave` push body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OnUser {
    pub user: String,
}

impl OnUser {
    /// The JSON body `{"user": uid}` of an onAdd / onLeave push.
    pub fn body(uid: &str) -> Vec<u8> {
        serde_json::to_vec(&OnUser {
            user: uid.to_string(),
        })
        .expect("a struct of one string always serialises")
    }
}

/// `chat.send` response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sent {
    /// Room sequence number of the message; absent for private messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_user_body_is_pomelos() {
        let v: serde_json::Value = serde_json::from_slice(&OnUser::body("al\"ice")).expect("json");
        assert_eq!(v, serde_json::json!({"user": "al\"ice"}));
    }
}

/// A failed request: `code` is one of [`code`], `message` says what went wrong in words a client
/// developer can act on. It reaches the client as a `Response` with that code and message.
///
/// The one status-error type of every process: the edge answers its own routes with it, and
/// backend handlers return it (as `HandlerError`), so a failure such as "not a member" has the
/// same code wherever it is detected. The store's errors convert into it (`roomcast-store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl Status {
    pub fn new(code: u16, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// 400: the body is not valid JSON, misses a field or breaks a limit.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(code::BAD_REQUEST, message)
    }

    /// 401: the route needs a session bound to a user (`connector.enter` first).
    pub fn not_entered(route: &str) -> Status {
        Status::new(
            code::NOT_ENTERED,
            format!("route `{route}` needs a session that entered a room first"),
        )
    }

    /// 403: the acting user is not a member of the room it addresses.
    pub fn not_member(rid: &str, uid: &str) -> Status {
        Status::new(
            code::NOT_MEMBER,
            format!("`{uid}` is not a member of room `{rid}`"),
        )
    }

    /// 404: no handler for the route.
    pub fn unknown_route(route: &str) -> Status {
        Status::new(code::UNKNOWN_ROUTE, format!("unknown route `{route}`"))
    }

    /// 410: the target of a private message is not in the room.
    pub fn target_not_in_room(rid: &str, target: &str) -> Status {
        Status::new(
            code::TARGET_NOT_IN_ROOM,
            format!("user `{target}` is not in room `{rid}`"),
        )
    }

    /// 500: a bug or an unexpected state on the backend.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(code::INTERNAL, message)
    }

    /// 503: Redis cannot be reached; the client may retry later.
    pub fn store_unavailable(message: impl std::fmt::Display) -> Status {
        Status::new(
            code::STORE_UNAVAILABLE,
            format!("redis unavailable: {message}"),
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}
