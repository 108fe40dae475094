//! The raw-UDP server: one ~100-byte datagram per delivery, no crypto, no acknowledgements, no
//! retransmission. The floor of any design that sends one datagram per delivery. A "client"
//! is whatever address sent it a datagram (a hello); its room is its arrival order modulo the
//! room count.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use socket2::SockAddr;

use super::control::{Schedule, Shared, CONTROL_POLL};
use super::frame;
use super::outbox::{wait_fd, Outbox, SendMode};

/// Peers the server keeps at most: any address that sends it a datagram becomes one, so the
/// set is bounded; datagrams from further addresses are ignored.
const MAX_PEERS: usize = 100_000;

pub fn serve(socket: UdpSocket, rooms: usize, mode: SendMode, shared: Arc<Shared>) -> Result<()> {
    socket
        .set_nonblocking(true)
        .context("non-blocking UDP socket")?;
    let fd = socket.as_raw_fd();
    let mut known = HashSet::new();
    let mut members: Vec<Vec<SockAddr>> = vec![Vec::new(); rooms.max(1)];
    let mut schedule = Schedule::new(rooms);
    let mut outbox = Outbox::new(fd, mode);
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        while let Some(room) = schedule.due(&shared, now) {
            let f = frame::encode(schedule.seq - 1, frame::now_ns());
            for to in &members[room] {
                outbox.push_addr(to.clone(), &f, &shared)?;
            }
            Shared::add(&shared.deliveries, members[room].len() as u64);
            // Each message leaves at once, as a push would.
            outbox.flush(&shared)?;
        }
        let wait = schedule
            .deadline(&shared, Instant::now())
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(CONTROL_POLL)
            .min(CONTROL_POLL);
        if wait_fd(fd, libc::POLLIN, Some(wait))? {
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                add_peer(from, &mut known, &mut members, &shared);
            }
        }
    }
}

fn add_peer(
    from: SocketAddr,
    known: &mut HashSet<SocketAddr>,
    members: &mut [Vec<SockAddr>],
    shared: &Shared,
) {
    if known.len() < MAX_PEERS && known.insert(from) {
        let room = (known.len() - 1) % members.len();
        members[room].push(SockAddr::from(from));
        Shared::add(&shared.connections, 1);
    }
}

/// The idle probe's baseline without QUIC or TLS: a hash-map entry per peer (its address and
/// when it was last heard), each datagram answered with one byte so the peer knows it is
/// registered. What any server must keep to know a peer, and nothing else.
pub fn serve_idle(socket: UdpSocket, shared: Arc<Shared>) -> Result<()> {
    socket
        .set_nonblocking(true)
        .context("non-blocking UDP socket")?;
    let fd = socket.as_raw_fd();
    let mut peers: std::collections::HashMap<SocketAddr, Instant> =
        std::collections::HashMap::new();
    let mut buf = [0u8; 2048];
    loop {
        if wait_fd(fd, libc::POLLIN, Some(CONTROL_POLL))? {
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let now = Instant::now();
                if let Some(seen) = peers.get_mut(&from) {
                    *seen = now;
                } else if peers.len() < MAX_PEERS {
                    peers.insert(from, now);
                    Shared::add(&shared.connections, 1);
                    Shared::add(&shared.live, 1);
                } else {
                    continue;
                }
                // Best effort: a lost answer makes the peer say hello again.
                let _ = socket.send_to(b"k", from);
            }
        }
    }
}
