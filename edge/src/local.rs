//! Service routes an edge serves itself (`--local-routes`), Pomelo's "frontend handlers".
//!
//! A route matching one of the configured prefixes runs in this process, in the request's own
//! task, through the built-in chat service's [`Router`] — the one `roomcast-chat` runs
//! ([`roomcast_backend::chat::router_with`]) — over the edge's own store, instead of crossing
//! to a backend. The handler sees the same [`Context`] a backend would build from the forwarded
//! request (uid, edge, session, request key), and its result becomes the same `Response` frame
//! ([`roomcast_backend::server::response`]), so a client cannot tell where it ran. What the
//! edge does with a backend's answer (`routes::forward_keyed`) applies to these answers too.
//!
//! Bounds: the handler runs inside the request's task, so a session has at most
//! `--max-requests-in-flight` of them running (QUIC's stream limit; the Pomelo driver's
//! in-flight semaphore), as for forwarded requests; a call is cut after
//! `--backend-deadline-ms` (504); a panic becomes a 500 ([`Router::serve`]).

use std::time::Duration;

use bytes::Bytes;
use roomcast_backend::chat::{self, ChatLimits};
use roomcast_backend::{Context, Router};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::code;

/// The routes this edge serves itself, and the router that serves them.
pub struct LocalRoutes {
    /// `--local-routes`; empty: every service route goes to a backend.
    prefixes: Vec<String>,
    /// The built-in chat service, with the deployment's limits.
    router: Router,
    /// Longest a call may take, as long as a forwarded request may (`--backend-deadline-ms`).
    deadline: Duration,
}

impl LocalRoutes {
    /// Serves `prefixes` with the chat service configured by `limits`. Every prefix must lie
    /// within a prefix the chat service registers (`chat.`): anything else would be answered
    /// 404 by the chat service while a backend of another service exists for it.
    pub fn new(
        prefixes: Vec<String>,
        limits: ChatLimits,
        deadline: Duration,
    ) -> Result<LocalRoutes, String> {
        LocalRoutes::with_router(prefixes, chat::router_with(limits), deadline)
    }

    /// [`LocalRoutes::new`] with another router (the prefixes must lie within its own).
    fn with_router(
        prefixes: Vec<String>,
        router: Router,
        deadline: Duration,
    ) -> Result<LocalRoutes, String> {
        let services = router.prefixes();
        for p in &prefixes {
            if !services.iter().any(|s| p.starts_with(s.as_str())) {
                return Err(format!(
                    "--local-routes `{p}`: the edge's built-in service is the chat service, so \
                     a local route prefix must start with one of {services:?}"
                ));
            }
        }
        Ok(LocalRoutes {
            prefixes,
            router,
            deadline,
        })
    }

    /// Whether `route` is served here rather than forwarded.
    pub fn serves(&self, route: &str) -> bool {
        self.prefixes.iter().any(|p| route.starts_with(p.as_str()))
    }

    /// The configured prefixes.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Runs the handler of `ctx.route` and answers request `id` as a backend would.
    pub async fn call(&self, id: u32, ctx: Context, body: Bytes) -> Frame {
        let route = ctx.route.clone();
        match tokio::time::timeout(self.deadline, self.router.serve(ctx, body)).await {
            Ok(result) => roomcast_backend::server::response(id, result),
            Err(_) => Frame::error_response(
                id,
                code::BACKEND_TIMEOUT,
                format!(
                    "the edge's handler of `{route}` did not answer within {:?}",
                    self.deadline
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_backend::ChannelService;
    use roomcast_store::keys::Keys;
    use roomcast_store::Store;

    const DEADLINE: Duration = Duration::from_secs(5);

    fn local(prefixes: &[&str]) -> Result<LocalRoutes, String> {
        let prefixes = prefixes.iter().map(|p| p.to_string()).collect();
        LocalRoutes::new(prefixes, ChatLimits::default(), DEADLINE)
    }

    fn ctx(store: &Store, uid: &str, key: &str) -> Context {
        Context {
            uid: uid.into(),
            edge: "e1".into(),
            session: format!("{uid}-session"),
            request_key: key.into(),
            route: "chat.send".into(),
            channels: ChannelService::new(store.clone()),
        }
    }

    fn answer(f: Frame) -> (u16, String, serde_json::Value) {
        let Frame::Response {
            code,
            message,
            body,
            ..
        } = f
        else {
            panic!("not a response: {f:?}")
        };
        let body = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (code, message, body)
    }

    #[test]
    fn prefixes_must_lie_within_the_chat_service() {
        let l = local(&["chat."]).unwrap();
        assert!(l.serves("chat.send") && l.serves("chat.nope"));
        assert!(!l.serves("game.move") && !l.serves("chat"));
        let l = local(&["chat.send"]).unwrap();
        assert!(l.serves("chat.send") && !l.serves("chat.whisper"));
        assert!(!local(&[]).unwrap().serves("chat.send"));
        for bad in ["game.", "c", "chat", ""] {
            let e = local(&["chat.", bad]).err().expect(bad);
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("chat."),
                "{e}"
            );
        }
    }

    /// The request key deduplicates as on a backend: a retry answers the first seq and
    /// publishes nothing more; another key is another message.
    #[tokio::test]
    async fn a_retry_with_the_same_request_key_publishes_once() {
        let store = Store::memory(Keys::new("rc"));
        let joined = store.join("lobby", "alice", "e1", None).await.unwrap();
        let l = local(&["chat."]).unwrap();
        let body = Bytes::from_static(br#"{"rid":"lobby","content":"hi"}"#);
        let first = answer(l.call(7, ctx(&store, "alice", "t/7"), body.clone()).await);
        assert_eq!((first.0, first.1.as_str()), (code::OK, ""));
        let seq = first.2["seq"].as_u64().expect("a seq");
        let retry = answer(l.call(7, ctx(&store, "alice", "t/7"), body.clone()).await);
        assert_eq!(retry.2["seq"].as_u64(), Some(seq));
        let next = answer(l.call(8, ctx(&store, "alice", "t/8"), body).await);
        assert_eq!(next.2["seq"].as_u64(), Some(seq + 1));
        let after_join = store
            .history("lobby", joined.seq, joined.seq + 100)
            .await
            .unwrap();
        let seqs: Vec<u64> = after_join.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [seq, seq + 1], "one push per request key");
    }

    /// A handler that never answers is cut at the deadline (504), one that panics is a 500:
    /// either way the client gets an answer and the edge carries on.
    #[tokio::test]
    async fn a_stuck_or_panicking_handler_still_gets_an_answer() {
        async fn stuck(_ctx: Context, _body: Bytes) -> roomcast_backend::handler::HandlerResult {
            std::future::pending().await
        }
        async fn boom(_ctx: Context, _body: Bytes) -> roomcast_backend::handler::HandlerResult {
            panic!("handler bug")
        }
        let router = Router::new()
            .route("chat.stuck", stuck)
            .route("chat.boom", boom);
        let l = LocalRoutes::with_router(vec!["chat.".into()], router, Duration::from_millis(50))
            .unwrap();
        let store = Store::memory(Keys::new("rc"));
        let mut c = ctx(&store, "alice", "t/1");
        c.route = "chat.stuck".into();
        let (code, message, _) = answer(l.call(1, c, Bytes::new()).await);
        assert_eq!(code, code::BACKEND_TIMEOUT);
        assert!(message.contains("`chat.stuck` did not answer"), "{message}");
        let mut c = ctx(&store, "alice", "t/2");
        c.route = "chat.boom".into();
        let (code, message, _) = answer(l.call(2, c, Bytes::new()).await);
        assert_eq!(
            (code, message.as_str()),
            (code::INTERNAL, "the handler of `chat.boom` panicked")
        );
    }

    #[tokio::test]
    async fn refusals_are_the_chat_services() {
        let store = Store::memory(Keys::new("rc"));
        let l = local(&["chat."]).unwrap();
        let (c, m, _) = answer(
            l.call(
                1,
                ctx(&store, "alice", "t/1"),
                Bytes::from_static(br#"{"rid":"elsewhere","content":"hi"}"#),
            )
            .await,
        );
        assert_eq!(c, code::NOT_MEMBER, "{m}");
        let (c, m, _) = answer(
            l.call(2, ctx(&store, "alice", "t/2"), Bytes::from_static(b"nope"))
                .await,
        );
        assert_eq!(c, code::BAD_REQUEST);
        assert!(m.contains("not valid JSON"), "{m}");
        let mut unknown = ctx(&store, "alice", "t/3");
        unknown.route = "chat.nope".into();
        let (c, m, _) = answer(l.call(3, unknown, Bytes::new()).await);
        assert_eq!(
            (c, m.as_str()),
            (code::UNKNOWN_ROUTE, "unknown route `chat.nope`")
        );
    }
}
