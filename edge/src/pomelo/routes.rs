//! The chat demo's Pomelo routes mapped onto roomcast's (POMELO.md, "Route mapping"):
//!
//! | Pomelo route | roomcast |
//! |---|---|
//! | `gate.gateHandler.queryEntry {uid}` | the gate's choice of edge, answered with its Pomelo address `{code:200, host, port}` |
//! | `connector.entryHandler.enter {username, rid, token?}` | `connector.enter` → `{users}`; duplicate login → `{code:500, error:true}` |
//! | `chat.chatHandler.send {rid, content, from, target}` | `chat.send {rid, content, target}` (the sender is the session's uid) |
//! | any other `service.handler.method` | the native route `service.method` (backends registered for `service.`) |
//!
//! Answers: a success is the native answer's JSON body; a failure is
//! `{code, error: true, message}` with the native status code.

use std::sync::Arc;

use bytes::Bytes;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{code, route, Entered};
use serde_json::{json, Value};

use crate::gate;
use crate::state::{EdgeState, SessionHandle};

pub const QUERY_ENTRY: &str = "gate.gateHandler.queryEntry";
pub const ENTER: &str = "connector.entryHandler.enter";
pub const SEND: &str = "chat.chatHandler.send";

/// Lifetime of the development token minted for a Pomelo enter without a token.
const DEV_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn error(status: u16, message: impl Into<String>) -> Value {
    json!({ "code": status, "error": true, "message": message.into() })
}

fn text<'a>(body: &'a Value, field: &str) -> Result<&'a str, Value> {
    body.get(field).and_then(Value::as_str).ok_or_else(|| {
        error(
            code::BAD_REQUEST,
            format!("`{field}` (a string) is missing from the body"),
        )
    })
}

/// The native route a Pomelo route maps to: `service.handler.method` → `service.method`.
/// `None` for a route that is not three dot-separated names.
pub fn native_route(pomelo: &str) -> Option<String> {
    let mut parts = pomelo.split('.');
    let (s, h, m) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || s.is_empty() || h.is_empty() || m.is_empty() {
        return None;
    }
    Some(format!("{s}.{m}"))
}

/// Answers one request (also used for notifies, whose answer is dropped). `id` numbers the
/// connection's requests uniquely (not the client's message id, which may repeat): it becomes
/// the native request id and the backends' request key.
pub async fn request(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    id: u32,
    pomelo_route: &str,
    body: Value,
) -> Value {
    match pomelo_route {
        QUERY_ENTRY => query_entry(state, &body).unwrap_or_else(|e| e),
        ENTER => enter(state, session, id, body).await.unwrap_or_else(|e| e),
        _ => {
            let Some(native) = native_route(pomelo_route) else {
                return error(
                    code::UNKNOWN_ROUTE,
                    format!("route `{pomelo_route}` is not `service.handler.method`"),
                );
            };
            // Native-only routes that make no sense for a Pomelo connection.
            if native == route::RESUME || native == route::QUERY_ENTRY {
                return error(
                    code::UNKNOWN_ROUTE,
                    format!("route `{pomelo_route}` is not served to Pomelo clients"),
                );
            }
            let mut body = body;
            if pomelo_route == SEND {
                // The sender is the session's uid; the client's `from` is never used.
                if let Some(o) = body.as_object_mut() {
                    o.remove("from");
                }
            }
            let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            answer(crate::routes::dispatch(state, session, id, native, bytes).await)
        }
    }
}

/// A native answer as a Pomelo one.
fn answer(frame: Frame) -> Value {
    match frame {
        Frame::Response {
            code: code::OK,
            body,
            ..
        } => {
            if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).unwrap_or_else(|_| json!({}))
            }
        }
        Frame::Response { code, message, .. } => error(code, message),
        other => error(
            code::INTERNAL,
            format!("unexpected {} answer", other.name()),
        ),
    }
}

/// `gate.gateHandler.queryEntry {uid}` → `{code: 200, host, port}` of the chosen edge's Pomelo
/// listener (among the edges that run one).
fn query_entry(state: &EdgeState, body: &Value) -> Result<Value, Value> {
    let uid = text(body, "uid")?;
    state
        .cfg
        .id_rules()
        .check("uid", uid)
        .map_err(|m| error(code::BAD_REQUEST, m))?;
    let edges: Vec<_> = state
        .edges
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|e| e.pomelo.is_some())
        .cloned()
        .collect();
    let edge = gate::choose(uid, &edges, &state.cfg.region).ok_or_else(|| {
        error(
            code::BACKEND_UNAVAILABLE,
            "no live edge runs a Pomelo listener",
        )
    })?;
    let addr = edge.pomelo.as_deref().unwrap_or_default();
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| {
            error(
                code::INTERNAL,
                format!("edge {} registered a bad Pomelo address `{addr}`", edge.id),
            )
        })?;
    Ok(json!({ "code": code::OK, "host": host, "port": port }))
}

/// `connector.entryHandler.enter {username, rid, token?}` → `{users}`. The JWT travels in the
/// enter body's `token`; without one, a development edge (`--dev-tokens`) mints one for
/// `username`, a production edge refuses.
async fn enter(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    id: u32,
    body: Value,
) -> Result<Value, Value> {
    let username = text(&body, "username")?;
    let rid = text(&body, "rid")?;
    let token = match body.get("token").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => match &state.minter {
            Some(minter) => {
                state
                    .cfg
                    .id_rules()
                    .check("username", username)
                    .map_err(|m| error(code::BAD_REQUEST, m))?;
                minter.mint(username, &["*".to_string()], DEV_TOKEN_TTL)
            }
            None => {
                return Err(error(
                    code::UNAUTHENTICATED,
                    "this edge needs a token: send the JWT as `token` in the enter body",
                ))
            }
        },
    };
    let native = json!({ "token": token, "rid": rid, "username": username });
    let bytes = Bytes::from(serde_json::to_vec(&native).unwrap_or_default());
    match crate::routes::dispatch(state, session, id, route::ENTER.to_string(), bytes).await {
        Frame::Response {
            code: code::OK,
            body,
            ..
        } => {
            let entered: Entered = serde_json::from_slice(&body)
                .map_err(|e| error(code::INTERNAL, format!("bad enter answer: {e}")))?;
            Ok(json!({ "users": entered.users }))
        }
        // The demo's answer to a name already in use.
        Frame::Response {
            code: code::DUPLICATE_LOGIN,
            ..
        } => Ok(json!({ "code": 500, "error": true })),
        other => Err(answer(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_handler_method_maps_to_service_method() {
        assert_eq!(native_route(SEND).as_deref(), Some("chat.send"));
        assert_eq!(
            native_route("connector.entryHandler.leave").as_deref(),
            Some("connector.leave")
        );
        assert_eq!(native_route("chat.send"), None);
        assert_eq!(native_route("a.b.c.d"), None);
        assert_eq!(native_route("a..c"), None);
    }
}
