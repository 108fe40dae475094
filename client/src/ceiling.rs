//! The raw UDP ceiling of this machine: how many datagrams per second one thread can send to
//! many receivers over loopback, with plain `send_to` (one system call per datagram, as QUIC
//! needs for packets to different peers). An edge's fan-out is measured against it: every
//! delivery is at least one such datagram.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What [`udp_ceiling`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct UdpCeiling {
    pub receivers: usize,
    pub payload_bytes: usize,
    pub secs: f64,
    /// Datagrams the sending thread handed to the kernel.
    pub sent: u64,
    /// Datagrams the receiving thread read back (the rest were dropped by full socket buffers).
    pub received: u64,
    pub sent_per_sec: f64,
}

/// One thread sends `payload`-byte datagrams round-robin to `receivers` sockets on 127.0.0.1
/// for `duration`, while a second thread drains them.
pub fn udp_ceiling(
    receivers: usize,
    payload: usize,
    duration: Duration,
) -> std::io::Result<UdpCeiling> {
    let sockets: Vec<UdpSocket> = (0..receivers.max(1))
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drain = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for s in &sockets {
                    while s.recv(&mut buf).is_ok() {
                        n += 1;
                    }
                }
            }
            received.store(n, Ordering::Relaxed);
        })
    };
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let data = vec![0x5au8; payload.max(1)];
    let start = Instant::now();
    let mut sent = 0u64;
    'send: loop {
        for addr in &addrs {
            if sender.send_to(&data, addr).is_ok() {
                sent += 1;
            }
        }
        if start.elapsed() >= duration {
            break 'send;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Let the drain catch up with what is still queued, then stop it.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    Ok(UdpCeiling {
        receivers: addrs.len(),
        payload_bytes: data.len(),
        secs,
        sent,
        received: received.load(Ordering::Relaxed),
        sent_per_sec: sent as f64 / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_sends_and_receives() {
        let c = udp_ceiling(4, 100, Duration::from_millis(50)).unwrap();
        assert!(c.sent > 0);
        assert!(c.received <= c.sent);
        assert!(c.received > 0, "loopback delivered nothing: {c:?}");
    }
}
