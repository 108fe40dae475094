//! The API services are written in: a handler receives the session's identity ([`Context`])
//! and the request body, and returns a body or a [`HandlerError`] (a status code and a
//! message for a person). A [`Router`] maps route names to handlers.
//!
//! Handlers are plain async functions or closures, so a service needs no trait impls:
//!
//! ```
//! use bytes::Bytes;
//! use roomcast_backend::handler::{Context, HandlerError, Router};
//!
//! async fn ping(_ctx: Context, _body: Bytes) -> Result<Bytes, HandlerError> {
//!     Ok(Bytes::from_static(b"{}"))
//! }
//! let router = Router::new().route("chat.ping", ping);
//! assert_eq!(router.routes(), ["chat.ping"]);
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use roomcast_protocol::protocol::Status;
use tracing::Instrument;

use crate::channel::ChannelService;

/// What a handler knows about the request. Everything except `channels` comes from the edge's
/// `BackendRequest` frame; edges authenticate their clients and backends authenticate edges
/// (mutual TLS), so these fields can be trusted, unlike anything in the body.
#[derive(Clone)]
pub struct Context {
    /// The authenticated uid of the session, set by the edge when the session entered (from
    /// its token). Use it, never a uid from the body, as the acting user. Empty if the session
    /// has not entered.
    pub uid: String,
    /// Id of the edge the session is connected through.
    pub edge: String,
    /// The session's globally unique name (stable across a resume).
    pub session: String,
    /// Unique per client request and identical across the edge's retries on other backends:
    /// pass it to idempotent publishes (`Store::publish_room`) so that a retry after a backend
    /// died mid-request cannot publish a message twice.
    pub request_key: String,
    /// The route the client called, e.g. `chat.send`.
    pub route: String,
    /// Room operations (Pomelo's channel service), backed by Redis.
    pub channels: ChannelService,
}

/// A failed request: a status code and a message for a person. One type for the edge and every
/// backend, so a failure maps to the same code wherever it happens (see
/// [`roomcast_protocol::protocol::Status`]).
pub type HandlerError = Status;

/// What a handler returns: the response body (JSON in the chat service) or an error.
pub type HandlerResult = Result<Bytes, HandlerError>;
type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
/// A type-erased handler, shared by every request task.
type Handler = Arc<dyn Fn(Context, Bytes) -> BoxFuture + Send + Sync>;

/// Route name → handler. Built once at start-up, then shared read-only by every request.
#[derive(Clone, Default)]
pub struct Router {
    handlers: HashMap<String, Handler>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `handler` for `route` (replacing an earlier handler for the same route).
    pub fn route<F, Fut>(mut self, route: &str, handler: F) -> Router
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handlers.insert(
            route.to_string(),
            Arc::new(move |ctx, body| Box::pin(handler(ctx, body))),
        );
        self
    }

    /// Registered route names, sorted.
    pub fn routes(&self) -> Vec<String> {
        let mut r: Vec<String> = self.handlers.keys().cloned().collect();
        r.sort();
        r
    }

    /// The route prefixes this router serves, as registered for edges to route by: each
    /// route's service part up to and including its first `.` (`chat.send` → `chat.`), or the
    /// whole name for a route without a dot. Sorted, without duplicates.
    pub fn prefixes(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .handlers
            .keys()
            .map(|r| match r.find('.') {
                Some(i) => r[..=i].to_string(),
                None => r.clone(),
            })
            .collect();
        p.sort();
        p.dedup();
        p
    }

    /// The handler of `route`, or a 404 naming the route.
    fn handler(&self, route: &str) -> Result<&Handler, HandlerError> {
        self.handlers
            .get(route)
            .ok_or_else(|| HandlerError::unknown_route(route))
    }

    /// Runs the handler of `ctx.route`; an unknown route is a 404 "unknown route `x`".
    pub async fn dispatch(&self, ctx: Context, body: Bytes) -> HandlerResult {
        let handler = self.handler(&ctx.route)?;
        handler(ctx, body).await
    }

    /// [`Router::dispatch`] as a server runs it: in a span naming who asked for what, a
    /// handler that panics answered with a 500 (never a caller left waiting, nor a process
    /// taken down), and failures logged (5xx as warnings). Backends serve edges' requests
    /// with it, and edges the routes they serve themselves (`--local-routes`).
    pub async fn serve(&self, ctx: Context, body: Bytes) -> HandlerResult {
        let span = tracing::debug_span!(
            "request",
            route = %ctx.route,
            uid = %ctx.uid,
            edge = %ctx.edge,
            session = %ctx.session
        );
        let route = ctx.route.clone();
        let result = AssertUnwindSafe(self.dispatch(ctx, body).instrument(span.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(HandlerError::internal(format!(
                    "the handler of `{route}` panicked"
                )))
            });
        if let Err(e) = &result {
            let _in = span.enter();
            if e.code >= 500 {
                tracing::warn!(code = e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(code = e.code, message = %e.message, "request refused");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_protocol::protocol::code;
    use roomcast_store::StoreError;

    async fn ok(_ctx: Context, _body: Bytes) -> HandlerResult {
        Ok(Bytes::from_static(b"{}"))
    }

    #[test]
    fn unknown_route_is_404_naming_it() {
        let router = Router::new().route("chat.send", ok);
        assert!(router.handler("chat.send").is_ok());
        let e = router.handler("chat.nope").err().expect("must be unknown");
        assert_eq!(e.code, code::UNKNOWN_ROUTE);
        assert_eq!(e.message, "unknown route `chat.nope`");
    }

    #[test]
    fn routes_and_prefixes_are_sorted_and_unique() {
        let router = Router::new()
            .route("game.move", ok)
            .route("chat.send", ok)
            .route("chat.whisper", ok)
            .route("ping", ok);
        assert_eq!(
            router.routes(),
            ["chat.send", "chat.whisper", "game.move", "ping"]
        );
        assert_eq!(router.prefixes(), ["chat.", "game.", "ping"]);
        assert!(Router::new().routes().is_empty());
    }

    fn ctx(route: &str) -> Context {
        Context {
            uid: "alice".into(),
            edge: "e1".into(),
            session: "s1".into(),
            request_key: "s1/1".into(),
            route: route.into(),
            channels: ChannelService::new(roomcast_store::Store::memory(
                roomcast_store::keys::Keys::new("rc"),
            )),
        }
    }

    #[tokio::test]
    async fn serve_answers_a_panicking_handler_with_500() {
        async fn boom(_ctx: Context, _body: Bytes) -> HandlerResult {
            panic!("handler bug")
        }
        let router = Router::new().route("chat.ok", ok).route("chat.boom", boom);
        let ok = router.serve(ctx("chat.ok"), Bytes::new()).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"{}"));
        let e = router
            .serve(ctx("chat.boom"), Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(e.code, code::INTERNAL);
        assert_eq!(e.message, "the handler of `chat.boom` panicked");
        let e = router
            .serve(ctx("chat.nope"), Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(e.code, code::UNKNOWN_ROUTE);
    }

    #[test]
    fn store_errors_map_to_client_statuses() {
        let redis = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let e = HandlerError::from(StoreError::Redis(redis));
        assert_eq!(e.code, code::STORE_UNAVAILABLE);
        assert!(e.message.starts_with("redis unavailable: "), "{e}");
        assert!(!e.message.contains("unavailable: redis unavailable"), "{e}");

        let e = HandlerError::from(StoreError::NotMember {
            rid: "lobby".into(),
            uid: "alice".into(),
        });
        assert_eq!(e.code, code::NOT_MEMBER);
        assert!(e.message.contains("lobby") && e.message.contains("alice"));

        let e = HandlerError::from(StoreError::TargetNotInRoom {
            rid: "lobby".into(),
            uid: "bob".into(),
        });
        assert_eq!(e.code, code::TARGET_NOT_IN_ROOM);
        assert!(e.message.contains("bob"));

        let e = HandlerError::from(StoreError::Reply("odd".into()));
        assert_eq!(e.code, code::INTERNAL);
    }
}
