//! Forwarding service routes to backends.
//!
//! Backends are found through the registry in Redis (`rc:backends`), refreshed every second;
//! there is no static list. Edges talk to backends over QUIC (ALPN `roomcast-backend/1`,
//! backend certificates signed by the cluster CA), one connection per backend, one
//! bidirectional stream per request.
//!
//! Failover: each attempt has its own timeout; an attempt that fails or times out marks that
//! backend suspect for a few seconds and the request moves on to the next backend, until the
//! overall deadline. Every forwarded request carries a `request_key` unique to the client
//! request, and the chat service publishes with it, so a retry after a backend died mid-request
//! cannot publish a message twice. A request therefore either gets an answer or fails with 502
//! (no backend) or 504 (none answered in time) within the deadline; it never hangs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn::{Connection, Endpoint};
use roomcast_net::stream::{read_frame, write_frame};
use roomcast_protocol::codec::Frame;
use roomcast_protocol::protocol::{code, DEFAULT_MAX_FRAME};
use roomcast_store::{BackendInfo, Store};

/// How long a backend that failed an attempt is skipped (unless no other backend is left).
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Largest response accepted from a backend.
const MAX_BACKEND_FRAME: usize = DEFAULT_MAX_FRAME;

pub struct BackendPool {
    endpoint: Endpoint,
    client_config: quinn::ClientConfig,
    /// Live backends as last read from the registry.
    list: Mutex<Vec<BackendInfo>>,
    /// Open connections by backend id, and when each backend may be tried again.
    conns: Mutex<HashMap<String, Connection>>,
    suspect: Mutex<HashMap<String, Instant>>,
    /// Round-robin cursor spreading requests over backends.
    next: AtomicUsize,
    attempt_timeout: Duration,
    deadline: Duration,
}

impl BackendPool {
    pub fn new(
        endpoint: Endpoint,
        client_config: quinn::ClientConfig,
        attempt_timeout: Duration,
        deadline: Duration,
    ) -> BackendPool {
        BackendPool {
            endpoint,
            client_config,
            list: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            attempt_timeout,
            deadline,
        }
    }

    /// Re-reads the registry. Connections to backends that left are closed, except while the
    /// store recovers from a reset (`keep_known`): their registrations were wiped with
    /// everything else and come back within a second, so the known ones are kept meanwhile
    /// (a request still fails over if one is really gone).
    pub async fn refresh(&self, store: &Store, keep_known: bool) -> roomcast_store::Result<()> {
        let mut list = store.list_backends().await?;
        if keep_known {
            let known = self.list.lock().expect("list lock").clone();
            for b in known {
                if !list.iter().any(|n| n.id == b.id) {
                    list.push(b);
                }
            }
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let mut conns = self.conns.lock().expect("conns lock");
        conns.retain(|id, c| {
            let keep = list.iter().any(|b| &b.id == id);
            if !keep {
                c.close(0u32.into(), b"backend left the registry");
            }
            keep
        });
        *self.list.lock().expect("list lock") = list;
        Ok(())
    }

    /// Backends serving `route`, in the order this request should try them: round-robin
    /// start, suspect backends last.
    fn candidates(&self, route: &str) -> Vec<BackendInfo> {
        let list = self.list.lock().expect("list lock");
        let mut serving: Vec<BackendInfo> = list
            .iter()
            .filter(|b| b.routes.iter().any(|p| route.starts_with(p.as_str())))
            .cloned()
            .collect();
        if serving.is_empty() {
            return serving;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % serving.len();
        serving.rotate_left(start);
        let now = Instant::now();
        let suspect = self.suspect.lock().expect("suspect lock");
        serving.sort_by_key(|b| suspect.get(&b.id).is_some_and(|until| *until > now));
        serving
    }

    /// Forwards a request and returns the backend's response frame (with the backend's id;
    /// the caller substitutes the client's). Failures come back as error responses.
    pub async fn forward(&self, store: &Store, request: Frame, route: &str) -> Frame {
        let started = Instant::now();
        let mut candidates = self.candidates(route);
        if candidates.is_empty() {
            // A backend may have registered since the last refresh.
            if let Err(e) = self.refresh(store, false).await {
                return Frame::error_response(
                    0,
                    code::STORE_UNAVAILABLE,
                    format!("cannot read the backend registry: {e}"),
                );
            }
            candidates = self.candidates(route);
        }
        if candidates.is_empty() {
            return Frame::error_response(
                0,
                code::BACKEND_UNAVAILABLE,
                format!("no live backend serves route `{route}`"),
            );
        }
        let mut last_error = String::new();
        // Go around the list at most twice: a backend that failed once may answer now.
        for backend in candidates.iter().cycle().take(candidates.len() * 2) {
            let left = self.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let budget = self.attempt_timeout.min(left);
            match tokio::time::timeout(budget, self.attempt(backend, &request)).await {
                Ok(Ok(frame)) => {
                    self.suspect
                        .lock()
                        .expect("suspect lock")
                        .remove(&backend.id);
                    return frame;
                }
                Ok(Err(e)) => last_error = format!("backend {}: {e}", backend.id),
                Err(_) => {
                    last_error = format!("backend {} did not answer in {budget:?}", backend.id)
                }
            }
            tracing::warn!("{last_error}; trying another backend");
            self.mark_suspect(&backend.id);
        }
        Frame::error_response(
            0,
            code::BACKEND_TIMEOUT,
            format!(
                "no backend answered within {:?} (last error: {last_error})",
                self.deadline
            ),
        )
    }

    fn mark_suspect(&self, id: &str) {
        self.suspect
            .lock()
            .expect("suspect lock")
            .insert(id.to_string(), Instant::now() + SUSPECT_FOR);
        if let Some(c) = self.conns.lock().expect("conns lock").remove(id) {
            c.close(0u32.into(), b"backend failed a request");
        }
    }

    async fn attempt(&self, backend: &BackendInfo, request: &Frame) -> anyhow::Result<Frame> {
        let conn = self.connection(backend).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, request).await?;
        send.finish()?;
        let mut buf = BytesMut::new();
        match read_frame(&mut recv, &mut buf, MAX_BACKEND_FRAME).await? {
            Some(f @ Frame::Response { .. }) => Ok(f),
            Some(other) => anyhow::bail!("answered with a {} frame", other.name()),
            None => anyhow::bail!("closed the stream without answering"),
        }
    }

    async fn connection(&self, backend: &BackendInfo) -> anyhow::Result<Connection> {
        if let Some(c) = self.conns.lock().expect("conns lock").get(&backend.id) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr: SocketAddr = tokio::net::lookup_host(&backend.addr)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("cannot resolve {}", backend.addr))?;
        let host = backend
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or("localhost");
        let conn = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, host)?
            .await?;
        self.conns
            .lock()
            .expect("conns lock")
            .insert(backend.id.clone(), conn.clone());
        Ok(conn)
    }
}
