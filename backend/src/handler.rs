//! The API services are written in: a handler receives the session's identity and the request
//! body, and returns a body or a [`HandlerError`] (a status code and a message for a person).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use roomcast_common::protocol::code;
use roomcast_common::store::StoreError;

use crate::channel::ChannelService;

/// What a handler knows about the request.
#[derive(Clone)]
pub struct Context {
    /// The session's uid, set by the edge from the session's login; never from the body.
    pub uid: String,
    /// The edge the session is connected through.
    pub edge: String,
    /// The session's globally unique name.
    pub session: String,
    /// Unique per client request, identical across retries: pass it to idempotent publishes so
    /// a retry on another backend cannot publish twice.
    pub request_key: String,
    pub route: String,
    pub channels: ChannelService,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub code: u16,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: u16, message: impl Into<String>) -> HandlerError {
        HandlerError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HandlerError {
        HandlerError::new(code::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> HandlerError {
        HandlerError::new(code::INTERNAL, message)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> HandlerError {
        match e {
            StoreError::Redis(e) => {
                HandlerError::new(code::STORE_UNAVAILABLE, format!("redis unavailable: {e}"))
            }
            e @ StoreError::NotMember { .. } => HandlerError::new(code::NOT_MEMBER, e.to_string()),
            e @ StoreError::TargetNotInRoom { .. } => {
                HandlerError::new(code::TARGET_NOT_IN_ROOM, e.to_string())
            }
            e @ StoreError::Reply(_) => HandlerError::internal(e.to_string()),
        }
    }
}

pub type HandlerResult = Result<Bytes, HandlerError>;
type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type Handler = Arc<dyn Fn(Context, Bytes) -> BoxFuture + Send + Sync>;

/// Route name → handler.
#[derive(Clone, Default)]
pub struct Router {
    handlers: HashMap<String, Handler>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `handler` for `route`.
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

    /// Runs the handler of `ctx.route`; an unknown route is a 404.
    pub async fn dispatch(&self, ctx: Context, body: Bytes) -> HandlerResult {
        match self.handlers.get(&ctx.route) {
            Some(h) => h(ctx, body).await,
            None => Err(HandlerError::new(
                code::UNKNOWN_ROUTE,
                format!("unknown route `{}`", ctx.route),
            )),
        }
    }
}
