//! The routes an edge serves itself, and service routes: forwarded to backends, or run here
//! for those of `--local-routes` ([`crate::local`]); `forward_keyed` decides which.

use std::sync::Arc;

use bytes::Bytes;
use roomcast_protocol::bus::BusMessage;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::Status;
use roomcast_protocol::protocol::{
    code, route, DevToken, DevTokenRequest, Enter, Entered, EntryAnswer, Leave, OnUser, QueryEntry,
    Resume, ResumeAnswer, Resumed,
};
use roomcast_store::{Claim, FENCED_REASON, RECOVERING_REASON};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::{JoinKind, JoinRefused, JoinStart};
use crate::fanout::{run_later, spawn_later, with_core, with_core_later};
use crate::gate;
use crate::state::{EdgeState, SessionHandle};

/// A failed request: the status code and a message for a person (the same type backends use).
pub type RouteError = Status;

type RouteResult = Result<Bytes, RouteError>;

/// Routes served from 0-RTT data: only those a replay cannot harm (idempotent, no state change).
pub fn allowed_in_0rtt(r: &str) -> bool {
    r == route::QUERY_ENTRY
}

fn is_backend_route(r: &str) -> bool {
    route::BACKEND_PREFIXES.iter().any(|p| r.starts_with(p))
}

/// Answers one request.
pub async fn dispatch(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    id: u32,
    route_name: String,
    body: Bytes,
) -> Frame {
    let (gate_only, may_log_in) = {
        let cell = state.cell();
        (
            cell.core.gate_only(session.sid),
            cell.core.may_log_in(session.sid),
        )
    };
    let result = match route_name.as_str() {
        route::QUERY_ENTRY => query_entry(state, &body),
        route::DEV_TOKEN => dev_token(state, &body),
        // A draining edge answers the gate (pointing elsewhere) but takes no new logins: they
        // would only be moved again. Checked before the token and the store's claim.
        route::ENTER | route::RESUME if !may_log_in => Err(draining()),
        _ if gate_only => Err(draining()),
        route::ENTER => enter(state, session, &body).await,
        route::LEAVE => leave(state, session, &body).await,
        route::RESUME => resume(state, session, &body).await,
        r if is_backend_route(r) => return forward(state, session, id, route_name, body).await,
        _ => Err(RouteError::new(
            code::UNKNOWN_ROUTE,
            format!("unknown route `{route_name}`"),
        )),
    };
    match result {
        Ok(body) => Frame::Response {
            id,
            code: code::OK,
            message: String::new(),
            body,
        },
        Err(e) => {
            wake_if_recovering(state, e.code, &e.message);
            Frame::error_response(id, e.code, e.message)
        }
    }
}

/// The refusal of a login on a draining edge, and of anything but the gate's routes on a
/// connection opened while it drains (PROTOCOL.md, status 503).
fn draining() -> RouteError {
    RouteError::new(
        code::EDGE_DRAINING,
        roomcast_protocol::protocol::DRAINING_MESSAGE,
    )
}

/// A notify expects no answer: service routes are run (on a backend, or here for
/// `--local-routes`) and their answers dropped; anything else is logged.
pub async fn notify(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    route_name: String,
    body: Bytes,
) {
    // A gate-only connection (opened while the edge drains) is never logged in: dropped here.
    if is_backend_route(&route_name) && uid_of(state, session).is_some() {
        // Notifies carry no id; each gets its own request key, or the backends would take
        // every notify after the first as a retry of it and publish it once only.
        let n = state
            .next_notify
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{}/notify-{n}", session.token);
        let _ = forward_keyed(state, session, 0, key, route_name, body).await;
    } else {
        tracing::debug!("ignoring notify `{route_name}`");
    }
}

/// The store answered that it is recovering from a reset, or fenced this edge's write (its
/// lease expired): refresh the registration now rather than at the next registry tick.
fn wake_if_recovering(state: &EdgeState, status: u16, message: &str) {
    if status == code::STORE_UNAVAILABLE
        && (message == RECOVERING_REASON || message == FENCED_REASON)
    {
        state.registry_wake.notify_one();
    }
}

fn parse<T: DeserializeOwned>(route_name: &str, body: &[u8]) -> Result<T, RouteError> {
    serde_json::from_slice(body).map_err(|e| {
        RouteError::new(
            code::BAD_REQUEST,
            format!("body of `{route_name}` is not valid: {e}"),
        )
    })
}

fn json(value: &impl Serialize) -> RouteResult {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| RouteError::new(code::INTERNAL, e.to_string()))
}

fn check(state: &EdgeState, field: &str, value: &str) -> Result<(), RouteError> {
    state
        .cfg
        .id_rules()
        .check(field, value)
        .map_err(|m| RouteError::new(code::BAD_REQUEST, m))
}

/// `gate.queryEntry {uid, region?}` → the edge this uid should use.
fn query_entry(state: &EdgeState, body: &[u8]) -> RouteResult {
    let q: QueryEntry = parse(route::QUERY_ENTRY, body)?;
    check(state, "uid", &q.uid)?;
    let region = q.region.as_deref().unwrap_or(&state.cfg.region);
    let edges = state.edges.read().unwrap_or_else(|e| e.into_inner());
    let edge = gate::choose(&q.uid, &edges, region)
        .ok_or_else(|| RouteError::new(code::BACKEND_UNAVAILABLE, "no live edge is registered"))?;
    let (host, port) = edge
        .addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .ok_or_else(|| {
            RouteError::new(
                code::INTERNAL,
                format!("edge {} registered a bad address `{}`", edge.id, edge.addr),
            )
        })?;
    json(&EntryAnswer {
        code: code::OK,
        host: host.to_string(),
        port,
        edge: edge.id.clone(),
        region: edge.region.clone(),
        webtransport: state.webtransport.get().map(|w| w.entry(host, port)),
    })
}

/// Verifies the token: the uid is its `sub` (a `username`, if sent, must match), and every room
/// in `rooms` must be allowed by it.
fn authenticate<'a>(
    state: &EdgeState,
    token: &str,
    username: &str,
    rooms: impl IntoIterator<Item = &'a String>,
) -> Result<String, RouteError> {
    let claims = state
        .verifier
        .verify(token)
        .map_err(|e| RouteError::new(code::UNAUTHENTICATED, e.to_string()))?;
    check(state, "uid (token `sub`)", &claims.sub)?;
    if !username.is_empty() && username != claims.sub {
        return Err(RouteError::new(
            code::FORBIDDEN,
            format!("the token is for `{}`, not `{username}`", claims.sub),
        ));
    }
    for rid in rooms {
        if !claims.allows_room(rid) {
            return Err(RouteError::new(
                code::FORBIDDEN,
                roomcast_common::auth::AuthError::RoomNotAllowed(rid.clone()).to_string(),
            ));
        }
    }
    Ok(claims.sub)
}

/// `gate.devToken {uid}` (development mode only): a token for any uid, valid one hour, for
/// every room.
fn dev_token(state: &EdgeState, body: &[u8]) -> RouteResult {
    let Some(minter) = &state.minter else {
        return Err(RouteError::new(
            code::FORBIDDEN,
            "development tokens are disabled on this edge (it was started without --dev-tokens)",
        ));
    };
    let req: DevTokenRequest = parse(route::DEV_TOKEN, body)?;
    check(state, "uid", &req.uid)?;
    let token = minter.mint(
        &req.uid,
        &["*".to_string()],
        std::time::Duration::from_secs(3600),
    );
    json(&DevToken { token })
}

/// The session's uid, once bound.
fn uid_of(state: &EdgeState, session: &SessionHandle) -> Option<String> {
    state.cell().core.uid(session.sid).map(str::to_string)
}

/// `connector.enter {token, rid, username?}`: binds the session to the token's uid (once,
/// globally unique), joins the room and pushes onAdd to the members already there.
async fn enter(state: &Arc<EdgeState>, session: &Arc<SessionHandle>, body: &[u8]) -> RouteResult {
    let req: Enter = parse(route::ENTER, body)?;
    check(state, "rid", &req.rid)?;
    let uid = authenticate(state, &req.token, &req.username, [&req.rid])?;
    let _ops = session.ops.lock().await;
    bind(state, session, &uid, None).await?;

    if start_join(state, session, &req.rid).await? == JoinStart::Already {
        // Idempotent: the store changes nothing and pushes nothing for a repeated join.
        let joined = state.store.join(&req.rid, &uid, &state.id, None).await?;
        return json(&Entered {
            users: joined.users,
            seq: joined.seq,
            members: joined.members,
        });
    }
    let on_add = OnUser::body(&uid);
    let joined = match state
        .store
        .join(&req.rid, &uid, &state.id, Some((route::ON_ADD, &on_add)))
        .await
    {
        Ok(j) => j,
        Err(e) => {
            with_core(state, |c, out| c.join_failed(session.sid, &req.rid, out));
            return Err(e.into());
        }
    };
    // A catch-up here covers pushes the feed delivered before this join was recorded.
    let _ = finish_join(state, session, &req.rid, joined.seq, JoinKind::Enter).await;
    json(&Entered {
        users: joined.users,
        seq: joined.seq,
        members: joined.members,
    })
}

/// Counts the session as a user of the room's channel and, if the channel is not confirmed
/// yet, subscribes it: every push numbered after the join is then sure to reach this edge.
async fn start_join(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    rid: &str,
) -> Result<JoinStart, RouteError> {
    let start = state
        .cell()
        .core
        .begin_join(session.sid, rid)
        .map_err(|e| match e {
            JoinRefused::TooManyRooms { max } => RouteError::new(
                code::LIMIT_EXCEEDED,
                format!("a session may be in at most {max} rooms"),
            ),
            JoinRefused::NotLoggedIn => RouteError::new(
                code::NOT_ENTERED,
                "the session is not logged in (or is closing)",
            ),
        })?;
    if start == JoinStart::Subscribe {
        let wanted = || state.cell().core.wants_room(rid);
        if let Err(e) = state.bus.subscribe(rid, wanted).await {
            with_core(state, |c, out| c.join_failed(session.sid, rid, out));
            return Err(RouteError::new(code::STORE_UNAVAILABLE, e));
        }
        state.cell().core.subscribed(rid);
    }
    Ok(start)
}

/// Records the store's join in the core and replays what the member needs from history.
/// Returns the gap the answer reports (a rejoin's, or what history could not replay).
async fn finish_join(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    rid: &str,
    seq: u64,
    kind: JoinKind,
) -> Option<(u64, u64)> {
    let (mut gap, later) =
        with_core_later(state, |c, out| c.joined(session.sid, rid, seq, kind, out));
    let mut other = Vec::new();
    for l in later {
        if matches!(l, crate::fanout::Later::Fetch { .. }) {
            // Awaited: the answer reports what the replay could not cover.
            let g = run_later(state.clone(), l).await;
            gap = gap.or(g);
        } else {
            other.push(l);
        }
    }
    spawn_later(state, other);
    gap
}

/// `connector.resume {username, session, rooms}`: continues a lost session on this connection.
/// The old connection (if still open anywhere) is closed. Where the member is still in the
/// room (inside the grace period) membership moves here without onLeave/onAdd and the room
/// replays what the client missed before live pushes continue; where it already left (grace
/// period over, or its edge reaped), it joins again (onAdd to the others, never to itself) and
/// the answer reports the seqs since its last one as a gap.
async fn resume(state: &Arc<EdgeState>, session: &Arc<SessionHandle>, body: &[u8]) -> RouteResult {
    let req: Resume = parse(route::RESUME, body)?;
    check(state, "session", &req.session)?;
    if req.rooms.len() > state.cfg.max_rooms_per_session {
        return Err(RouteError::new(
            code::LIMIT_EXCEEDED,
            format!(
                "a session may be in at most {} rooms",
                state.cfg.max_rooms_per_session
            ),
        ));
    }
    for rid in req.rooms.keys() {
        check(state, "rid", rid)?;
    }
    let uid = authenticate(state, &req.token, &req.username, req.rooms.keys())?;
    let _ops = session.ops.lock().await;
    if uid_of(state, session).is_some() {
        return Err(RouteError::new(
            code::BAD_REQUEST,
            "connector.resume must be the first login of a connection",
        ));
    }
    // Also ends a detached session of this uid on this edge without a leave.
    bind(state, session, &uid, Some(&req.session)).await?;
    let mut answer = ResumeAnswer {
        rooms: Default::default(),
    };
    for (rid, since) in req.rooms {
        if start_join(state, session, &rid).await? == JoinStart::Already {
            continue;
        }
        // Whether the member is still in the room decides between a silent move and a rejoin
        // (the join script reports no onAdd for a silent large room either way).
        let was_member = match state.store.member(&rid, &uid).await {
            Ok(m) => m.is_some(),
            Err(e) => {
                with_core(state, |c, out| c.join_failed(session.sid, &rid, out));
                return Err(e.into());
            }
        };
        let on_add = OnUser::body(&uid);
        let joined = match state
            .store
            .join_with(
                &rid,
                &uid,
                &state.id,
                Some((route::ON_ADD, &on_add)),
                true,
                // No floor from the client: a client's word must not move a room's numbering
                // (a huge `since` would exhaust it for everyone), and the store never reuses a
                // seq without one (see the store contract).
                0,
            )
            .await
        {
            Ok(j) => j,
            Err(e) => {
                with_core(state, |c, out| c.join_failed(session.sid, &rid, out));
                return Err(e.into());
            }
        };
        let kind = if joined.added || !was_member {
            tracing::debug!(room = %rid, since, seq = joined.seq, "late resume: joined again");
            JoinKind::Rejoin { since }
        } else {
            JoinKind::Resume { since }
        };
        let gap = finish_join(state, session, &rid, joined.seq, kind).await;
        answer.rooms.insert(
            rid,
            Resumed {
                users: joined.users,
                seq: joined.seq,
                members: joined.members,
                gap,
            },
        );
    }
    json(&answer)
}

/// Binds the session to `uid` on first use; a later enter must use the same uid.
async fn bind(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    uid: &str,
    resume: Option<&str>,
) -> Result<(), RouteError> {
    match uid_of(state, session) {
        Some(bound) if bound == uid => return Ok(()),
        Some(bound) => {
            return Err(RouteError::new(
                code::BAD_REQUEST,
                format!(
                    "this session is logged in as `{bound}`; open another connection to log in as `{uid}`"
                ),
            ))
        }
        None => {}
    }
    let replaced = match state
        .store
        .claim_session(uid, &state.id, &session.token, resume)
        .await?
    {
        Claim::Granted { replaced: None } => None,
        Claim::Granted {
            replaced: Some((edge, old)),
        } => {
            if edge != state.id {
                // The resumed connection may still be open on that edge: ask it to close it.
                let kick = BusMessage::Kick {
                    uid: uid.to_string(),
                    session: old.clone(),
                    reason: "session resumed on another connection".into(),
                };
                if let Err(e) = state.store.publish_to_edge(&edge, &kick).await {
                    tracing::warn!(%edge, "could not ask the edge to close the old session: {e}");
                }
            }
            Some(old)
        }
        Claim::Taken { edge } => {
            return Err(RouteError::new(
                code::DUPLICATE_LOGIN,
                format!("`{uid}` is already logged in (session on edge {edge})"),
            ))
        }
    };
    // On this edge, the old session is closed (live) or forgotten (detached) right here.
    let bound = with_core(state, |c, out| {
        c.bind(session.sid, uid, replaced.as_deref(), out)
    });
    if !bound {
        return Err(RouteError::new(
            code::NOT_ENTERED,
            "the session closed while logging in",
        ));
    }
    session.span.record("uid", uid);
    Ok(())
}

/// `connector.leave {rid}`: leaves one room and pushes onLeave to the others.
async fn leave(state: &Arc<EdgeState>, session: &Arc<SessionHandle>, body: &[u8]) -> RouteResult {
    let req: Leave = parse(route::LEAVE, body)?;
    check(state, "rid", &req.rid)?;
    let uid = uid_of(state, session).ok_or_else(not_entered(route::LEAVE))?;
    let _ops = session.ops.lock().await;
    if !state.cell().core.in_room(session.sid, &req.rid) {
        return Err(RouteError::new(
            code::NOT_MEMBER,
            format!("`{uid}` is not in room `{}`", req.rid),
        ));
    }
    let on_leave = OnUser::body(&uid);
    state.cell().core.begin_leave(session.sid, &req.rid);
    if let Err(e) = state
        .store
        .leave(
            &req.rid,
            &uid,
            Some(&state.id),
            Some((route::ON_LEAVE, &on_leave)),
        )
        .await
    {
        state.cell().core.leave_failed(session.sid, &req.rid);
        return Err(e.into());
    }
    with_core(state, |c, out| c.left(session.sid, &req.rid, out));
    json(&serde_json::json!({}))
}

fn not_entered(route_name: &'static str) -> impl Fn() -> RouteError {
    move || {
        RouteError::new(
            code::NOT_ENTERED,
            format!("route `{route_name}` needs a logged-in session: call connector.enter first"),
        )
    }
}

/// The 503 reason when the store does not list a member this edge has in the room.
pub const MEMBERSHIP_REASON: &str = "membership being restored after a store failure; retry";

/// Answers a service route: on this edge if it is one of `--local-routes`, else on a backend;
/// either way with the session's identity attached.
async fn forward(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    id: u32,
    route_name: String,
    body: Bytes,
) -> Frame {
    // Request ids are unique per connection (PROTOCOL.md), so a retry of one is a retry.
    let key = format!("{}/{id}", session.token);
    forward_keyed(state, session, id, key, route_name, body).await
}

/// [`forward`] with the request key handlers deduplicate retries by. The one place that
/// decides where a service route runs; the answer is checked the same way wherever it ran.
async fn forward_keyed(
    state: &Arc<EdgeState>,
    session: &Arc<SessionHandle>,
    id: u32,
    request_key: String,
    route_name: String,
    body: Bytes,
) -> Frame {
    let Some(uid) = uid_of(state, session) else {
        return Frame::error_response(
            id,
            code::NOT_ENTERED,
            format!("route `{route_name}` needs a logged-in session: call connector.enter first"),
        );
    };
    // The room the request is about, if it names one (to check a "not a member" answer).
    let rid = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("rid")?.as_str().map(str::to_string));
    let answer = if state.local.serves(&route_name) {
        let ctx = roomcast_backend::Context {
            uid,
            edge: state.id.clone(),
            session: session.token.clone(),
            request_key,
            route: route_name,
            channels: roomcast_backend::ChannelService::new(state.store.clone()),
        };
        state.local.call(id, ctx, body).await
    } else {
        let request = Frame::BackendRequest {
            id,
            route: route_name.clone(),
            uid,
            edge: state.id.clone(),
            session: session.token.clone(),
            request_key,
            body,
        };
        state
            .backends
            .forward(&state.store, request, &route_name)
            .await
    };
    match answer {
        Frame::Response {
            code: code::NOT_MEMBER,
            ..
        } if rid
            .as_deref()
            .is_some_and(|rid| state.cell().core.in_room(session.sid, rid)) =>
        {
            // This edge has the session in the room but the store does not: its state was lost
            // or its members reaped. Never tell the client "not a member" of a room it is in:
            // reconcile now (write back, or have sessions resume) and let it retry.
            state.registry_wake.notify_one();
            Frame::error_response(id, code::STORE_UNAVAILABLE, MEMBERSHIP_REASON)
        }
        Frame::Response {
            code,
            message,
            body,
            ..
        } => {
            wake_if_recovering(state, code, &message);
            Frame::Response {
                id,
                code,
                message,
                body,
            }
        }
        other => Frame::error_response(
            id,
            code::INTERNAL,
            format!("the handler answered with a {} frame", other.name()),
        ),
    }
}
