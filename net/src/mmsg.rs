//! Many UDP datagrams per system call (`sendmmsg`), each with its own destination, source
//! address (`IP_PKTINFO` / `IPV6_PKTINFO`) and ECN codepoint (`IP_TOS` / `IPV6_TCLASS`): the
//! synchronous core that [`crate::batch`] drives from a task and the transport-floor probe drives
//! from a thread. Linux only.
//!
//! Everything a call needs except the `mmsghdr`/`iovec` arrays (which hold raw pointers) is
//! encoded when a datagram is pushed, so a [`Batch`] is plain data that may cross `.await`s and
//! threads; the pointer arrays are rebuilt inside [`Batch::send`] and never outlive the call.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Room for the control messages of one datagram: `IP_TOS`/`IPV6_TCLASS` (an int, 16 bytes with
/// its header) plus `IPV6_PKTINFO` (20 bytes, 40 with header and padding) = 56; `u64` for the
/// alignment `cmsghdr` needs.
type Control = [u64; 8];

/// One queued datagram.
struct Item {
    to: SockAddr,
    /// Offset and length in [`Batch::data`].
    start: usize,
    len: usize,
    control: Control,
    /// Bytes of `control` in use.
    control_len: usize,
    /// What the control messages were built from, kept to rebuild them without `IP_TOS`.
    src_ip: Option<IpAddr>,
    ecn: u8,
    /// Whether `control` holds an `IP_TOS` message.
    ipv4_tos: bool,
}

/// Datagrams waiting to be sent with `sendmmsg`; their bytes back to back in one buffer.
#[derive(Default)]
pub struct Batch {
    data: Vec<u8>,
    items: Vec<Item>,
}

impl Batch {
    /// A batch with room for `datagrams` datagrams of up to 1500 bytes before it reallocates.
    pub fn with_capacity(datagrams: usize) -> Batch {
        Batch {
            data: Vec::with_capacity(datagrams * 1500),
            items: Vec::with_capacity(datagrams),
        }
    }

    /// Queues one datagram for `to`, sent from `src_ip` when given (else the kernel picks the
    /// source address), with `ecn` in the IP header's two ECN bits. On an IPv6 socket
    /// (`ipv6_socket`), IPv4 destinations are sent as IPv4-mapped IPv6 addresses.
    pub fn push(
        &mut self,
        to: SocketAddr,
        src_ip: Option<IpAddr>,
        ecn: u8,
        datagram: &[u8],
        ipv6_socket: bool,
    ) {
        let to = match to {
            SocketAddr::V4(v4) if ipv6_socket => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            to => to,
        };
        let mut item = Item {
            to: SockAddr::from(to),
            start: self.data.len(),
            len: datagram.len(),
            control: [0; 8],
            control_len: 0,
            src_ip,
            ecn,
            ipv4_tos: false,
        };
        encode_control(&mut item, true);
        self.data.extend_from_slice(datagram);
        self.items.push(item);
    }

    /// [`Batch::push`] with the address already converted and no source address or ECN (what
    /// a socket without those needs).
    pub fn push_addr(&mut self, to: SockAddr, datagram: &[u8]) {
        self.items.push(Item {
            to,
            start: self.data.len(),
            len: datagram.len(),
            control: [0; 8],
            control_len: 0,
            src_ip: None,
            ecn: 0,
            ipv4_tos: false,
        });
        self.data.extend_from_slice(datagram);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Datagram `index`: its destination and bytes.
    pub fn get(&self, index: usize) -> Option<(&SockAddr, &[u8])> {
        let i = self.items.get(index)?;
        Some((&i.to, &self.data[i.start..i.start + i.len]))
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
    }

    /// One `sendmmsg` of the datagrams from index `from` on (at most `max` of them) on the
    /// non-blocking socket `fd`: how many the kernel took, or the error of datagram `from`
    /// (`WouldBlock` when the send buffer is full).
    pub fn send(&self, fd: RawFd, from: usize, max: usize) -> io::Result<usize> {
        let items = &self.items[from.min(self.items.len())..];
        let items = &items[..items.len().min(max)];
        if items.is_empty() {
            return Ok(0);
        }
        let mut iovecs: Vec<libc::iovec> = items
            .iter()
            .map(|i| libc::iovec {
                iov_base: self.data[i.start..i.start + i.len].as_ptr() as *mut libc::c_void,
                iov_len: i.len,
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = items
            .iter()
            .zip(iovecs.iter_mut())
            .map(|(i, iov)| {
                // SAFETY: mmsghdr is plain data for which all-zero is a valid value.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                // sendmmsg only reads the name and control buffers (the pointers are `*mut`
                // because recvmmsg shares the type).
                h.msg_hdr.msg_name = i.to.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = i.to.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                if i.control_len > 0 {
                    h.msg_hdr.msg_control = i.control.as_ptr() as *mut libc::c_void;
                    h.msg_hdr.msg_controllen = i.control_len as _;
                }
                h
            })
            .collect();
        // SAFETY: every header points into `iovecs`, `self.data` and `self.items`, which are
        // neither moved nor changed until the call returns; the count is the headers' length
        // (at most `max`, and the kernel caps it at UIO_MAXIOV itself).
        let r =
            unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Rebuilds datagram `index`'s control messages without `IP_TOS`, for kernels that refuse
    /// it (EINVAL) on the socket: what quinn-udp's own fallback also drops.
    pub fn drop_ipv4_tos(&mut self, index: usize) -> bool {
        match self.items.get_mut(index) {
            Some(item) if item.ipv4_tos => {
                encode_control(item, false);
                true
            }
            _ => false,
        }
    }
}

/// Whether the destination is IPv4 (or IPv4-mapped), whose ECN goes in `IP_TOS`.
fn is_ipv4(to: &SockAddr) -> bool {
    match to.as_socket() {
        Some(SocketAddr::V4(_)) => true,
        Some(SocketAddr::V6(v6)) => v6.ip().to_ipv4_mapped().is_some(),
        None => false,
    }
}

/// Encodes `item`'s ECN and source address as control messages, as quinn-udp does for one
/// `sendmsg`: ECN in `IP_TOS` for IPv4 and IPv4-mapped destinations (unless `ipv4_tos` is
/// false) else `IPV6_TCLASS`; the source in `IP_PKTINFO` for an IPv4 source (also on a
/// dual-stack socket, where Linux takes it for a mapped destination) else `IPV6_PKTINFO`.
fn encode_control(item: &mut Item, ipv4_tos: bool) {
    item.control = [0; 8];
    let mut at = 0;
    let ecn = libc::c_int::from(item.ecn);
    item.ipv4_tos = false;
    if is_ipv4(&item.to) {
        if ipv4_tos {
            item.ipv4_tos = true;
            push_cmsg(
                &mut item.control,
                &mut at,
                libc::IPPROTO_IP,
                libc::IP_TOS,
                ecn,
            );
        }
    } else {
        push_cmsg(
            &mut item.control,
            &mut at,
            libc::IPPROTO_IPV6,
            libc::IPV6_TCLASS,
            ecn,
        );
    }
    match item.src_ip {
        Some(IpAddr::V4(v4)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            push_cmsg(
                &mut item.control,
                &mut at,
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                info,
            );
        }
        Some(IpAddr::V6(v6)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: 0,
            };
            push_cmsg(
                &mut item.control,
                &mut at,
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                info,
            );
        }
        None => {}
    }
    item.control_len = at;
}

/// Appends one control message at byte offset `*at` of `buf` and advances `*at`.
fn push_cmsg<T: Copy>(buf: &mut Control, at: &mut usize, level: i32, kind: i32, value: T) {
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic on the length.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<T>() as u32) as usize,
            libc::CMSG_LEN(mem::size_of::<T>() as u32) as usize,
        )
    };
    // The buffer is sized for the largest combination encode_control makes; a bigger one is a
    // bug here, not bad input.
    assert!(*at + space <= mem::size_of::<Control>(), "control buffer");
    // SAFETY: `*at` is a multiple of CMSG_SPACE's alignment (8 on Linux) and the buffer is
    // u64-aligned, so the header is aligned; header and data lie inside `buf` (checked above);
    // the data is written unaligned-safe.
    unsafe {
        let c = buf
            .as_mut_ptr()
            .cast::<u8>()
            .add(*at)
            .cast::<libc::cmsghdr>();
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
    }
    *at += space;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn one_call_sends_many_datagrams_to_their_own_destinations() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = Batch::default();
        for i in 0..10u8 {
            let to = if i % 2 == 0 { &a } else { &b };
            let src = Some("127.0.0.1".parse().unwrap());
            batch.push(to.local_addr().unwrap(), src, 2, &[i; 40], false);
        }
        assert_eq!(batch.send(tx.as_raw_fd(), 0, 64).unwrap(), 10);
        let mut buf = [0u8; 64];
        for (sock, first) in [(&a, 0u8), (&b, 1u8)] {
            for k in 0..5u8 {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!(n, 40);
                assert_eq!(buf[0], first + 2 * k);
                assert_eq!(from, tx.local_addr().unwrap());
            }
        }
    }

    #[test]
    fn dual_stack_sockets_reach_ipv4_peers() {
        let Ok(tx) = UdpSocket::bind("[::]:0") else {
            return; // no IPv6 on this machine
        };
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = Batch::default();
        let src = Some("127.0.0.1".parse().unwrap());
        batch.push(rx.local_addr().unwrap(), src, 1, b"mapped", true);
        assert_eq!(batch.send(tx.as_raw_fd(), 0, 64).unwrap(), 1);
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"mapped");
    }
}
