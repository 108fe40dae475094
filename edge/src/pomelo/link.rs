//! A Pomelo connection's outbound queue. A Pomelo connection is one ordered byte stream, so all
//! of a session's pushes (every room's and the session's own) and its responses and heartbeats
//! go into one queue, drained by one writer task, in the order they were queued (rooms' pushes
//! are queued under the core lock, so each room's seq order holds; Pomelo pushes carry no seq).
//!
//! Bound and slow consumers (as `outbound.rs` for QUIC): at most `cap` pushes are queued (plus
//! at most one gap marker per room). When a
//! push finds the queue full, the oldest quarter of the queued pushes is dropped and replaced by
//! one `onGap {rid, from, to}` push per room that lost seqs (pushes outside rooms are dropped
//! without a marker); after more than [`OVERFLOWS_BEFORE_DISCONNECT`] overflows without the
//! queue draining in between, the connection is closed ("slow consumer"). Responses and
//! heartbeats are never dropped; they are bounded by the requests a connection may have in
//! flight (`--max-requests-in-flight`) and by one heartbeat per client heartbeat.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use roomcast_protocol::codec::Frame;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};

use super::{message, package, Shared};
use crate::outbound::OVERFLOWS_BEFORE_DISCONNECT;

pub enum Out {
    /// A complete Pomelo package (response, handshake answer), and for a response the
    /// connection's in-flight permit it holds until written.
    Package(Bytes, Option<OwnedSemaphorePermit>),
    /// A HEARTBEAT package (at most one queued: see [`Link::heartbeat`]).
    Heartbeat,
    /// A native push frame (as the core hands it to every recipient), turned into a Pomelo
    /// push by the writer, outside the core lock.
    Push(Bytes),
    /// Seqs of a room dropped because the client did not keep up.
    Gap { rid: String, from: u64, to: u64 },
}

pub struct Link {
    queue: Mutex<VecDeque<Out>>,
    /// Pushes in `queue` (the bounded part).
    pushes: AtomicU32,
    wake: Notify,
    cap: usize,
    overflows: AtomicU32,
    /// A heartbeat is queued: a client sending heartbeats faster than it reads gets one.
    heartbeat_queued: std::sync::atomic::AtomicBool,
    /// Set once, with the reason, when the connection is to close.
    closing: watch::Sender<Option<String>>,
}

impl Link {
    pub fn new(cap: usize) -> Link {
        Link {
            queue: Mutex::new(VecDeque::new()),
            pushes: AtomicU32::new(0),
            wake: Notify::new(),
            cap: cap.max(4),
            overflows: AtomicU32::new(0),
            heartbeat_queued: std::sync::atomic::AtomicBool::new(false),
            closing: watch::Sender::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Out>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a package that is never dropped (the handshake answer or refusal).
    pub fn send(&self, package: Bytes) {
        self.lock().push_back(Out::Package(package, None));
        self.wake.notify_one();
    }

    /// Queues a response with the in-flight permit of its request: the permit is released
    /// once the response is written, so a client that does not read its answers stops being
    /// read after `--max-requests-in-flight` of them.
    pub fn answer(&self, package: Bytes, permit: OwnedSemaphorePermit) {
        self.lock().push_back(Out::Package(package, Some(permit)));
        self.wake.notify_one();
    }

    /// Queues a HEARTBEAT unless one is already waiting to be written.
    pub fn heartbeat(&self) {
        if !self.heartbeat_queued.swap(true, Ordering::Relaxed) {
            self.lock().push_back(Out::Heartbeat);
            self.wake.notify_one();
        }
    }

    /// Queues a native push frame; never waits (called under the core lock).
    pub fn push(&self, _seq: u64, frame: Bytes) {
        let overflowed = {
            let mut q = self.lock();
            let full = self.pushes.load(Ordering::Relaxed) as usize >= self.cap;
            if full {
                let dropped = drop_oldest(&mut q, self.cap / 4);
                self.pushes.fetch_sub(dropped as u32, Ordering::Relaxed);
            }
            q.push_back(Out::Push(frame));
            self.pushes.fetch_add(1, Ordering::Relaxed);
            full
        };
        self.wake.notify_one();
        if overflowed {
            let n = self.overflows.fetch_add(1, Ordering::Relaxed) + 1;
            if n > OVERFLOWS_BEFORE_DISCONNECT {
                tracing::warn!(
                    queue = self.cap,
                    overflows = n,
                    "slow pomelo consumer; closing"
                );
                self.close("slow consumer: pushes kept overflowing");
            }
        }
    }

    /// Asks for the connection to close with `reason` (sent to the client in a KICK package).
    /// The first reason wins.
    pub fn close(&self, reason: &str) {
        self.closing.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        });
        self.wake.notify_one();
    }

    pub fn closing(&self) -> watch::Receiver<Option<String>> {
        self.closing.subscribe()
    }

    /// The next thing to write, or the close reason once the connection is to close. After a
    /// close, queued packages (answers, a handshake refusal) still go out; pushes are dropped.
    pub async fn next(&self) -> Result<Out, String> {
        loop {
            let closing = self.closing.borrow().clone();
            if let Some(reason) = closing {
                let mut q = self.lock();
                while let Some(item) = q.pop_front() {
                    if let Out::Package(..) = item {
                        return Ok(item);
                    }
                }
                return Err(reason);
            }
            let notified = self.wake.notified();
            {
                let mut q = self.lock();
                if let Some(item) = q.pop_front() {
                    match item {
                        Out::Push(_) => {
                            self.pushes.fetch_sub(1, Ordering::Relaxed);
                        }
                        Out::Heartbeat => self.heartbeat_queued.store(false, Ordering::Relaxed),
                        _ => {}
                    }
                    if q.is_empty() {
                        // Drained: the client keeps up again.
                        self.overflows.store(0, Ordering::Relaxed);
                    }
                    return Ok(item);
                }
            }
            notified.await;
        }
    }

    /// Pushes queued (for tests).
    pub fn queued_pushes(&self) -> usize {
        self.pushes.load(Ordering::Relaxed) as usize
    }
}

/// Drops the `n` oldest pushes (gap markers included, merged), keeping packages in place, and
/// puts one gap marker per room in front (markers are not counted in the bound: at most one
/// per room, merged). Returns how many pushes were dropped.
fn drop_oldest(q: &mut VecDeque<Out>, n: usize) -> usize {
    let mut kept = VecDeque::new();
    let mut gaps: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut dropped = 0;
    while dropped < n.max(1) {
        match q.pop_front() {
            None => break,
            Some(item @ (Out::Package(..) | Out::Heartbeat)) => kept.push_back(item),
            Some(Out::Gap { rid, from, to }) => {
                let e = gaps.entry(rid).or_insert((from, to));
                e.0 = e.0.min(from);
                e.1 = e.1.max(to);
            }
            Some(Out::Push(frame)) => {
                dropped += 1;
                if let Some(Frame::Push { rid, seq, .. }) = native_push(&frame) {
                    if !rid.is_empty() && seq > 0 {
                        let e = gaps.entry(rid).or_insert((seq, seq));
                        e.0 = e.0.min(seq);
                        e.1 = e.1.max(seq);
                    }
                }
            }
        }
    }
    for (rid, (from, to)) in gaps.into_iter().rev() {
        q.push_front(Out::Gap { rid, from, to });
    }
    while let Some(p) = kept.pop_back() {
        q.push_front(p);
    }
    dropped
}

fn native_push(frame: &Bytes) -> Option<Frame> {
    // A native frame: 4-byte length, then the payload.
    Frame::decode_payload(frame.get(4..).map(|_| frame.slice(4..))?).ok()
}

/// Turns a native push frame into a Pomelo DATA package: the route compressed through the
/// dictionary, the body as pomelo-protobuf where the route has a schema, else the JSON as is.
pub fn pomelo_push(shared: &Shared, frame: &Bytes) -> Option<Bytes> {
    let Some(Frame::Push { route, body, .. }) = native_push(frame) else {
        tracing::warn!("not a push frame; dropped");
        return None;
    };
    push_package(shared, &route, &body)
}

/// A Pomelo DATA package carrying the push `route` with the JSON `body`.
pub fn push_package(shared: &Shared, route: &str, body: &[u8]) -> Option<Bytes> {
    let encoded;
    let body = if shared.protos.has(route) {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        match shared.protos.encode(route, &value)? {
            Ok(b) => {
                encoded = b;
                &encoded[..]
            }
            Err(e) => {
                tracing::warn!("push dropped: {e}");
                return None;
            }
        }
    } else {
        body
    };
    let msg = message::push(route, shared.dict.code(route), body);
    if msg.len() > package::MAX_BODY {
        tracing::warn!(
            route,
            len = msg.len(),
            "push too large for a Pomelo package; dropped"
        );
        return None;
    }
    Some(package::to_bytes(package::Kind::Data, &msg))
}

/// The `onGap` push of a room (same body as the native one).
pub fn gap_package(shared: &Shared, rid: &str, from: u64, to: u64) -> Option<Bytes> {
    let body = serde_json::to_vec(&roomcast_protocol::protocol::OnGap {
        rid: rid.to_string(),
        from,
        to,
    })
    .ok()?;
    push_package(shared, roomcast_protocol::protocol::route::ON_GAP, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn native(rid: &str, seq: u64) -> Bytes {
        Frame::Push {
            route: "onChat".into(),
            rid: rid.into(),
            seq,
            body: Bytes::from_static(br#"{"msg":"m","from":"a","target":"*"}"#),
        }
        .to_bytes()
        .unwrap()
    }

    #[tokio::test]
    async fn overflow_keeps_the_bound_and_marks_each_room() {
        let link = Link::new(8);
        link.send(Bytes::from_static(b"response"));
        for seq in 1..=20 {
            let rid = if seq % 2 == 0 { "even" } else { "odd" };
            link.push(seq, native(rid, seq));
            assert!(link.queued_pushes() <= 8);
        }
        // The response stays first, then the gap markers, then the newest pushes.
        assert!(matches!(link.next().await, Ok(Out::Package(..))));
        let mut gaps = Vec::new();
        let mut seqs = Vec::new();
        while let Ok(Some(item)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), link.next())
                .await
                .map(Result::ok)
        {
            match item {
                Out::Gap { rid, from, to } => gaps.push((rid, from, to)),
                Out::Push(f) => match native_push(&f) {
                    Some(Frame::Push { seq, .. }) => seqs.push(seq),
                    _ => panic!("not a push"),
                },
                Out::Package(..) | Out::Heartbeat => panic!("unexpected package"),
            }
        }
        assert_eq!(seqs.last(), Some(&20));
        let first_kept = seqs[0];
        assert!(gaps.iter().any(|(r, f, _)| r == "odd" && *f == 1));
        assert!(gaps.iter().any(|(r, f, _)| r == "even" && *f == 2));
        assert!(gaps.iter().all(|(_, _, to)| *to < first_kept));
    }

    #[tokio::test]
    async fn a_consumer_that_never_drains_is_closed() {
        let link = Link::new(4);
        let mut closing = link.closing();
        for seq in 1..=200 {
            link.push(seq, native("r", seq));
        }
        closing.changed().await.unwrap();
        assert!(closing
            .borrow()
            .as_deref()
            .unwrap()
            .contains("slow consumer"));
        assert!(link.next().await.is_err());
    }

    #[tokio::test]
    async fn after_a_close_answers_still_go_out_but_pushes_do_not() {
        let link = Link::new(8);
        link.push(1, native("r", 1));
        link.send(Bytes::from_static(b"refusal"));
        link.close("bad handshake");
        match link.next().await {
            Ok(Out::Package(p, _)) => assert_eq!(&p[..], b"refusal"),
            _ => panic!("the queued package must go out first"),
        }
        assert_eq!(link.next().await.err().as_deref(), Some("bad handshake"));
    }

    #[tokio::test]
    async fn heartbeats_coalesce_and_answers_hold_their_permit() {
        let link = Link::new(8);
        for _ in 0..1000 {
            link.heartbeat();
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let p = permits.clone().try_acquire_owned().unwrap();
        link.answer(Bytes::from_static(b"answer"), p);
        assert_eq!(permits.available_permits(), 0, "held while queued");
        assert!(matches!(link.next().await, Ok(Out::Heartbeat)));
        let answer = link.next().await;
        assert!(matches!(answer, Ok(Out::Package(_, Some(_)))));
        drop(answer);
        assert_eq!(permits.available_permits(), 1, "released once written");
        // After the heartbeat went out, the next one is queued again.
        link.heartbeat();
        assert!(matches!(link.next().await, Ok(Out::Heartbeat)));
    }

    #[test]
    fn pushes_become_pomelo_packages() {
        let shared = Shared {
            dict: super::super::handshake::Dict::chat_demo(),
            protos: super::super::protobuf::Protos::parse(
                super::super::protobuf::CHAT_DEMO_SERVER_PROTOS,
            )
            .unwrap(),
            heartbeat: std::time::Duration::from_secs(3),
            heartbeat_timeout: std::time::Duration::from_secs(6),
            max_package: 1024,
        };
        let p = pomelo_push(&shared, &native("r", 1)).unwrap();
        // DATA, push flag with compressed route, code 4 (onChat), protobuf body.
        assert_eq!(&p[4..8], &[0x07, 0x00, 0x04, 0x0a]);
        let gap = gap_package(&shared, "r", 1, 3).unwrap();
        assert_eq!(&gap[4..11], b"\x06\x05onGap");
    }
}
