//! The quinn-proto server: one thread owns the `Endpoint` and every `Connection` and drives
//! them itself, the design issue 13 suggests below quinn's high-level API. One loop:
//!
//! 1. expire timers (one binary heap for all connections),
//! 2. write the messages that are due into the members' streams,
//! 3. drive every connection touched since the last round (endpoint events, application events,
//!    `poll_transmit`) and queue its datagrams in one [`Outbox`], sent with `sendmmsg`
//!    (or one `sendto` each, the variant that isolates batching),
//! 4. wait for datagrams, the next timer or the next message (`ppoll`), receive them all with
//!    quinn-udp (`recvmmsg`, GRO) and hand them to the endpoint.
//!
//! No task, no mutex, no channel, no waker per connection. Same TLS (ring), same transport
//! configuration as the edge and the bare-quinn server.
//!
//! For the idle probe (`idle`), connections open no stream and join no room: what stays per
//! connection is quinn-proto's `Connection`, the endpoint's tables and the small `Conn`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, EndpointConfig, Event,
    ServerConfig, StreamEvent, StreamId, WriteError,
};
use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};

use super::backlog::{Backlog, Wrote};
use super::control::{Schedule, Shared, CONTROL_POLL};
use super::frame;
use super::outbox::{wait_fd, Outbox, SendMode};

/// Datagrams asked of `poll_transmit` at a time. 1: no GSO; the outbox batches across
/// connections instead (a push is one datagram per connection anyway).
const MAX_DATAGRAMS: usize = 1;

/// Timer heap entries kept at most per live connection (plus a constant) before the heap is
/// rebuilt from the connections' armed timers: stale entries (a connection's timer moved) are
/// otherwise only dropped when their time comes.
const HEAP_SLACK: usize = 4;

struct Conn {
    conn: quinn_proto::Connection,
    /// The uni stream pushes go on, opened once the handshake completes.
    stream: Option<StreamId>,
    backlog: Backlog,
    /// The timer this connection has in the heap; heap entries that differ are stale.
    armed: Option<Instant>,
    /// Queued in `Driver::dirty` for this round.
    dirty: bool,
    room: Option<usize>,
    /// The handshake completed (counted in `Shared::live` until the connection drains).
    connected: bool,
}

struct Driver {
    endpoint: Endpoint,
    /// By `ConnectionHandle` (the endpoint's slab index, reused after a connection drains).
    /// Boxed: a `Conn` is ≈ 7 KB (quinn-proto's `Connection` inline), so the table's spare
    /// capacity would otherwise hold megabytes the idle probe's heap reading counts.
    conns: Vec<Option<Box<Conn>>>,
    live: usize,
    /// Handles of each room's members.
    members: Vec<Vec<usize>>,
    joined: usize,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Connections to drive this round (each once: `Conn::dirty`); bounded by the connections.
    dirty: Vec<usize>,
    /// Idle probe: connections are only held (no stream, no room).
    idle: bool,
    outbox: Outbox,
    /// Where `poll_transmit` and the endpoint write a datagram before the outbox copies it.
    scratch: Vec<u8>,
    shared: Arc<Shared>,
}

pub fn serve(
    socket: UdpSocket,
    config: ServerConfig,
    rooms: usize,
    mode: SendMode,
    idle: bool,
    shared: Arc<Shared>,
) -> Result<()> {
    socket
        .set_nonblocking(true)
        .context("non-blocking UDP socket")?;
    let state = UdpSocketState::new((&socket).into()).context("quinn-udp socket state")?;
    let fd = socket.as_raw_fd();
    let mut d = Driver {
        endpoint: Endpoint::new(
            Arc::new(EndpointConfig::default()),
            Some(Arc::new(config)),
            // quinn-udp sets "don't fragment", so path MTU discovery is allowed (as in quinn).
            true,
            None,
        ),
        conns: Vec::new(),
        live: 0,
        members: (0..rooms.max(1)).map(|_| Vec::new()).collect(),
        joined: 0,
        timers: BinaryHeap::new(),
        dirty: Vec::new(),
        idle,
        outbox: Outbox::new(fd, mode),
        scratch: Vec::with_capacity(1500),
        shared: shared.clone(),
    };
    // One receive buffer per datagram of a batch, each large enough for a GRO train.
    let chunk = 1500 * state.gro_segments().max(1);
    let mut recv_buf = vec![0u8; chunk * BATCH_SIZE];
    let mut metas = [RecvMeta::default(); BATCH_SIZE];
    let mut schedule = Schedule::new(rooms);
    loop {
        let now = Instant::now();
        d.expire(now);
        while let Some(room) = schedule.due(&shared, now) {
            d.push(room, schedule.seq - 1);
        }
        d.drive_dirty(now)?;
        let next = [schedule.deadline(&shared, now), d.next_timer()]
            .into_iter()
            .flatten()
            .min();
        let wait = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(CONTROL_POLL)
            .min(CONTROL_POLL);
        if wait_fd(fd, libc::POLLIN, Some(wait))? {
            d.receive(&state, &socket, chunk, &mut recv_buf, &mut metas)?;
        }
    }
}

impl Driver {
    fn mark(dirty: &mut Vec<usize>, c: &mut Conn, ch: usize) {
        if !c.dirty {
            c.dirty = true;
            dirty.push(ch);
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((t, ch))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(Some(c)) = self.conns.get_mut(ch) {
                if c.armed == Some(t) {
                    c.armed = None;
                    c.conn.handle_timeout(now);
                    Self::mark(&mut self.dirty, c, ch);
                }
            }
        }
    }

    /// Message `seq` to every member of `room`: one frame written into each member's stream.
    fn push(&mut self, room: usize, seq: u64) {
        let f = Bytes::copy_from_slice(&frame::encode(seq, frame::now_ns()));
        let mut dropped = 0;
        for &ch in &self.members[room] {
            let Some(Some(c)) = self.conns.get_mut(ch) else {
                continue;
            };
            let Some(id) = c.stream else { continue };
            let conn = &mut c.conn;
            dropped += c.backlog.deliver(f.clone(), |chunk| write(conn, id, chunk));
            Self::mark(&mut self.dirty, c, ch);
        }
        Shared::add(&self.shared.deliveries, self.members[room].len() as u64);
        Shared::add(&self.shared.dropped, dropped);
    }

    /// Drives every connection touched this round, then sends what they produced.
    fn drive_dirty(&mut self, now: Instant) -> Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        for &ch in &dirty {
            self.drive(ch, now)?;
        }
        // Driving never marks connections again, so the list is empty: keep its allocation.
        debug_assert!(self.dirty.is_empty());
        self.dirty = dirty;
        self.dirty.clear();
        self.outbox.flush(&self.shared)?;
        if self.timers.len() > HEAP_SLACK * self.live + 1024 {
            self.timers = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(ch, c)| Some(Reverse((c.as_ref()?.armed?, ch))))
                .collect();
        }
        Ok(())
    }

    fn drive(&mut self, ch: usize, now: Instant) -> Result<()> {
        let Some(Some(c)) = self.conns.get_mut(ch) else {
            return Ok(());
        };
        c.dirty = false;
        let mut drained = false;
        for pass in 0..2 {
            // Endpoint events (connection IDs, the final "drained"), and the endpoint's answers.
            while let Some(ev) = c.conn.poll_endpoint_events() {
                drained |= ev.is_drained();
                if let Some(back) = self.endpoint.handle_event(ConnectionHandle(ch), ev) {
                    c.conn.handle_event(back);
                }
            }
            if drained {
                break;
            }
            if pass == 1 {
                break;
            }
            while let Some(ev) = c.conn.poll() {
                match ev {
                    Event::Connected if self.idle => {
                        c.connected = true;
                        Shared::add(&self.shared.connections, 1);
                        Shared::add(&self.shared.live, 1);
                    }
                    Event::Connected => {
                        c.stream = c.conn.streams().open(Dir::Uni);
                        if c.stream.is_some() {
                            let room = self.joined % self.members.len();
                            self.members[room].push(ch);
                            self.joined += 1;
                            c.room = Some(room);
                            Shared::add(&self.shared.connections, 1);
                        }
                    }
                    Event::ConnectionLost { .. } => c.backlog.gone = true,
                    Event::Stream(StreamEvent::Writable { id }) if Some(id) == c.stream => {
                        let conn = &mut c.conn;
                        let dropped = c.backlog.flush(|chunk| write(conn, id, chunk));
                        Shared::add(&self.shared.dropped, dropped);
                    }
                    _ => {}
                }
            }
            loop {
                self.scratch.clear();
                let Some(t) = c.conn.poll_transmit(now, MAX_DATAGRAMS, &mut self.scratch) else {
                    break;
                };
                let size = t.size.min(self.scratch.len());
                let seg = t.segment_size.unwrap_or(size).max(1);
                for d in self.scratch[..size].chunks(seg) {
                    self.outbox.push(t.destination, d, &self.shared)?;
                }
            }
        }
        if drained {
            if let Some(room) = c.room {
                self.members[room].retain(|&m| m != ch);
            }
            if c.connected {
                self.shared
                    .live
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.conns[ch] = None;
            self.live -= 1;
            return Ok(());
        }
        let t = c.conn.poll_timeout();
        if t != c.armed {
            c.armed = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, ch)));
            }
        }
        Ok(())
    }

    /// Reads every datagram waiting on the socket and hands each to the endpoint.
    fn receive(
        &mut self,
        state: &UdpSocketState,
        socket: &UdpSocket,
        chunk: usize,
        buf: &mut [u8],
        metas: &mut [RecvMeta],
    ) -> Result<()> {
        loop {
            let n = {
                let mut slices: Vec<IoSliceMut<'_>> =
                    buf.chunks_mut(chunk).map(IoSliceMut::new).collect();
                match state.recv(socket.into(), &mut slices, metas) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // An ICMP error reported on the socket (a client went away): not ours to fail.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e).context("receiving datagrams"),
                }
            };
            let now = Instant::now();
            for (i, meta) in metas.iter().take(n).enumerate() {
                let data = &buf[i * chunk..i * chunk + meta.len];
                let stride = meta.stride.max(1);
                for d in data.chunks(stride) {
                    self.datagram(now, meta.addr, meta.dst_ip, meta.ecn.map(ecn), d)?;
                }
            }
        }
    }

    fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: &[u8],
    ) -> Result<()> {
        self.scratch.clear();
        let event = self.endpoint.handle(
            now,
            from,
            local_ip,
            ecn,
            BytesMut::from(data),
            &mut self.scratch,
        );
        match event {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(Some(c)) = self.conns.get_mut(ch.0) {
                    c.conn.handle_event(ev);
                    Self::mark(&mut self.dirty, c, ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.scratch.clear();
                match self.endpoint.accept(incoming, now, &mut self.scratch, None) {
                    Ok((ch, conn)) => {
                        if self.conns.len() <= ch.0 {
                            self.conns.resize_with(ch.0 + 1, || None);
                        }
                        let mut c = Box::new(Conn {
                            conn,
                            stream: None,
                            backlog: Backlog::default(),
                            armed: None,
                            dirty: false,
                            room: None,
                            connected: false,
                        });
                        Self::mark(&mut self.dirty, &mut c, ch.0);
                        self.conns[ch.0] = Some(c);
                        self.live += 1;
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            let size = t.size.min(self.scratch.len());
                            self.outbox
                                .push(t.destination, &self.scratch[..size], &self.shared)?;
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                let size = t.size.min(self.scratch.len());
                self.outbox
                    .push(t.destination, &self.scratch[..size], &self.shared)?;
            }
            None => {}
        }
        Ok(())
    }
}

fn write(conn: &mut quinn_proto::Connection, id: StreamId, chunk: &mut Bytes) -> Wrote {
    match conn
        .send_stream(id)
        .write_chunks(std::slice::from_mut(chunk))
    {
        Ok(_) => Wrote::Some,
        Err(WriteError::Blocked) => Wrote::Blocked,
        Err(_) => Wrote::Gone,
    }
}

fn ecn(e: quinn_udp::EcnCodepoint) -> EcnCodepoint {
    match e {
        quinn_udp::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
        quinn_udp::EcnCodepoint::Ce => EcnCodepoint::Ce,
    }
}
