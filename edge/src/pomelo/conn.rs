//! One Pomelo connection: WebSocket or raw TCP (sniffed from the first byte, as Pomelo's
//! hybrid switcher does), the package state machine (INITED → handshake answered → WORKING),
//! heartbeats, requests through the edge core, and the session's end (= leaving its rooms).
//!
//! Departures from Pomelo, chosen so a broken client learns why (POMELO.md): a package in the
//! wrong state, an unknown package type, a truncated or oversize package, a malformed message
//! or a body that is not JSON closes the connection with a KICK package
//! `{"reason": "<why>"}` (over WebSocket also a close frame with the reason), where Pomelo
//! drops some of these silently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::link::{gap_package, pomelo_push, Link, Out};
use super::message::{self, Route, Type};
use super::package::{self, Kind, Package};
use super::{handshake, routes, Shared};
use crate::core::Admission;
use crate::fanout::with_core;
use crate::state::{EdgeState, SessionHandle, Wire};

/// How long the writer may take to deliver the KICK and close before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

type Ws = WebSocketStream<TcpStream>;

enum Rx {
    Tcp(OwnedReadHalf, BytesMut),
    Ws(futures::stream::SplitStream<Ws>),
}

enum Tx {
    Tcp(OwnedWriteHalf),
    Ws(futures::stream::SplitSink<Ws, WsMessage>),
}

impl Rx {
    /// The next package; `Ok(None)` when the peer closed; `Err(reason)` for bad input.
    async fn next(&mut self, max: usize) -> Result<Option<Package>, String> {
        match self {
            Rx::Tcp(r, buf) => loop {
                if let Some(p) = package::decode_stream(buf, max).map_err(|e| e.to_string())? {
                    return Ok(Some(p));
                }
                match r.read_buf(buf).await {
                    Ok(0) if buf.is_empty() => return Ok(None),
                    Ok(0) => {
                        return Err(format!(
                            "connection ended inside a package ({} bytes pending)",
                            buf.len()
                        ))
                    }
                    Ok(_) => {}
                    Err(_) => return Ok(None),
                }
            },
            Rx::Ws(s) => loop {
                match s.next().await {
                    None => return Ok(None),
                    Some(Err(
                        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_),
                    )) => return Ok(None),
                    Some(Err(e)) => return Err(format!("bad WebSocket frame: {e}")),
                    Some(Ok(WsMessage::Binary(b))) => {
                        return package::decode_frame(&b, max)
                            .map(Some)
                            .map_err(|e| e.to_string())
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        return Err("text WebSocket frame (Pomelo packages are binary)".into())
                    }
                    Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Ok(_)) => {} // ping/pong: answered by tungstenite
                }
            },
        }
    }
}

impl Rx {
    /// Reads and discards until the peer closes (the caller bounds the time): closing a socket
    /// with unread bytes resets the connection, and the peer would lose the KICK and the answers
    /// still in flight.
    async fn drain(&mut self) {
        match self {
            Rx::Tcp(r, buf) => loop {
                buf.clear();
                match r.read_buf(buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            },
            Rx::Ws(s) => while let Some(Ok(_)) = s.next().await {},
        }
    }
}

impl Tx {
    async fn send(&mut self, b: Bytes) -> bool {
        match self {
            Tx::Tcp(w) => w.write_all(&b).await.is_ok(),
            Tx::Ws(s) => s.send(WsMessage::Binary(b)).await.is_ok(),
        }
    }

    async fn close(&mut self, reason: &str) {
        match self {
            Tx::Tcp(w) => {
                let _ = w.shutdown().await;
            }
            Tx::Ws(s) => {
                // A close reason is at most 123 bytes.
                let mut n = reason.len().min(123);
                while !reason.is_char_boundary(n) {
                    n -= 1;
                }
                let frame = CloseFrame {
                    code: CloseCode::Policy,
                    reason: reason[..n].to_string().into(),
                };
                let _ = s.send(WsMessage::Close(Some(frame))).await;
                let _ = s.close().await;
            }
        }
    }
}

/// Serves one accepted TCP connection until it closes.
pub async fn serve(state: Arc<EdgeState>, shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let handshake_timeout = state.cfg.handshake_timeout();
    let mut first = [0u8; 1];
    let is_ws = match timeout(handshake_timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0].is_ascii_uppercase(), // GET (any HTTP method); packages start 1..5
        Ok(_) => return,
        Err(_) => {
            // Not a byte: a raw TCP client that never sent its handshake.
            let mut tcp = tcp;
            let body = serde_json::json!({ "reason": "no handshake within the handshake timeout" });
            let kick = package::to_bytes(Kind::Kick, body.to_string().as_bytes());
            let _ = timeout(CLOSE_WRITE_TIMEOUT, tcp.write_all(&kick)).await;
            return;
        }
    };
    let (rx, tx) = if is_ws {
        let config = WebSocketConfig::default()
            .max_message_size(Some(shared.max_package + package::HEADER + 1024))
            .max_frame_size(Some(shared.max_package + package::HEADER + 1024));
        let ws = match timeout(
            handshake_timeout,
            tokio_tungstenite::accept_async_with_config(tcp, Some(config)),
        )
        .await
        {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "pomelo websocket upgrade failed: {e}");
                return;
            }
            Err(_) => return,
        };
        let (sink, stream) = ws.split();
        (Rx::Ws(stream), Tx::Ws(sink))
    } else {
        let (r, w) = tcp.into_split();
        (Rx::Tcp(r, BytesMut::new()), Tx::Tcp(w))
    };
    let sid = state.next_session_id();
    let token = format!("{}.{}.{:08x}", state.id, sid, rand::random::<u32>());
    let span = tracing::info_span!(
        "pomelo",
        edge = %state.id,
        session = %token,
        uid = tracing::field::Empty
    );
    let link = Arc::new(Link::new(state.cfg.push_queue));
    let writer = tokio::spawn(write(link.clone(), shared.clone(), tx).instrument(span.clone()));
    let session = Arc::new(SessionHandle {
        sid,
        token,
        wire: Wire::Pomelo(link.clone()),
        ops: tokio::sync::Mutex::new(()),
        control: tokio::sync::Mutex::new(None),
        span: span.clone(),
    });
    let transport = if is_ws { "websocket" } else { "tcp" };
    async {
        tracing::debug!(%peer, transport, "pomelo connection open");
        let mut rx = rx;
        let opened = read(&state, &shared, &session, &link, &mut rx).await;
        if opened {
            // Disconnect = leave: Pomelo has no resume, so the rooms see onLeave at once.
            let _ops = session.ops.lock().await;
            with_core(&state, |c, out| {
                c.closed(session.sid, true, Instant::now(), out)
            });
            state.timer.notify_one();
        }
        link.close("connection closed");
        let _ = writer.await;
        let _ = timeout(CLOSE_WRITE_TIMEOUT, rx.drain()).await;
        tracing::debug!("pomelo connection closed");
    }
    .instrument(span)
    .await;
}

/// Writes what the link queues until it closes; then the KICK (with the reason) and the close.
async fn write(link: Arc<Link>, shared: Arc<Shared>, mut tx: Tx) {
    let mut closing = link.closing();
    let reason = loop {
        let bytes = match link.next().await {
            Err(reason) => break reason,
            // A response's permit is released when this iteration ends, after the write.
            Ok(Out::Package(b, _permit)) => Some(b),
            Ok(Out::Heartbeat) => Some(package::to_bytes(Kind::Heartbeat, b"")),
            Ok(Out::Push(frame)) => pomelo_push(&shared, &frame),
            Ok(Out::Gap { rid, from, to }) => gap_package(&shared, &rid, from, to),
        };
        if let Some(b) = bytes {
            // A client that stopped reading blocks the write: a close (slow consumer, heartbeat
            // timeout) must still end it. Biased: what can be written at once is (a handshake
            // refusal queued just before its close goes out).
            tokio::select! {
                biased;
                ok = tx.send(b) => if !ok {
                    link.close("write failed");
                    return;
                },
                _ = closing.wait_for(Option::is_some) => {}
            }
        }
    };
    let _ = timeout(CLOSE_WRITE_TIMEOUT, async {
        if reason != "connection closed" {
            tracing::info!(reason, "closing pomelo connection");
            let body = serde_json::json!({ "reason": reason }).to_string();
            tx.send(package::to_bytes(Kind::Kick, body.as_bytes()))
                .await;
        }
        tx.close(&reason).await;
    })
    .await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Only a HANDSHAKE is accepted.
    Inited,
    /// Answered; only a HANDSHAKE_ACK is accepted.
    WaitAck,
    /// HEARTBEAT and DATA.
    Working,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Handshake => "handshake",
        Kind::HandshakeAck => "handshake ack",
        Kind::Heartbeat => "heartbeat",
        Kind::Data => "data",
        Kind::Kick => "kick",
    }
}

/// Reads packages until the connection ends or is closed. Returns whether the session was
/// opened in the core (after a good handshake).
async fn read(
    state: &Arc<EdgeState>,
    shared: &Arc<Shared>,
    session: &Arc<SessionHandle>,
    link: &Arc<Link>,
    rx: &mut Rx,
) -> bool {
    let mut phase = Phase::Inited;
    let mut opened = false;
    let mut closing = link.closing();
    let mut deadline = tokio::time::Instant::now() + state.cfg.handshake_timeout();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        state.cfg.max_requests_in_flight.max(1) as usize,
    ));
    // Numbers requests and notifies for the core and the backends (a backend publishes at most
    // once per request number, to make retries safe): Pomelo's own ids may repeat (notifies are
    // all 0, and a client may wrap its ids), so they are only used to answer.
    let mut numbered: u32 = 0;
    loop {
        let next = tokio::select! {
            p = rx.next(shared.max_package) => p,
            _ = sleep_until(deadline) => {
                let why = match phase {
                    Phase::Working => format!(
                        "heartbeat timeout: no heartbeat for {} s",
                        shared.heartbeat_timeout.as_secs()
                    ),
                    _ => "no handshake within the handshake timeout".to_string(),
                };
                link.close(&why);
                return opened;
            }
            _ = closing.wait_for(Option::is_some) => return opened,
        };
        let pkg = match next {
            Ok(Some(p)) => p,
            Ok(None) => return opened,
            Err(reason) => {
                link.close(&format!("bad package: {reason}"));
                return opened;
            }
        };
        match (phase, pkg.kind) {
            (Phase::Inited, Kind::Handshake) => match handshake::parse_request(&pkg.body) {
                Ok(req) => {
                    tracing::debug!(user = %req.user, "pomelo handshake");
                    let answer =
                        handshake::answer(&req, &shared.dict, &shared.protos, shared.heartbeat);
                    link.send(package::to_bytes(Kind::Handshake, &answer));
                    let handle = session.clone();
                    with_core(state, |c, out| {
                        c.open(
                            session.sid,
                            session.token.clone(),
                            handle,
                            Instant::now(),
                            out,
                        )
                    });
                    opened = true;
                    phase = Phase::WaitAck;
                }
                Err(why) => {
                    link.send(package::to_bytes(Kind::Handshake, handshake::refusal()));
                    // The refusal goes out before the KICK and the close.
                    link.close(&format!("bad handshake: {why}"));
                    return opened;
                }
            },
            (Phase::WaitAck, Kind::HandshakeAck) => {
                phase = Phase::Working;
                link.heartbeat();
                deadline = tokio::time::Instant::now() + shared.heartbeat_timeout;
            }
            (Phase::Working, Kind::Heartbeat) => {
                // Only the client's heartbeats keep the session alive (as Pomelo).
                link.heartbeat();
                deadline = tokio::time::Instant::now() + shared.heartbeat_timeout;
            }
            (Phase::Working, Kind::Data) => {
                // At the in-flight bound (answers not yet written count), reading waits; a
                // client that stopped reading its answers is closed at the heartbeat deadline.
                let permit = tokio::select! {
                    p = in_flight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return opened,
                    },
                    _ = sleep_until(deadline) => {
                        link.close(&format!(
                            "heartbeat timeout: {} requests unanswered for {} s (the client does not read its answers)",
                            state.cfg.max_requests_in_flight,
                            shared.heartbeat_timeout.as_secs()
                        ));
                        return opened;
                    }
                    _ = closing.wait_for(Option::is_some) => return opened,
                };
                numbered = numbered.checked_add(1).unwrap_or(1);
                if let Err(why) = data(state, shared, session, link, permit, numbered, pkg.body) {
                    link.close(&why);
                    return opened;
                }
            }
            (phase, kind) => {
                let expected = match phase {
                    Phase::Inited => "a handshake",
                    Phase::WaitAck => "a handshake ack",
                    Phase::Working => "heartbeat or data",
                };
                link.close(&format!(
                    "unexpected {} package: expected {expected}",
                    kind_name(kind)
                ));
                return opened;
            }
        }
    }
}

/// One DATA package: decode the message, then answer it in its own task, which holds `permit`
/// until its answer is written (`--max-requests-in-flight` bounds the answers being computed or
/// queued). An error closes the connection.
fn data(
    state: &Arc<EdgeState>,
    shared: &Arc<Shared>,
    session: &Arc<SessionHandle>,
    link: &Arc<Link>,
    permit: tokio::sync::OwnedSemaphorePermit,
    number: u32,
    body: Bytes,
) -> Result<(), String> {
    let msg = message::decode(&body).map_err(|e| format!("bad message: {e}"))?;
    let route = match &msg.route {
        Route::Name(n) => n.clone(),
        Route::Code(c) => shared
            .dict
            .route(*c)
            .ok_or_else(|| format!("bad message: unknown route code {c}"))?
            .to_string(),
    };
    if route.rsplit('.').next() == Some("constructor") {
        // Pomelo kicks such a session with reason "attack".
        return Err("attack".into());
    }
    let value: Value = if msg.body.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&msg.body)
            .map_err(|e| format!("bad JSON body on route `{route}`: {e}"))?
    };
    let admission = with_core(state, |c, out| c.admit(session.sid, Instant::now(), out));
    let id = msg.id;
    match admission {
        Admission::Serve => {}
        Admission::Refuse => {
            if msg.kind == Type::Request {
                let body = serde_json::json!({
                    "code": roomcast_protocol::protocol::code::LIMIT_EXCEEDED,
                    "error": true,
                    "message": format!(
                        "rate limit: at most {} requests per second (bursts of {}); slow down",
                        state.cfg.rate_limit, state.cfg.rate_burst
                    ),
                });
                respond(link, id, &body, permit);
            }
            return Ok(());
        }
        // The core closes the session (a sustained flood).
        Admission::Drop => return Ok(()),
    }
    let (state, session, link) = (state.clone(), session.clone(), link.clone());
    tokio::spawn(
        async move {
            let answer = routes::request(&state, &session, number, &route, value).await;
            if msg.kind == Type::Request {
                respond(&link, id, &answer, permit);
            }
        }
        .in_current_span(),
    );
    Ok(())
}

fn respond(link: &Link, id: u32, body: &Value, permit: tokio::sync::OwnedSemaphorePermit) {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let msg = message::response(id, &json);
    if msg.len() > package::MAX_BODY {
        link.close("response too large for a Pomelo package");
        return;
    }
    link.answer(package::to_bytes(Kind::Data, &msg), permit);
}
