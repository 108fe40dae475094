//! `BackendServer`: the QUIC endpoint edges connect to (ALPN `roomcast-backend/1`, mutual TLS
//! when a cluster CA is given).
//!
//! Each bidirectional stream carries exactly one `BackendRequest` and gets exactly one
//! `Response`, then the backend finishes the stream. One stream per request means requests
//! never queue behind each other (no head-of-line blocking between a slow handler and a fast
//! one) and an edge can match answers to requests without ids of its own. Every stream runs in
//! its own task; input can produce error responses but never a panic, and a handler that
//! panics is answered with a 500 instead of leaving the edge waiting.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use roomcast_net::stream::{read_frame, write_frame, StreamError};
use roomcast_net::tls::{self, TransportLimits};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{code, BACKEND_ALPN, DEFAULT_MAX_FRAME};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::channel::ChannelService;
use crate::handler::{Context, HandlerResult, Router};

/// Handlers one edge connection may have running at once. An edge multiplexes all its
/// clients' requests over one connection, so this is the backend's concurrency per edge;
/// further streams wait for a slot, and QUIC's stream limit ([`MAX_STREAMS_PER_CONNECTION`])
/// then stops the edge from opening more, so a flood costs bounded memory and tasks.
pub const MAX_CONCURRENT_PER_CONNECTION: usize = 256;
/// Streams (requests) an edge may have open at once on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Time an edge has to deliver a complete request frame on a stream it opened, so a stream
/// that never completes cannot hold a handler slot forever.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent for this long is closed (edges keep theirs alive with pings).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive interval, well under [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Longest error message sent back; longer ones are cut (a response must always encode).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Bytes of a `Response` frame before its message and body: type, id, code, message length.
const RESPONSE_OVERHEAD: usize = 1 + 4 + 2 + 2;

/// The transport limits of the backend endpoint. No unidirectional streams: the protocol
/// does not use them, so a peer gets no credit to open any. No 0-RTT: requests change state
/// and edges have long-lived connections anyway.
pub fn transport_limits() -> TransportLimits {
    TransportLimits {
        max_bidi_streams: MAX_STREAMS_PER_CONNECTION,
        max_uni_streams: 0,
        idle_timeout: IDLE_TIMEOUT,
        keep_alive: KEEP_ALIVE,
        early_data: false,
        mtu_discovery: true,
    }
}

/// A bound, not yet serving backend endpoint. [`BackendServer::run`] serves it.
pub struct BackendServer {
    endpoint: Endpoint,
    router: Arc<Router>,
    channels: ChannelService,
    open: Arc<AtomicUsize>,
}

/// Controls a running [`BackendServer`] from outside its task.
#[derive(Clone)]
pub struct ServerHandle {
    endpoint: Endpoint,
    open: Arc<AtomicUsize>,
}

impl BackendServer {
    /// Binds `listen` (UDP) presenting `cert`/`key`. With `client_ca`, only peers presenting a
    /// certificate signed by that CA (edges) complete the handshake.
    pub fn bind(
        listen: SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        router: Router,
        channels: ChannelService,
    ) -> anyhow::Result<BackendServer> {
        let config = tls::server_config(cert, key, BACKEND_ALPN, &transport_limits(), client_ca)?;
        let endpoint = roomcast_net::net::endpoint(listen, Some(config))?;
        Ok(BackendServer {
            endpoint,
            router: Arc::new(router),
            channels,
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .context("cannot read the bound address")
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            endpoint: self.endpoint.clone(),
            open: self.open.clone(),
        }
    }

    /// Accepts edge connections until the endpoint is closed.
    pub async fn run(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let router = self.router.clone();
            let channels = self.channels.clone();
            let open = OpenGuard::new(self.open.clone());
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "edge handshake failed");
                        return;
                    }
                };
                let span = tracing::debug_span!("edge_conn", peer = %conn.remote_address());
                connection(conn, router, channels).instrument(span).await;
                drop(open);
            });
        }
    }
}

impl ServerHandle {
    /// Edge connections currently open (handshaking ones included).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes every connection and stops accepting, then waits (at most `grace`) until the
    /// peers acknowledged. Requests still running are cut; edges retry them elsewhere.
    pub async fn close(&self, grace: Duration) {
        self.endpoint
            .close(VarInt::from_u32(0), b"backend shutting down");
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one edge connection: one task per stream, at most
/// [`MAX_CONCURRENT_PER_CONNECTION`] at a time.
async fn connection(conn: Connection, router: Arc<Router>, channels: ChannelService) {
    tracing::debug!("edge connected");
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_PER_CONNECTION));
    loop {
        // Take a slot before accepting, so unaccepted streams wait inside QUIC's limits.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(reason = %e, "edge gone");
                break;
            }
        };
        let router = router.clone();
        let channels = channels.clone();
        tokio::spawn(async move {
            request(send, recv, &router, channels).await;
            drop(slot);
        });
    }
}

/// Reads one request from the stream, runs it, writes one response and finishes the stream.
async fn request(
    mut send: SendStream,
    mut recv: RecvStream,
    router: &Router,
    channels: ChannelService,
) {
    let mut buf = BytesMut::new();
    let read = tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        read_frame(&mut recv, &mut buf, DEFAULT_MAX_FRAME),
    )
    .await;
    let reply = match read {
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(0));
            Frame::error_response(
                0,
                code::MALFORMED_FRAME,
                format!(
                    "no complete request frame arrived within {} s",
                    REQUEST_READ_TIMEOUT.as_secs()
                ),
            )
        }
        Ok(Err(e @ (StreamError::Codec(_) | StreamError::Truncated))) => {
            // Malformed or oversize: the rest of the stream is not worth reading.
            let _ = recv.stop(VarInt::from_u32(0));
            tracing::debug!(error = %e, "bad request frame from an edge");
            Frame::error_response(0, e.status(), e.to_string())
        }
        Ok(Err(e)) => {
            // The stream or connection was reset: nobody is left to answer.
            tracing::debug!(error = %e, "request stream failed");
            return;
        }
        Ok(Ok(None)) => Frame::error_response(
            0,
            code::MALFORMED_FRAME,
            "stream finished before a request frame",
        ),
        Ok(Ok(Some(Frame::BackendRequest {
            id,
            route,
            uid,
            edge,
            session,
            request_key,
            body,
        }))) => {
            let ctx = Context {
                uid,
                edge,
                session,
                request_key,
                route,
                channels,
            };
            let result = router.serve(ctx, body).await;
            response(id, result)
        }
        Ok(Ok(Some(other))) => Frame::error_response(
            0,
            code::MALFORMED_FRAME,
            format!("expected a BackendRequest frame, got {}", other.name()),
        ),
    };
    if let Err(e) = write_frame(&mut send, &reply).await {
        tracing::debug!(error = %e, "cannot answer an edge");
        return;
    }
    let _ = send.finish();
}

/// The `Response` frame for a handler's result. Always encodable within
/// [`DEFAULT_MAX_FRAME`]: long error messages are cut, and a body too large for a frame
/// becomes a 500 (the edge would refuse the frame otherwise, and the client would get a less
/// helpful error). Edges answer the routes they serve themselves with it too, so a client
/// gets the same answer wherever its handler ran.
pub fn response(id: u32, result: HandlerResult) -> Frame {
    match result {
        Ok(body) if body.len() + RESPONSE_OVERHEAD <= DEFAULT_MAX_FRAME => Frame::Response {
            id,
            code: code::OK,
            message: String::new(),
            body,
        },
        Ok(body) => Frame::error_response(
            id,
            code::INTERNAL,
            format!(
                "the handler's response of {} bytes exceeds the maximum frame of {} bytes",
                body.len(),
                DEFAULT_MAX_FRAME
            ),
        ),
        Err(e) => Frame::Response {
            id,
            code: e.code,
            message: truncate(e.message, MAX_ERROR_MESSAGE_BYTES),
            body: Bytes::new(),
        },
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary, marking the cut with `…`.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::HandlerError;

    #[test]
    fn success_and_errors_become_responses() {
        let f = response(7, Ok(Bytes::from_static(b"{\"seq\":3}")));
        assert_eq!(
            f,
            Frame::Response {
                id: 7,
                code: 200,
                message: String::new(),
                body: Bytes::from_static(b"{\"seq\":3}")
            }
        );
        let f = response(8, Err(HandlerError::unknown_route("x.y")));
        assert_eq!(f, Frame::error_response(8, 404, "unknown route `x.y`"));
    }

    #[test]
    fn every_response_fits_in_a_frame() {
        let big = response(1, Ok(Bytes::from(vec![b'x'; DEFAULT_MAX_FRAME])));
        let Frame::Response { code, .. } = &big else {
            panic!("not a response")
        };
        assert_eq!(*code, code::INTERNAL);

        let fits = Bytes::from(vec![b'x'; DEFAULT_MAX_FRAME - RESPONSE_OVERHEAD]);
        let f = response(1, Ok(fits));
        let bytes = f.to_bytes().expect("encodes");
        assert_eq!(bytes.len(), DEFAULT_MAX_FRAME + 4);

        let long = HandlerError::bad_request("é".repeat(100_000));
        let f = response(1, Err(long));
        let bytes = f.to_bytes().expect("a long message still encodes");
        assert!(bytes.len() <= MAX_ERROR_MESSAGE_BYTES + RESPONSE_OVERHEAD + 4);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("short".into(), 10), "short");
        let t = truncate("ééééé".into(), 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(truncate("abcdef".into(), 4), "a…");
    }

    #[test]
    fn transport_limits_are_the_documented_ones() {
        let l = transport_limits();
        assert_eq!(l.max_bidi_streams, 1024);
        assert_eq!(l.max_uni_streams, 0);
        assert!(l.keep_alive < l.idle_timeout);
        assert!(!l.early_data);
    }
}
