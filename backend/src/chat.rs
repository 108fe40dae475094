//! The chat service: `chat.send {rid, content, from, target}` → `onChat {msg, from, target}`.
//!
//! Target `*` (or absent) pushes to the whole room with the room's next sequence number; any
//! other target pushes to that member only, and the sender gets no copy (as in Pomelo's chat).
//! The sender is always the session's uid; `from` in the body is ignored. Each message costs one
//! Redis round trip, which checks membership, deduplicates retries and publishes once.

use bytes::Bytes;
use roomcast_common::ids::IdRules;
use roomcast_common::protocol::{route, ChatSend, OnChat, Sent};

use crate::handler::{Context, HandlerError, HandlerResult, Router};

/// Default longest `content`, in bytes.
pub const MAX_CONTENT_BYTES: usize = 4096;

/// What the chat service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    pub max_content_bytes: usize,
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

/// The chat service's routes, with the default limits.
pub fn router() -> Router {
    router_with(ChatLimits::default())
}

/// The chat service's routes.
pub fn router_with(limits: ChatLimits) -> Router {
    Router::new().route(route::CHAT_SEND, move |ctx, body| send(ctx, body, limits))
}

/// Route prefixes the chat service registers for.
pub fn route_prefixes() -> Vec<String> {
    vec!["chat.".into()]
}

/// Parses and validates a `chat.send` body with the default limits.
pub fn parse_send(body: &[u8]) -> Result<ChatSend, HandlerError> {
    parse_send_with(body, &ChatLimits::default())
}

/// Parses and validates a `chat.send` body.
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

async fn send(ctx: Context, body: Bytes, limits: ChatLimits) -> HandlerResult {
    let req = parse_send_with(&body, &limits)?;
    let target = req.target.filter(|t| t != "*");
    let push = OnChat {
        msg: req.content,
        from: ctx.uid.clone(),
        target: target.clone().unwrap_or_else(|| "*".into()),
    };
    let payload = serde_json::to_vec(&push).map_err(|e| HandlerError::internal(e.to_string()))?;
    let store = ctx.channels.store();
    let sent = match target {
        None => {
            let seq = store
                .publish_room(
                    &req.rid,
                    route::ON_CHAT,
                    &payload,
                    Some(&ctx.uid),
                    Some(&ctx.request_key),
                )
                .await?;
            Sent { seq: Some(seq) }
        }
        Some(target) => {
            store
                .publish_to_member(&req.rid, Some(&ctx.uid), &target, route::ON_CHAT, &payload)
                .await?;
            Sent { seq: None }
        }
    };
    serde_json::to_vec(&sent)
        .map(Bytes::from)
        .map_err(|e| HandlerError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_common::protocol::code;

    #[test]
    fn valid_bodies_parse() {
        let r = parse_send(br#"{"rid":"lobby","content":"hi","from":"x","target":"*"}"#).unwrap();
        assert_eq!(r.rid, "lobby");
        let r = parse_send(br#"{"rid":"lobby","content":"hi","target":"bob"}"#).unwrap();
        assert_eq!(r.target.as_deref(), Some("bob"));
        assert!(parse_send(br#"{"rid":"lobby","content":"hi"}"#).is_ok());
    }

    #[test]
    fn bad_bodies_are_400_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not valid JSON"),
            (br#"{"content":"hi"}"#, "missing field `rid`"),
            (br#"{"rid":"lobby"}"#, "missing field `content`"),
            (br#"{"rid":"","content":"hi"}"#, "`rid` must not be empty"),
            (
                br#"{"rid":"a","content":"hi","target":""}"#,
                "`target` must not be empty",
            ),
        ];
        for (body, want) in cases {
            let e = parse_send(body).unwrap_err();
            assert_eq!(e.code, code::BAD_REQUEST);
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
        assert!(parse_send(long.as_bytes())
            .unwrap_err()
            .message
            .contains("maximum"));
    }
}
