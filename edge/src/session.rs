//! One client connection: the handshake on the control stream, one task per request stream,
//! and cleanup (leave every room, release the uid) when the connection ends. An open session is
//! one small task (its loop reads the control stream too): every idle connection pays for it.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{close, code, route, OnUser, PROTOCOL_VERSION};
use tokio::time::timeout;
use tracing::Instrument;

use crate::config::REQUEST_READ_TIMEOUT;
use crate::core::Admission;
use crate::fanout::with_core;
use crate::outbound::Outbound;
use crate::routes;
use crate::state::{EdgeState, SessionHandle, Wire};
use crate::transport::{read_frame, write_frame, Conn, FrameError, Recv, Send};

/// Serves one incoming connection until it closes.
///
/// This is the task an open session lives in, so its size is what every idle connection pays
/// for it: the connection's setup (quinn's handshake, HTTP/3's `CONNECT` for WebTransport) and the
/// `Hello` exchange are large, short-lived futures, boxed so that the task keeps only what an open
/// session needs (`tests::an_idle_session_task_stays_small`).
pub fn serve(
    state: Arc<EdgeState>,
    incoming: quinn::Incoming,
) -> impl std::future::Future<Output = ()> + std::marker::Send {
    // Not an `async fn`: its arguments would stay in the task for its whole life.
    let establish = Box::pin(establish(state.clone(), incoming));
    async move {
        if let Some(conn) = establish.await {
            serve_conn(state, conn).await;
        }
    }
}

/// Completes the QUIC handshake (and, for HTTP/3, the WebTransport `CONNECT`).
async fn establish(state: Arc<EdgeState>, incoming: quinn::Incoming) -> Option<Conn> {
    let connecting = match incoming.accept() {
        Ok(mut connecting) => {
            // The endpoint offers `roomcast/1` and `h3`: HTTP/3 connections are WebTransport
            // (browsers), served by the same driver once their session is established. The
            // ALPN is known as soon as the ClientHello is read, before any round trip.
            if crate::webtransport::is_h3(connecting.handshake_data().await.ok()) {
                return match connecting.await {
                    Ok(c) => crate::webtransport::accept(&state, c)
                        .await
                        .map(|s| Conn::Web(Arc::new(s))),
                    Err(e) => {
                        tracing::debug!("connection failed during TLS handshake: {e}");
                        None
                    }
                };
            }
            connecting
        }
        Err(e) => {
            tracing::debug!("connection refused: {e}");
            return None;
        }
    };
    // 0.5-RTT: answer a resumed client's early `Hello` and gate query without waiting for the
    // end of the handshake. Requests that arrive as 0-RTT data are screened in `request_stream`.
    match connecting.into_0rtt() {
        Ok((c, _)) => Some(Conn::Quic(c)),
        Err(connecting) => match connecting.await {
            Ok(c) => Some(Conn::Quic(c)),
            Err(e) => {
                tracing::debug!("connection failed during TLS handshake: {e}");
                None
            }
        },
    }
}

/// Serves an established connection (native QUIC or a WebTransport session) until it closes.
async fn serve_conn(state: Arc<EdgeState>, conn: Conn) {
    let Some((ctrl_send, ctrl_recv)) = Box::pin(handshake(&state, &conn)).await else {
        return;
    };
    let sid = state.next_session_id();
    let token = format!("{}.{}.{:08x}", state.id, sid, rand::random::<u32>());
    let span = tracing::info_span!(
        "session",
        edge = %state.id,
        session = %token,
        uid = tracing::field::Empty
    );
    let session = Arc::new(SessionHandle {
        sid,
        token: token.clone(),
        wire: Wire::Quic {
            outbound: Outbound::new(conn.clone(), state.cfg.push_queue),
            conn: conn.clone(),
        },
        ops: tokio::sync::Mutex::new(()),
        control: tokio::sync::Mutex::new(None),
        span: span.clone(),
    });
    let handle = session.clone();
    with_core(&state, |c, out| {
        c.open(sid, token.clone(), handle, Instant::now(), out)
    });
    let welcome = Frame::Welcome {
        version: PROTOCOL_VERSION,
        edge: state.id.clone(),
        session: token,
        max_frame: state.cfg.max_frame as u32,
    };
    Box::pin(send_welcome(&state, &conn, &session, ctrl_send, welcome))
        .instrument(span.clone())
        .await;
    run(state, session, conn, ctrl_recv).instrument(span).await;
}

/// Writes `Welcome` on the control stream and keeps its send side in the session (for
/// notices). A client that does not take it within the handshake timeout (no stream credit) is
/// closed; the session loop then ends at once.
async fn send_welcome(
    state: &EdgeState,
    conn: &Conn,
    session: &SessionHandle,
    mut send: Send,
    welcome: Frame,
) {
    match timeout(
        state.cfg.handshake_timeout(),
        write_frame(&mut send, &welcome),
    )
    .await
    {
        Ok(Ok(())) => *session.control.lock().await = Some(send),
        // The connection is gone: the session loop learns it from `accept_bi`.
        Ok(Err(e)) => tracing::debug!("cannot write Welcome: {e}"),
        Err(_) => conn.close(
            close::BAD_HANDSHAKE,
            b"Welcome not read within the handshake timeout",
        ),
    }
}

/// The session's loop: request streams, the control stream, forbidden unidirectional streams,
/// until the connection ends.
async fn run(state: Arc<EdgeState>, session: Arc<SessionHandle>, conn: Conn, ctrl_recv: Recv) {
    tracing::debug!(remote = %conn.remote_address(), "session open");
    // The control stream is read here rather than by a task of its own: an idle session is one
    // task (plus quinn's connection driver).
    let control = control_stream(&conn, ctrl_recv, state.cfg.max_frame);
    tokio::pin!(control);
    let mut control_done = false;
    let uni = conn.forbidden_uni();
    tokio::pin!(uni);
    let ended = loop {
        let accepted = tokio::select! {
            a = conn.accept_bi() => a,
            () = &mut uni => {
                conn.close(close::PROTOCOL_ERROR, b"clients may not open unidirectional streams");
                break conn.closed().await;
            }
            () = &mut control, if !control_done => {
                control_done = true;
                continue;
            }
        };
        match accepted {
            Ok((send, recv)) => {
                tokio::spawn(
                    request_stream(state.clone(), session.clone(), send, recv).in_current_span(),
                );
            }
            Err(e) => break e,
        }
    };
    // A client that closes on purpose leaves at once; a lost connection gets a grace period
    // in which the client can resume without its rooms seeing it leave and re-join.
    let on_purpose = ended.on_purpose;
    Box::pin(cleanup(&state, &session, on_purpose)).await;
    tracing::debug!(on_purpose, "session closed: {}", ended.reason);
}

/// Waits for the control stream and a supported `Hello`. On failure the connection is closed
/// with `close::BAD_HANDSHAKE` and a reason a person can read.
async fn handshake(state: &EdgeState, conn: &Conn) -> Option<(Send, Recv)> {
    let (mut send, mut recv) = match timeout(state.cfg.handshake_timeout(), conn.accept_bi()).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return None,
        Err(_) => {
            refuse(
                conn,
                None,
                "no control stream opened within the handshake timeout",
            )
            .await;
            return None;
        }
    };
    let mut buf = BytesMut::new();
    let first = timeout(
        state.cfg.handshake_timeout(),
        read_frame(&mut recv, &mut buf, state.cfg.max_frame),
    )
    .await;
    let problem = match first {
        Ok(Ok(Some(Frame::Hello { version, .. }))) if version == PROTOCOL_VERSION => {
            return Some((send, recv));
        }
        Ok(Ok(Some(Frame::Hello { version, .. }))) => format!(
            "protocol version {version} is not supported; this edge speaks version {PROTOCOL_VERSION}"
        ),
        Ok(Ok(Some(other))) => format!("expected Hello as the first frame, got {}", other.name()),
        Ok(Ok(None)) => "control stream finished before Hello".to_string(),
        Ok(Err(e)) => format!("bad handshake frame: {e}"),
        Err(_) => "no Hello within the handshake timeout".to_string(),
    };
    refuse(conn, Some(&mut send), &problem).await;
    None
}

async fn refuse(conn: &Conn, send: Option<&mut Send>, message: &str) {
    tracing::debug!("refusing {}: {message}", conn.remote_address());
    if let Some(send) = send {
        let frame = Frame::Error {
            code: code::BAD_HANDSHAKE,
            message: message.to_string(),
        };
        let _ = write_frame(send, &frame).await;
        send.finish();
        // Give the Error frame a moment to arrive before the close discards it.
        let _ = timeout(std::time::Duration::from_millis(200), send.stopped()).await;
    }
    conn.close(close::BAD_HANDSHAKE, message.as_bytes());
}

/// Reads the control stream until the client finishes it. The client sends nothing after
/// `Hello`; anything it does send is a protocol error that closes the connection.
async fn control_stream(conn: &Conn, mut recv: Recv, max: usize) {
    let mut buf = BytesMut::new();
    match read_frame(&mut recv, &mut buf, max).await {
        Ok(None) | Err(FrameError::Io(_)) => {}
        Ok(Some(f)) => {
            let msg = format!("unexpected {} frame on the control stream", f.name());
            conn.close(close::PROTOCOL_ERROR, msg.as_bytes());
        }
        Err(e) => {
            let msg = format!("bad frame on the control stream: {e}");
            conn.close(close::PROTOCOL_ERROR, msg.as_bytes());
        }
    }
}

/// One request stream: read one frame, answer it, finish. A malformed or oversize frame only
/// costs this stream; the session and its other requests carry on.
async fn request_stream(
    state: Arc<EdgeState>,
    session: Arc<SessionHandle>,
    mut send: Send,
    mut recv: Recv,
) {
    let mut buf = BytesMut::new();
    let read = timeout(
        REQUEST_READ_TIMEOUT,
        read_frame(&mut recv, &mut buf, state.cfg.max_frame),
    )
    .await;
    let reply = match read {
        Err(_) => Some(Frame::error_response(
            0,
            code::MALFORMED_FRAME,
            "no complete frame arrived within the request timeout",
        )),
        Ok(Err(e)) => {
            recv.stop(0);
            Some(Frame::error_response(0, e.status(), e.to_string()))
        }
        Ok(Ok(None)) => None,
        Ok(Ok(Some(Frame::Request { id, route, .. })))
            if recv.is_0rtt() && !routes::allowed_in_0rtt(&route) =>
        {
            Some(Frame::error_response(
                id,
                code::TOO_EARLY,
                format!(
                    "route `{route}` is not accepted in 0-RTT data (it could be replayed); send it after the handshake"
                ),
            ))
        }
        Ok(Ok(Some(Frame::Request { id, route, body }))) => {
            let admission = with_core(&state, |c, out| c.admit(session.sid, Instant::now(), out));
            match admission {
                Admission::Serve => {
                    Some(routes::dispatch(&state, &session, id, route, body).await)
                }
                Admission::Refuse => Some(Frame::error_response(
                    id,
                    code::LIMIT_EXCEEDED,
                    format!(
                        "rate limit: at most {} requests per second (bursts of {}); slow down",
                        state.cfg.rate_limit, state.cfg.rate_burst
                    ),
                )),
                // Closed by the core's effect (close::ABUSE) for a sustained flood.
                Admission::Drop => None,
            }
        }
        Ok(Ok(Some(Frame::Notify { route, .. }))) if recv.is_0rtt() => {
            tracing::debug!("ignoring notify `{route}` sent in 0-RTT data");
            None
        }
        Ok(Ok(Some(Frame::Notify { route, body }))) => {
            routes::notify(&state, &session, route, body).await;
            None
        }
        Ok(Ok(Some(other))) => Some(Frame::error_response(
            0,
            code::MALFORMED_FRAME,
            format!(
                "expected a Request or Notify frame on a request stream, got {}",
                other.name()
            ),
        )),
    };
    if let Some(frame) = reply {
        if let Err(e) = write_frame(&mut send, &frame).await {
            tracing::debug!("cannot write response: {e}");
        }
    }
    send.finish();
}

/// Detaches the session from the core. A session closed on purpose leaves its rooms (onLeave)
/// and releases its uid now; a lost one gets the resume grace period first (the timer task
/// ends it); a replaced one (resumed elsewhere) leaves nothing: its rooms and uid belong to the
/// new session.
async fn cleanup(state: &Arc<EdgeState>, session: &Arc<SessionHandle>, on_purpose: bool) {
    // Waits for a membership change in progress, so it is part of what is cleaned up.
    let _ops = session.ops.lock().await;
    with_core(state, |c, out| {
        c.closed(session.sid, on_purpose, Instant::now(), out)
    });
    state.timer.notify_one();
}

/// Runs the core's deadlines (grace periods, the drain deadline) until the process ends: one
/// task and one timer for the whole edge, re-armed whenever the core may have an earlier one.
pub async fn run_timer(state: Arc<EdgeState>) {
    loop {
        let notified = state.timer.notified();
        let next = state.cell().core.poll_timeout();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
        with_core(&state, |c, out| c.handle_timeout(Instant::now(), out));
    }
}

/// Forgets detached sessions whose claim the store shows taken by another session (resumed
/// elsewhere, in case the kick on the bus was lost). Returns how many are still waiting.
pub async fn check_detached(state: &Arc<EdgeState>) -> usize {
    let detached = state.cell().core.detached();
    let mut waiting = 0;
    for (uid, token) in detached {
        match state.store.session_name(&uid).await {
            Ok(Some(current)) if current != token => {
                with_core(state, |c, out| c.kick(&uid, &token, out));
            }
            _ => waiting += 1,
        }
    }
    waiting
}

/// Removes `uid` from `rooms` (onLeave to each; only where it is still a member through this
/// edge) and releases its uid if still held by `token`.
pub async fn leave_all(state: &Arc<EdgeState>, uid: &str, token: &str, rooms: &[String]) {
    let body = OnUser::body(uid);
    for rid in rooms {
        // A store recovering from a reset refuses the numbered onLeave until its window
        // closes: wait it out (bounded) rather than leave a ghost member behind.
        let deadline = std::time::Instant::now() + roomcast_store::RECOVERY_WINDOW * 2;
        loop {
            match state
                .store
                .leave(rid, uid, Some(&state.id), Some((route::ON_LEAVE, &body)))
                .await
            {
                Err(roomcast_store::StoreError::Recovering)
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::warn!(%uid, room = %rid, "could not leave: {e}");
                    break;
                }
                Ok(_) => break,
            }
        }
    }
    if let Err(e) = state.store.release_session(uid, token).await {
        tracing::warn!(%uid, session = %token, "could not release the session: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns.
    fn future_size<A, B, F: std::future::Future>(_: &impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open session lives in one task holding `serve`'s future, allocated whole when the
    /// connection is accepted, so 10 000 idle connections pay for it 10 000 times (BENCHMARKS.md,
    /// `idle`). It was 3.5 KiB, plus a 0.9 KiB task for the control stream, before the
    /// connection's setup was boxed and the control stream read in the session's loop.
    #[test]
    fn an_idle_session_task_stays_small() {
        let size = future_size(&serve);
        println!("serve: {size} bytes");
        assert!(
            size <= 1280,
            "the session task's future grew to {size} bytes"
        );
    }
}
