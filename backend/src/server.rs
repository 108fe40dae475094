//! The QUIC endpoint edges connect to (ALPN `roomcast-backend/1`). Each bidirectional stream
//! carries one `BackendRequest` and gets one `Response`; requests never queue behind each
//! other.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use roomcast_common::codec::Frame;
use roomcast_common::protocol::{code, DEFAULT_MAX_FRAME};
use roomcast_common::stream::{read_frame, write_frame};
use tokio::sync::Semaphore;

use crate::channel::ChannelService;
use crate::handler::{Context, Router};

/// Handlers one edge connection may have running at once; further streams wait (and QUIC's
/// stream limit then stops the edge from opening more), so a flood cannot exhaust memory.
pub const MAX_CONCURRENT_PER_CONNECTION: usize = 256;
/// Time an edge has to deliver a request frame on a stream it opened.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts edge connections until the endpoint is closed.
pub async fn serve(endpoint: Endpoint, router: Arc<Router>, channels: ChannelService) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(connection(incoming, router.clone(), channels.clone()));
    }
}

async fn connection(incoming: quinn::Incoming, router: Arc<Router>, channels: ChannelService) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("edge connection failed: {e}");
            return;
        }
    };
    tracing::debug!("edge connected from {}", conn.remote_address());
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_PER_CONNECTION));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let router = router.clone();
        let channels = channels.clone();
        tokio::spawn(async move {
            request(send, recv, &router, channels).await;
            drop(permit);
        });
    }
}

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
            Frame::error_response(0, code::MALFORMED_FRAME, "no request frame arrived in time")
        }
        Ok(Err(e)) => {
            let _ = recv.stop(VarInt::from_u32(0));
            Frame::error_response(0, e.status(), e.to_string())
        }
        Ok(Ok(None)) => return,
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
            let route = ctx.route.clone();
            match router.dispatch(ctx, body).await {
                Ok(body) => Frame::Response {
                    id,
                    code: code::OK,
                    message: String::new(),
                    body,
                },
                Err(e) => {
                    tracing::debug!("{route} failed: {e}");
                    Frame::error_response(id, e.code, e.message)
                }
            }
        }
        Ok(Ok(Some(other))) => Frame::error_response(
            0,
            code::MALFORMED_FRAME,
            format!("expected a BackendRequest frame, got {}", other.name()),
        ),
    };
    if let Err(e) = write_frame(&mut send, &reply).await {
        tracing::debug!("cannot answer an edge: {e}");
    }
    let _ = send.finish();
}
