//! A quinn UDP socket whose sends are batched into `sendmmsg` (Linux; `--udp-send-batching`).
//!
//! A fan-out of one message to N members wakes quinn's N connection drivers, and each calls
//! [`AsyncUdpSocket::try_send`], which with quinn's own socket is one `sendmsg` per datagram
//! (≈ 5 µs of CPU each on loopback). Here `try_send` copies the datagram into a bounded queue
//! and a flusher task sends the queue with as few `sendmmsg` calls as possible, after letting
//! the tasks already queued to run (the drivers woken by the same fan-out) add theirs. Receiving, the
//! local address and the socket options stay quinn's own (`TokioRuntime::wrap_udp_socket`).
//!
//! What each datagram keeps of quinn's [`Transmit`]: its destination (IPv4 destinations go out
//! IPv4-mapped on an IPv6 socket), its source address (`IP_PKTINFO` / `IPV6_PKTINFO`, so an
//! endpoint bound to a wildcard address on a multi-homed host answers from the address the
//! client wrote to) and its ECN codepoint (`IP_TOS` / `IPV6_TCLASS`; like quinn-udp, `IP_TOS` is
//! left out from then on if the kernel refuses it with EINVAL). A GSO transmit
//! (`segment_size`) is split into one `mmsghdr` entry per segment: the wire sees the same
//! datagrams, no `UDP_SEGMENT` means no GSO failure path to handle (EIO on devices without
//! segmentation offload), and one system call covers them anyway. quinn still hands over up to
//! [`MAX_SEGMENTS`] datagrams per `try_send` ([`AsyncUdpSocket::max_transmit_segments`]).
//!
//! Back-pressure: a full queue answers `WouldBlock`, and the [`UdpPoller`] of every connection
//! that met it becomes ready when a flush has made room, so quinn's drivers wait as they do for
//! a full kernel buffer. When the kernel's send buffer is full (EAGAIN) the flusher waits for
//! the socket to become writable and retries; nothing queued is dropped on our side. A
//! datagram the kernel refuses with another error (e.g. an ICMP error pending for its
//! destination) is counted and dropped, as quinn-udp does; QUIC's loss recovery resends it.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::mmsg::Batch;

/// Datagrams held per socket, queued plus being sent: `try_send` answers `WouldBlock` rather
/// than exceed it. At most 1024 × the largest datagram quinn builds (1452 bytes with quinn's
/// default MTU bounds: ≈ 1.5 MB), plus the same again of retained buffer capacity.
pub const QUEUE_DATAGRAMS: usize = 1024;

/// Datagrams quinn may hand over in one `try_send` (quinn 0.11 caps its own GSO batches at 10).
/// The pollers report ready only when this many fit, so a driver that was refused does not
/// spin between a ready poller and a full queue.
pub const MAX_SEGMENTS: usize = 10;

/// Datagrams per `sendmmsg` call (Linux's UIO_MAXIOV).
const MMSG_MAX: usize = 1024;

/// How long the flusher of a dropped socket waits for a full kernel buffer before it gives up
/// the rest of its queue.
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

/// What the flusher did, for tests and the transport-floor probe.
#[derive(Debug, Default)]
pub struct SendCounters {
    /// Datagrams `try_send` accepted into the queue.
    pub queued: AtomicU64,
    /// `sendmmsg` calls made (including ones answered EAGAIN).
    pub calls: AtomicU64,
    /// Datagrams the kernel accepted.
    pub datagrams: AtomicU64,
    /// Datagrams the kernel refused with an error other than EAGAIN (dropped, as quinn-udp
    /// does; QUIC resends what was in them).
    pub failed: AtomicU64,
    /// `try_send` calls answered `WouldBlock` because the queue was full.
    pub refused: AtomicU64,
    /// Times a poller told a connection driver to wait because the queue had no room for a
    /// whole transmit (the usual form back-pressure takes; `refused` is the rarer race).
    pub held_back: AtomicU64,
    /// The most datagrams one flush has taken from the queue.
    pub largest_flush: AtomicU64,
}

/// The socket handed to `quinn::Endpoint::new_with_abstract_socket`.
pub struct BatchingSocket {
    /// quinn's own socket: receives, and knows the local address and GRO.
    inner: Arc<dyn AsyncUdpSocket>,
    shared: Arc<Shared>,
    /// Ends the flusher (after it has sent what is queued) when the socket is dropped.
    _flusher: FlusherGuard,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher when the queue stops being empty (or the socket is dropped).
    wake_flusher: Notify,
    counters: Arc<SendCounters>,
    /// The socket is IPv6 (possibly dual-stack): IPv4 destinations are sent mapped.
    ipv6: bool,
    /// The kernel refused `IP_TOS` once: leave it out from then on.
    no_ipv4_tos: AtomicBool,
    /// Datagrams held at most ([`QUEUE_DATAGRAMS`] unless a test asks for fewer).
    capacity: usize,
}

struct State {
    /// Datagrams waiting for the flusher.
    queue: Batch,
    /// Datagrams the flusher has taken and not finished sending; they count against
    /// [`QUEUE_DATAGRAMS`] too.
    sending: usize,
    /// Pollers waiting for room, oldest first, at most one entry per poller. After a flush,
    /// as many are woken as there is room for datagrams (most transmits are one datagram);
    /// all of them when the queue is empty, so that no waiter depends on a flush that never
    /// comes. Waking only that many spares a burst of thousands of drivers (big rooms) from
    /// being woken, refused and re-registered after every flush.
    waiters: VecDeque<Waker>,
    /// Registration number of `waiters[0]`; entries are numbered in order, so a poller knows
    /// whether (and where) its entry is still there.
    first_waiter: u64,
    /// The socket was dropped: the flusher sends what is left and ends.
    closed: bool,
}

impl State {
    fn held(&self) -> usize {
        self.queue.len() + self.sending
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent plain data; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct FlusherGuard(Arc<Shared>);

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake_flusher.notify_one();
    }
}

impl BatchingSocket {
    /// Wraps the bound `socket`; must be called inside a tokio runtime (the flusher is a task).
    pub fn new(socket: std::net::UdpSocket) -> io::Result<BatchingSocket> {
        Self::with_capacity(socket, QUEUE_DATAGRAMS)
    }

    /// [`BatchingSocket::new`] holding at most `capacity` datagrams (at least
    /// [`MAX_SEGMENTS`]); tests use a small one to reach back-pressure.
    pub fn with_capacity(
        socket: std::net::UdpSocket,
        capacity: usize,
    ) -> io::Result<BatchingSocket> {
        let ipv6 = socket.local_addr()?.is_ipv6();
        // A second descriptor of the same socket, registered with tokio for write readiness.
        let send = socket.try_clone()?;
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        send.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(send)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Batch::default(),
                sending: 0,
                waiters: VecDeque::new(),
                first_waiter: 0,
                closed: false,
            }),
            wake_flusher: Notify::new(),
            counters: Arc::default(),
            ipv6,
            no_ipv4_tos: AtomicBool::new(false),
            capacity: capacity.max(MAX_SEGMENTS),
        });
        tokio::spawn(flush_loop(shared.clone(), io));
        Ok(BatchingSocket {
            inner,
            _flusher: FlusherGuard(shared.clone()),
            shared,
        })
    }

    pub fn counters(&self) -> Arc<SendCounters> {
        self.shared.counters.clone()
    }
}

impl fmt::Debug for BatchingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchingSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for BatchingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(RoomPoller {
            shared: self.shared.clone(),
            slot: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let len = transmit.contents.len();
        let segment = match transmit.segment_size {
            Some(s) if s > 0 && s < len => s,
            _ => len.max(1),
        };
        let datagrams = len.div_ceil(segment);
        let ecn = transmit.ecn.map_or(0, |e| e as u8);
        let mut st = self.shared.lock();
        if st.held() + datagrams > self.shared.capacity {
            self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let first = st.queue.is_empty();
        for d in transmit.contents.chunks(segment) {
            st.queue.push(
                transmit.destination,
                transmit.src_ip,
                ecn,
                d,
                self.shared.ipv6,
            );
        }
        (self.shared.counters.queued).fetch_add(datagrams as u64, Ordering::Relaxed);
        drop(st);
        if first {
            self.shared.wake_flusher.notify_one();
        }
        Ok(())
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
        MAX_SEGMENTS
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Ready when the queue has room for a whole transmit.
struct RoomPoller {
    shared: Arc<Shared>,
    /// The registration number of this poller's entry in `State::waiters`.
    slot: Option<u64>,
}

impl fmt::Debug for RoomPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomPoller").finish_non_exhaustive()
    }
}

impl UdpPoller for RoomPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if st.held() + MAX_SEGMENTS <= this.shared.capacity {
            return Poll::Ready(Ok(()));
        }
        match this.slot {
            Some(n) if n >= st.first_waiter => {
                let i = (n - st.first_waiter) as usize;
                st.waiters[i].clone_from(cx.waker());
            }
            _ => {
                this.slot = Some(st.first_waiter + st.waiters.len() as u64);
                st.waiters.push_back(cx.waker().clone());
            }
        }
        (this.shared.counters.held_back).fetch_add(1, Ordering::Relaxed);
        Poll::Pending
    }
}

/// The flusher: one per socket, until the socket is dropped and its queue is sent.
async fn flush_loop(shared: Arc<Shared>, io: tokio::net::UdpSocket) {
    // Swapped with the state's queue, so both keep their capacity.
    let mut batch = Batch::default();
    let mut woken: Vec<Waker> = Vec::new();
    loop {
        shared.wake_flusher.notified().await;
        // The drivers woken by the same fan-out are ready to run: let them queue theirs first.
        requeue().await;
        let closed = loop {
            {
                let mut st = shared.lock();
                if st.queue.is_empty() {
                    break st.closed;
                }
                mem::swap(&mut st.queue, &mut batch);
                st.sending = batch.len();
            }
            (shared.counters.largest_flush).fetch_max(batch.len() as u64, Ordering::Relaxed);
            let closing = shared.lock().closed;
            send_batch(&shared, &io, &mut batch, closing).await;
            batch.clear();
            {
                let mut st = shared.lock();
                st.sending = 0;
                let room = shared.capacity.saturating_sub(st.queue.len());
                let n = if st.queue.is_empty() {
                    st.waiters.len()
                } else {
                    room.min(st.waiters.len())
                };
                woken.extend(st.waiters.drain(..n));
                st.first_waiter += n as u64;
            }
            for w in woken.drain(..) {
                w.wake();
            }
        };
        if closed {
            return;
        }
    }
}

/// Puts the calling task at the back of its worker's run queue once, so the tasks already
/// queued there run first. Not `tokio::task::yield_now`: that defers the task until the worker
/// runs out of work (or reaches its next maintenance tick), which batches more but can hold a
/// busy edge's datagrams back for as long as the worker stays busy (BENCHMARKS.md § Batched
/// sends).
async fn requeue() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        // Woken while running: tokio reschedules the task behind the ready ones (its
        // "yield" path), not in the LIFO slot.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Sends all of `batch`, waiting for write readiness whenever the kernel buffer is full.
async fn send_batch(shared: &Shared, io: &tokio::net::UdpSocket, batch: &mut Batch, closing: bool) {
    let fd = io.as_raw_fd();
    let counters = &shared.counters;
    if shared.no_ipv4_tos.load(Ordering::Relaxed) {
        for i in 0..batch.len() {
            batch.drop_ipv4_tos(i);
        }
    }
    let mut done = 0;
    while done < batch.len() {
        let r = io.try_io(Interest::WRITABLE, || {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            batch.send(fd, done, MMSG_MAX)
        });
        match r {
            Ok(n) if n > 0 => {
                counters.datagrams.fetch_add(n as u64, Ordering::Relaxed);
                done += n;
            }
            Ok(_) => {
                // Nothing taken and no error: not expected of a non-empty call; skip one rather
                // than loop.
                counters.failed.fetch_add(1, Ordering::Relaxed);
                done += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = if closing {
                    tokio::time::timeout(CLOSE_PATIENCE, io.writable())
                        .await
                        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                } else {
                    io.writable().await
                };
                if let Err(e) = ready {
                    let left = (batch.len() - done) as u64;
                    tracing::debug!("UDP send batch: {left} datagrams not sent: {e}");
                    counters.failed.fetch_add(left, Ordering::Relaxed);
                    return;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && batch.drop_ipv4_tos(done) => {
                tracing::info!("sendmmsg refused IP_TOS ({e}); sending without ECN on IPv4");
                shared.no_ipv4_tos.store(true, Ordering::Relaxed);
                for i in done + 1..batch.len() {
                    batch.drop_ipv4_tos(i);
                }
            }
            Err(e) => {
                // The error belongs to the first datagram left: drop it, send the rest.
                tracing::debug!("sendmmsg: {e}");
                counters.failed.fetch_add(1, Ordering::Relaxed);
                done += 1;
            }
        }
    }
}
