//! The bare-quinn server: quinn 0.11's high-level API with the project's TLS and transport
//! configuration, and nothing of roomcast. Each connection gets one uni stream; each delivery
//! is one `write_chunks` of a 100-byte frame, polled once (`now_or_never`) from the one pusher
//! task: no writer task, no channel, no lock of ours per delivery. The best the high-level API
//! allows; what remains is quinn's own machinery (a driver task, a mutex and a wake-up per
//! connection, the endpoint task).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::FutureExt;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};

use super::backlog::{Backlog, Wrote};
use super::control::{Schedule, Shared, CONTROL_POLL};
use super::frame;

/// Accepted streams waiting for the pusher to take them: bounded, and the pusher takes them
/// between messages, so at most this many handshakes finish ahead of it.
const ACCEPTED_QUEUE: usize = 1024;

/// A server endpoint on quinn's own socket and tokio's runtime (the idle server, and the
/// multi-hop edges and backend).
pub(super) fn server_endpoint(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
) -> Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(TokioRuntime),
    )
    .context("quinn endpoint")
}

/// A member's push stream, shared with the multi-hop edges (`hops/edge.rs`).
pub(super) struct Member {
    /// Keeps the connection open (quinn closes a connection whose handles are all dropped).
    _conn: quinn::Connection,
    stream: quinn::SendStream,
    backlog: Backlog,
}

impl Member {
    pub(super) fn new(conn: quinn::Connection, stream: quinn::SendStream) -> Member {
        Member {
            _conn: conn,
            stream,
            backlog: Backlog::default(),
        }
    }

    /// Hands `frame` to the stream as the edge does: one `write_chunks` polled once, the
    /// backlog holding what flow control refuses. Returns the frames dropped.
    pub(super) fn push(&mut self, frame: Bytes) -> u64 {
        let stream = &mut self.stream;
        self.backlog.deliver(frame, |chunk| {
            match stream
                .write_chunks(std::slice::from_mut(chunk))
                .now_or_never()
            {
                Some(Ok(_)) => Wrote::Some,
                None => Wrote::Blocked,
                Some(Err(_)) => Wrote::Gone,
            }
        })
    }
}

/// Pushes `frame` to every member of a room; counts the deliveries and drops in `shared`.
pub(super) fn push_to_room(members: &mut [Member], frame: Bytes, shared: &Shared) {
    let dropped: u64 = members.iter_mut().map(|m| m.push(frame.clone())).sum();
    Shared::add(&shared.deliveries, members.len() as u64);
    Shared::add(&shared.dropped, dropped);
}

/// Serves on quinn's own socket, or with `batched` on the edge's batching socket
/// (`roomcast_net::batch`, `--udp-send-batching on`).
pub fn serve(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    rooms: usize,
    batched: bool,
    shared: Arc<Shared>,
) -> Result<()> {
    // The edge's runtime: tokio's multi-threaded scheduler, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket: Arc<dyn AsyncUdpSocket> = if batched {
            let s = roomcast_net::batch::BatchingSocket::new(socket)?;
            // Its own counters: sendmmsg calls and the datagrams they carried.
            let _ = shared.batch_counters.set(s.counters());
            Arc::new(s)
        } else {
            Arc::new(Counting {
                inner: TokioRuntime.wrap_udp_socket(socket)?,
                shared: shared.clone(),
            })
        };
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(TokioRuntime),
        )
        .context("quinn endpoint")?;
        let mut accepted = accept(&endpoint, |conn| async move {
            let stream = conn.open_uni().await.ok()?;
            Some(Member::new(conn, stream))
        });
        let mut members: Vec<Vec<Member>> = (0..rooms.max(1)).map(|_| Vec::new()).collect();
        let mut joined = 0usize;
        let mut schedule = Schedule::new(rooms);
        loop {
            let now = Instant::now();
            while let Some(room) = schedule.due(&shared, now) {
                let f = Bytes::copy_from_slice(&frame::encode(schedule.seq - 1, frame::now_ns()));
                push_to_room(&mut members[room], f, &shared);
            }
            let wait = schedule
                .deadline(&shared, Instant::now())
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(CONTROL_POLL)
                .min(CONTROL_POLL);
            tokio::select! {
                m = accepted.recv() => {
                    if let Some(m) = m {
                        let room = joined % members.len();
                        members[room].push(m);
                        joined += 1;
                        Shared::add(&shared.connections, 1);
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// Accepts connections on `endpoint`, each handshake and `setup` in a task of its own (as the
/// edge's accept loop does), and hands what `setup` makes over a bounded channel.
fn accept<T, F, Fut>(endpoint: &quinn::Endpoint, setup: F) -> tokio::sync::mpsc::Receiver<T>
where
    T: Send + 'static,
    F: Fn(quinn::Connection) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<T>> + Send,
{
    let (tx, accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    let acceptor = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let (tx, setup) = (tx.clone(), setup.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if let Some(made) = setup(conn).await {
                    let _ = tx.send(made).await;
                }
            });
        }
    });
    accepted
}

/// quinn's own socket, counting the send system calls quinn makes (one `sendmsg` per
/// `try_send`, several datagrams when it uses GSO).
struct Counting {
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl AsyncUdpSocket for Counting {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        Shared::add(&self.shared.send_calls, 1);
        let r = self.inner.try_send(transmit);
        if r.is_ok() {
            let n = match transmit.segment_size {
                Some(s) if s > 0 => transmit.contents.len().div_ceil(s),
                _ => 1,
            };
            Shared::add(&self.shared.datagrams, n as u64);
        }
        r
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The idle probe's quinn server: accepts connections and holds them, nothing else. Each
/// handshake runs in a task of its own (as the edge's accept loop does), which ends with it;
/// what stays per connection is quinn's: its `Connection` handle, driver task, event channel
/// and quinn-proto state. Once a second the live ones are counted (closed ones dropped).
pub fn serve_idle(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    shared: Arc<Shared>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let endpoint = server_endpoint(socket, config)?;
        let mut accepted = accept(&endpoint, |conn| async move { Some(conn) });
        let mut conns: Vec<quinn::Connection> = Vec::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                c = accepted.recv() => {
                    let Some(c) = c else { return Ok(()) };
                    conns.push(c);
                    Shared::add(&shared.connections, 1);
                    Shared::add(&shared.live, 1);
                }
                _ = tick.tick() => {
                    conns.retain(|c| c.close_reason().is_none());
                    shared.live.store(conns.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    })
}
