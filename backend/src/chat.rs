//! The chat service: `chat.send {rid, content, from, target}` → `onChat {msg, from, target}`.
//!
//! Target `*` (or absent) pushes to the whole room with the room's next sequence number and
//! answers `{"seq": n}`; any other target pushes to that member only and answers `{}`, and the
//! sender gets no copy (as in Pomelo's chat). The sender is always the session's uid: `from`
//! in the body is accepted for Pomelo clients but ignored, so nobody can speak as someone else.
//! Each message costs one Redis round trip, which checks that the sender is a member,
//! deduplicates the edge's retries (by the request key) and publishes once.

use bytes::Bytes;
use clap::Args;
use roomcast_protocol::ids::IdRules;
use roomcast_protocol::protocol::{route, ChatSend, OnChat, Sent};

use crate::handler::{Context, HandlerError, HandlerResult, Router};

/// Default longest `content`, in bytes (UTF-8). Large enough for any chat line, small enough
/// that a room's history (1000 pushes by default) stays a few MiB in Redis and one push always
/// fits in a frame.
pub const MAX_CONTENT_BYTES: usize = 4096;

/// What the chat service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Longest `content`, in bytes; longer messages are refused with 400.
    pub max_content_bytes: usize,
    /// Rules for `rid` and `target` (should match the edges', which apply them on enter).
    pub ids: IdRules,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_content_bytes: MAX_CONTENT_BYTES,
            ids: IdRules::default(),
        }
    }
}

/// The chat service's command-line flags (flattened into `roomcast-chat`'s). The id rules
/// (`--max-id-bytes`, `--ascii-ids`) are the backend's ([`crate::BackendConfig`]), because
/// every process must share them (checked at start-up).
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Longest chat message content, in bytes.
    #[arg(long, env = "ROOMCAST_MAX_CONTENT_BYTES", default_value_t = MAX_CONTENT_BYTES)]
    pub max_content_bytes: usize,
}

impl ChatArgs {
    /// The limits, with the backend's id rules.
    pub fn limits(&self, ids: IdRules) -> ChatLimits {
        ChatLimits {
            max_content_bytes: self.max_content_bytes,
            ids,
        }
    }
}

/// The chat service's routes (`chat.send`), with the default limits.
pub fn router() -> Router {
    router_with(ChatLimits::default())
}

/// The chat service's routes (`chat.send`).
pub fn router_with(limits: ChatLimits) -> Router {
    Router::new().route(route::CHAT_SEND, move |ctx, body| send(ctx, body, limits))
}

/// Parses and validates a `chat.send` body with the default limits.
pub fn parse_send(body: &[u8]) -> Result<ChatSend, HandlerError> {
    parse_send_with(body, &ChatLimits::default())
}

/// Parses and validates a `chat.send` body: valid JSON with `rid` and `content`, a valid
/// `rid`, `content` within the limit, and a valid `target` unless it is `*`. Every failure is
/// a 400 whose message names the problem.
pub fn parse_send_with(body: &[u8], limits: &ChatLimits) -> Result<ChatSend, HandlerError> {
    let req: ChatSend = serde_json::from_slice(body).map_err(|e| {
        HandlerError::bad_request(format!("body is not valid JSON for chat.send: {e}"))
    })?;
    limits
        .ids
        .check("rid", &req.rid)
        .map_err(HandlerError::bad_request)?;
    if req.content.len() > limits.max_content_bytes {
        return Err(HandlerError::bad_request(format!(
            "`content` is {} bytes; the maximum is {}",
            req.content.len(),
            limits.max_content_bytes
        )));
    }
    if let Some(t) = &req.target {
        if t != "*" {
            limits
                .ids
                .check("target", t)
                .map_err(HandlerError::bad_request)?;
        }
    }
    Ok(req)
}

/// What one `chat.send` publishes, decided without touching Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub rid: String,
    /// `None`: the whole room; `Some(uid)`: that member only.
    pub target: Option<String>,
    /// The `onChat` body.
    pub push: Vec<u8>,
}

/// Validates a `chat.send` from `sender` (the session's uid) and builds its `onChat` push.
/// A session that has not entered (empty uid) gets 401 before the body is looked at.
pub fn plan_send(body: &[u8], sender: &str, limits: &ChatLimits) -> Result<Outgoing, HandlerError> {
    if sender.is_empty() {
        return Err(HandlerError::not_entered(route::CHAT_SEND));
    }
    let req = parse_send_with(body, limits)?;
    let target = req.target.filter(|t| t != "*");
    let push = OnChat {
        msg: req.content,
        from: sender.to_string(),
        target: target.clone().unwrap_or_else(|| "*".into()),
    };
    let push = serde_json::to_vec(&push)
        .map_err(|e| HandlerError::internal(format!("cannot encode onChat: {e}")))?;
    Ok(Outgoing {
        rid: req.rid,
        target,
        push,
    })
}

/// The `chat.send` handler.
async fn send(ctx: Context, body: Bytes, limits: ChatLimits) -> HandlerResult {
    let out = plan_send(&body, &ctx.uid, &limits)?;
    let store = ctx.channels.store();
    let sent = match out.target {
        None => {
            // The request key makes the edge's retries (on this or another backend) publish
            // at most once; a retry answers with the first publish's seq.
            let seq = store
                .publish_room(
                    &out.rid,
                    route::ON_CHAT,
                    &out.push,
                    Some(&ctx.uid),
                    Some(&ctx.request_key),
                )
                .await?;
            Sent { seq: Some(seq) }
        }
        Some(target) => {
            // Only the target is pushed: the sender gets no copy (Pomelo behaviour).
            store
                .publish_to_member(&out.rid, Some(&ctx.uid), &target, route::ON_CHAT, &out.push)
                .await?;
            Sent { seq: None }
        }
    };
    serde_json::to_vec(&sent)
        .map(Bytes::from)
        .map_err(|e| HandlerError::internal(format!("cannot encode the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_protocol::protocol::code;

    #[test]
    fn valid_bodies_parse() {
        let r = parse_send(br#"{"rid":"lobby","content":"hi","from":"x","target":"*"}"#).unwrap();
        assert_eq!(r.rid, "lobby");
        let r = parse_send(br#"{"rid":"lobby","content":"hi","target":"bob"}"#).unwrap();
        assert_eq!(r.target.as_deref(), Some("bob"));
        assert!(parse_send(br#"{"rid":"lobby","content":"hi"}"#).is_ok());
        let exact = format!(
            r#"{{"rid":"a","content":"{}"}}"#,
            "x".repeat(MAX_CONTENT_BYTES)
        );
        assert!(parse_send(exact.as_bytes()).is_ok());
    }

    #[test]
    fn bad_bodies_are_400_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "body is not valid JSON for chat.send"),
            (b"", "body is not valid JSON for chat.send"),
            (b"[1,2]", "body is not valid JSON for chat.send"),
            (br#"{"content":"hi"}"#, "missing field `rid`"),
            (br#"{"rid":"lobby"}"#, "missing field `content`"),
            (br#"{"rid":7,"content":"hi"}"#, "invalid type"),
            (br#"{"rid":"","content":"hi"}"#, "`rid` must not be empty"),
            (
                br#"{"rid":"a\nb","content":"hi"}"#,
                "`rid` must not contain control characters",
            ),
            (
                br#"{"rid":"a","content":"hi","target":""}"#,
                "`target` must not be empty",
            ),
        ];
        for (body, want) in cases {
            let e = parse_send(body).unwrap_err();
            assert_eq!(e.code, code::BAD_REQUEST, "{body:?}");
            assert!(
                e.message.contains(want),
                "{} does not mention {want}",
                e.message
            );
        }
        let long = format!(
            r#"{{"rid":"a","content":"{}"}}"#,
            "x".repeat(MAX_CONTENT_BYTES + 1)
        );
        let e = parse_send(long.as_bytes()).unwrap_err();
        assert_eq!(e.code, code::BAD_REQUEST);
        assert!(e.message.contains("maximum is 4096"), "{}", e.message);
    }

    #[test]
    fn configured_limits_apply() {
        let limits = ChatLimits {
            max_content_bytes: 3,
            ids: IdRules {
                max_bytes: 4,
                ascii_only: true,
            },
        };
        let body = br#"{"rid":"room","content":"abc"}"#;
        assert!(parse_send_with(body, &limits).is_ok());
        for bad in [
            &br#"{"rid":"room","content":"abcd"}"#[..],
            br#"{"rid":"rooms","content":"a"}"#,
            r#"{"rid":"salón","content":"a"}"#.as_bytes(),
        ] {
            assert_eq!(
                parse_send_with(bad, &limits).unwrap_err().code,
                code::BAD_REQUEST
            );
        }
    }

    fn push_of(out: &Outgoing) -> OnChat {
        serde_json::from_slice(&out.push).expect("onChat is JSON")
    }

    #[test]
    fn the_sender_is_the_session_not_the_body() {
        let limits = ChatLimits::default();
        let out = plan_send(
            br#"{"rid":"lobby","content":"hi","from":"mallory"}"#,
            "alice",
            &limits,
        )
        .unwrap();
        assert_eq!(out.rid, "lobby");
        assert_eq!(out.target, None);
        assert_eq!(
            push_of(&out),
            OnChat {
                msg: "hi".into(),
                from: "alice".into(),
                target: "*".into()
            }
        );
    }

    #[test]
    fn star_is_the_room_anything_else_one_member() {
        let limits = ChatLimits::default();
        let room = plan_send(
            br#"{"rid":"r","content":"x","target":"*"}"#,
            "alice",
            &limits,
        )
        .unwrap();
        assert_eq!(room.target, None);
        let private = plan_send(
            br#"{"rid":"r","content":"x","target":"bob"}"#,
            "alice",
            &limits,
        )
        .unwrap();
        assert_eq!(private.target.as_deref(), Some("bob"));
        assert_eq!(push_of(&private).target, "bob");
    }

    #[test]
    fn a_session_without_a_uid_is_401() {
        let e = plan_send(b"not even json", "", &ChatLimits::default()).unwrap_err();
        assert_eq!(e.code, code::NOT_ENTERED);
    }

    #[test]
    fn router_serves_chat_send_under_the_chat_prefix() {
        let r = router();
        assert_eq!(r.routes(), [route::CHAT_SEND]);
        assert_eq!(r.prefixes(), ["chat."]);
    }
}
