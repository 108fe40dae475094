//! Datagrams queued for one UDP socket and sent either one system call each (`sendto`) or many
//! per call (`sendmmsg`), counting the calls. Shared by the raw-UDP and the quinn-proto servers,
//! so that "batched or not" is the only difference between their two variants.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use roomcast_net::mmsg::Batch;
use socket2::SockAddr;

use super::control::Shared;

/// Datagrams per `sendmmsg` call, and the bound of the queue: a full queue is sent before
/// anything more is queued. (Linux caps one call at UIO_MAXIOV = 1024.)
pub const MMSG_BATCH: usize = 64;

/// How queued datagrams leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// One `sendto` per datagram: what a design without batching pays.
    OneByOne,
    /// Up to [`MMSG_BATCH`] datagrams per `sendmmsg`.
    Mmsg,
}

/// At most [`MMSG_BATCH`] datagrams waiting for one socket.
pub struct Outbox {
    fd: RawFd,
    mode: SendMode,
    /// The queued datagrams, in the form the edge's batching socket sends them
    /// (`roomcast_net::mmsg`, the one `sendmmsg` call of the project).
    queued: Batch,
    /// Datagrams the kernel refused (e.g. a pending ICMP error); not retried.
    pub failed: u64,
}

impl Outbox {
    /// An outbox for the (non-blocking) UDP socket `fd`, which must outlive it.
    pub fn new(fd: RawFd, mode: SendMode) -> Outbox {
        Outbox {
            fd,
            mode,
            queued: Batch::with_capacity(MMSG_BATCH),
            failed: 0,
        }
    }

    /// Queues one datagram; sends the queue first when it is full.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8], shared: &Shared) -> io::Result<()> {
        self.push_addr(SockAddr::from(to), datagram, shared)
    }

    /// [`Outbox::push`] with the address already converted (the raw-UDP server keeps its
    /// peers' addresses in this form).
    pub fn push_addr(&mut self, to: SockAddr, datagram: &[u8], shared: &Shared) -> io::Result<()> {
        if self.queued.len() >= MMSG_BATCH {
            self.flush(shared)?;
        }
        self.queued.push_addr(to, datagram);
        Ok(())
    }

    /// Sends everything queued. Waits (poll) while the socket's send buffer is full; errors
    /// other than that fail the datagram concerned, not the server.
    pub fn flush(&mut self, shared: &Shared) -> io::Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let (calls, datagrams) = match self.mode {
            SendMode::OneByOne => self.send_one_by_one()?,
            SendMode::Mmsg => self.send_mmsg()?,
        };
        Shared::add(&shared.send_calls, calls);
        Shared::add(&shared.datagrams, datagrams);
        self.queued.clear();
        Ok(())
    }

    fn send_one_by_one(&mut self) -> io::Result<(u64, u64)> {
        let (mut calls, mut sent) = (0u64, 0u64);
        let mut i = 0;
        while let Some((to, datagram)) = self.queued.get(i) {
            calls += 1;
            // SAFETY: the buffer and address live in `self.queued` for the duration of the
            // call and the lengths passed are theirs.
            let r = unsafe {
                libc::sendto(
                    self.fd,
                    datagram.as_ptr().cast(),
                    datagram.len(),
                    0,
                    to.as_ptr().cast(),
                    to.len(),
                )
            };
            if r >= 0 {
                sent += 1;
                i += 1;
            } else if !self.retry(io::Error::last_os_error())? {
                self.failed += 1;
                i += 1;
            }
        }
        Ok((calls, sent))
    }

    fn send_mmsg(&mut self) -> io::Result<(u64, u64)> {
        let (mut calls, mut sent, mut done) = (0u64, 0u64, 0usize);
        while done < self.queued.len() {
            calls += 1;
            match self.queued.send(self.fd, done, MMSG_BATCH) {
                Ok(n) if n > 0 => {
                    sent += n as u64;
                    done += n;
                }
                Ok(_) => {
                    self.failed += 1;
                    done += 1;
                }
                Err(e) => {
                    if !self.retry(e)? {
                        // The error belongs to the first datagram left: drop it, send the rest.
                        self.failed += 1;
                        done += 1;
                    }
                }
            }
        }
        Ok((calls, sent))
    }

    /// After a failed send: `Ok(true)` to try the same datagram again (interrupted, or the
    /// send buffer was full and has room now), `Ok(false)` to give it up.
    fn retry(&self, e: io::Error) -> io::Result<bool> {
        match e.kind() {
            io::ErrorKind::Interrupted => Ok(true),
            io::ErrorKind::WouldBlock => {
                wait_fd(
                    self.fd,
                    libc::POLLOUT,
                    Some(std::time::Duration::from_millis(100)),
                )?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes (`None`: no wait at all).
/// Nanosecond timeout (`ppoll`), so paced sends are not rounded to milliseconds.
pub fn wait_fd(
    fd: RawFd,
    events: libc::c_short,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let t = timeout.unwrap_or_default();
    let ts = libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and a valid timespec, both on the stack for the call.
    let r = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}
