//! Batched UDP IO: `recvmmsg` into a set of receive slots, and `sendmmsg` of datagrams
//! bound for many destinations from one socket. One syscall then carries many datagrams,
//! and sends issued back to back wake their receivers once instead of once each.
//!
//! Linux only (the deployment target: SO_REUSEPORT spreading is Linux semantics too).

#[cfg(not(target_os = "linux"))]
compile_error!("plenary-turn's UDP driver uses recvmmsg/sendmmsg and builds on Linux only");

use crate::server::{PEER_HEADROOM, PEER_TAILROOM};
use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Largest UDP payload we accept (the IPv4 maximum is 65507; IPv6 jumbograms are not
/// a TURN thing).
pub(crate) const MAX_UDP_PAYLOAD: usize = 65535;
/// Datagrams taken per `recvmmsg`.
pub(crate) const RECV_SLOTS: usize = 32;
/// One receive slot: room for the core to frame a peer datagram in place. Rounded to a
/// cache line plus one, so the slots' first bytes do not all fall in the same cache sets.
const SLOT_LEN: usize = (PEER_HEADROOM + MAX_UDP_PAYLOAD + PEER_TAILROOM).div_ceil(64) * 64;
/// Datagrams one `sendmmsg` carries at most.
pub(crate) const SEND_SLOTS: usize = 64;
/// Bytes queued for one `sendmmsg` at most; a larger datagram is sent on its own.
const SEND_ARENA: usize = 64 * 1024;

/// Receive slots filled by one `recvmmsg`. The memory is allocated zeroed, so pages are
/// only backed once the kernel writes into them (the first page of each slot, for
/// ordinary media).
pub(crate) struct RecvBatch {
    buf: Box<[u8]>,
    /// Source and length of each datagram of the last [`recv`](Self::recv).
    got: Vec<(Option<SocketAddr>, usize)>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buf: vec![0; RECV_SLOTS * SLOT_LEN].into_boxed_slice(),
            got: Vec::with_capacity(RECV_SLOTS),
            // SAFETY: all-zero is a valid value of these plain C structs.
            names: (0..RECV_SLOTS).map(|_| unsafe { mem::zeroed() }).collect(),
            iovs: (0..RECV_SLOTS).map(|_| unsafe { mem::zeroed() }).collect(),
            hdrs: (0..RECV_SLOTS).map(|_| unsafe { mem::zeroed() }).collect(),
        }
    }
}

impl RecvBatch {
    /// Receives up to `max` (≤ [`RECV_SLOTS`]) datagrams without blocking. `Ok(n)` with
    /// `n < max` means the socket's queue was empty when the kernel looked: the caller
    /// may then clear its readiness without another syscall to see `WouldBlock`.
    pub(crate) fn recv(&mut self, sock: &impl AsRawFd, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, RECV_SLOTS);
        self.got.clear();
        for (i, slot) in self.buf.chunks_exact_mut(SLOT_LEN).take(max).enumerate() {
            let payload = &mut slot[PEER_HEADROOM..PEER_HEADROOM + MAX_UDP_PAYLOAD];
            self.iovs[i] = libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            };
            // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
            let mut h: libc::msghdr = unsafe { mem::zeroed() };
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        let n = recvmmsg(sock.as_raw_fd(), &mut self.hdrs[..max])?;
        for h in &self.hdrs[..n] {
            let from = from_sockaddr(
                h.msg_hdr.msg_name.cast_const().cast(),
                h.msg_hdr.msg_namelen,
            );
            self.got
                .push((from, (h.msg_len as usize).min(MAX_UDP_PAYLOAD)));
        }
        Ok(n)
    }

    /// Datagrams of the last [`recv`](Self::recv).
    pub(crate) fn len(&self) -> usize {
        self.got.len()
    }

    /// Datagram `i`: its source (None if the kernel reported an address family we do not
    /// speak), the whole slot, and where in the slot the payload is. The slot leaves
    /// [`PEER_HEADROOM`] and [`PEER_TAILROOM`] around the payload.
    pub(crate) fn slot(
        &mut self,
        i: usize,
    ) -> (Option<SocketAddr>, &mut [u8], std::ops::Range<usize>) {
        let (from, len) = self.got[i];
        let slot = &mut self.buf[i * SLOT_LEN..(i + 1) * SLOT_LEN];
        (from, slot, PEER_HEADROOM..PEER_HEADROOM + len)
    }
}

fn recvmmsg(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    loop {
        // SAFETY: every header points at live buffers sized as its fields say.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What one [`SendBatch::flush`] did.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    pub sent: u64,
    pub sent_bytes: u64,
    /// Send buffer full: dropped (UDP semantics).
    pub dropped: u64,
    pub errors: u64,
    pub last_error: Option<(SocketAddr, io::Error)>,
}

/// Datagrams waiting to leave one socket for many destinations. Bounded: a full batch is
/// flushed by the caller before more are queued.
pub(crate) struct SendBatch {
    arena: Box<[u8]>,
    used: usize,
    /// Destination and arena range of each queued datagram.
    queued: Vec<(SocketAddr, usize, usize)>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            arena: vec![0; SEND_ARENA].into_boxed_slice(),
            used: 0,
            queued: Vec::with_capacity(SEND_SLOTS),
            // SAFETY: all-zero is a valid value of these plain C structs.
            names: (0..SEND_SLOTS).map(|_| unsafe { mem::zeroed() }).collect(),
            iovs: (0..SEND_SLOTS).map(|_| unsafe { mem::zeroed() }).collect(),
            hdrs: (0..SEND_SLOTS).map(|_| unsafe { mem::zeroed() }).collect(),
        }
    }
}

impl SendBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Whether `len` more bytes can be queued without a flush first. A datagram larger
    /// than the whole arena never fits: send it alone with [`send_one`].
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.queued.len() < SEND_SLOTS && self.used + len <= self.arena.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.queued.len() == SEND_SLOTS
    }

    /// Queues a copy of `data` for `to`. Call only after [`has_room`](Self::has_room).
    pub(crate) fn push(&mut self, data: &[u8], to: SocketAddr) {
        debug_assert!(self.has_room(data.len()));
        let start = self.used;
        let Some(dst) = self.arena.get_mut(start..start + data.len()) else {
            return;
        };
        dst.copy_from_slice(data);
        self.used += data.len();
        self.queued.push((to, start, data.len()));
    }

    /// Sends everything queued, in order. A datagram the kernel refuses is counted and
    /// skipped; the batch is empty afterwards.
    pub(crate) fn flush(&mut self, sock: &impl AsRawFd) -> Flushed {
        let mut out = Flushed::default();
        let n = self.queued.len();
        for (i, &(to, start, len)) in self.queued.iter().enumerate() {
            let namelen = to_sockaddr(to, &mut self.names[i]);
            self.iovs[i] = libc::iovec {
                iov_base: self.arena[start..start + len].as_mut_ptr().cast(),
                iov_len: len,
            };
            // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
            let mut h: libc::msghdr = unsafe { mem::zeroed() };
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        let fd = sock.as_raw_fd();
        let mut i = 0;
        while i < n {
            match sendmmsg(fd, &mut self.hdrs[i..n]) {
                Ok(k) if k > 0 => {
                    for &(_, _, len) in &self.queued[i..i + k] {
                        out.sent += 1;
                        out.sent_bytes += len as u64;
                    }
                    i += k;
                }
                // Nothing sent and no error: not expected; do not spin.
                Ok(_) => {
                    out.errors += (n - i) as u64;
                    break;
                }
                // The kernel stops at the first datagram it refuses and reports the error
                // on the call that starts with it: count that one and go on.
                Err(e) => {
                    match e.kind() {
                        io::ErrorKind::WouldBlock => out.dropped += 1,
                        _ if e.raw_os_error() == Some(libc::ENOBUFS) => out.dropped += 1,
                        _ => {
                            out.errors += 1;
                            out.last_error = Some((self.queued[i].0, e));
                        }
                    }
                    i += 1;
                }
            }
        }
        self.queued.clear();
        self.used = 0;
        out
    }
}

fn sendmmsg(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    loop {
        // SAFETY: every header points at live buffers sized as its fields say.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One datagram now or never: a plain non-blocking `sendto`. Used for relay sockets (one
/// destination each) and for datagrams too large for a [`SendBatch`].
pub(crate) fn send_one(sock: &impl AsRawFd, data: &[u8], to: SocketAddr) -> io::Result<usize> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let namelen = to_sockaddr(to, &mut name);
    loop {
        // SAFETY: `data` and `name` are live for the call and sized as passed.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT,
                (&name as *const libc::sockaddr_storage).cast(),
                namelen,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// [`send_one`], reported as a [`Flushed`] of one datagram.
pub(crate) fn send_alone(sock: &impl AsRawFd, data: &[u8], to: SocketAddr) -> Flushed {
    match send_one(sock, data, to) {
        Ok(_) => Flushed {
            sent: 1,
            sent_bytes: data.len() as u64,
            ..Flushed::default()
        },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Flushed {
            dropped: 1,
            ..Flushed::default()
        },
        Err(e) => Flushed {
            errors: 1,
            last_error: Some((to, e)),
            ..Flushed::default()
        },
    }
}

/// Writes `addr` as a C socket address; returns its length.
fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C socket address the kernel wrote; None for families other than IPv4/IPv6.
fn from_sockaddr(name: *const libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: `name` points at a sockaddr_storage the kernel filled (`len` bytes of it);
    // the family field is read first and each cast matches it.
    unsafe {
        match i32::from((*name).ss_family) {
            libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
                let sin = name.cast::<libc::sockaddr_in>().read();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    u32::from_be(sin.sin_addr.s_addr).into(),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
                let sin6 = name.cast::<libc::sockaddr_in6>().read();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    sin6.sin6_addr.s6_addr.into(),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// None where the host lacks the family (IPv6 in some containers).
    fn pair(ip: &str) -> Option<(UdpSocket, UdpSocket)> {
        let a = UdpSocket::bind((ip, 0)).ok()?;
        let b = UdpSocket::bind((ip, 0)).ok()?;
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        Some((a, b))
    }

    #[test]
    fn sockaddr_round_trip() {
        for s in ["192.0.2.7:3478", "[2001:db8::1]:49152", "[fe80::1%3]:9"] {
            let a: SocketAddr = s.parse().expect("addr");
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
            let len = to_sockaddr(a, &mut st);
            assert_eq!(from_sockaddr(&st, len), Some(a));
        }
    }

    #[test]
    fn send_batch_then_recv_batch_keeps_order_sources_and_lengths() {
        for ip in ["127.0.0.1", "::1"] {
            let Some((tx, rx)) = pair(ip) else {
                continue;
            };
            let dst = rx.local_addr().expect("addr");
            let mut out = SendBatch::default();
            for i in 0..40u8 {
                let data = vec![i; usize::from(i) + 1];
                assert!(out.has_room(data.len()));
                out.push(&data, dst);
            }
            let f = out.flush(&tx);
            assert_eq!((f.sent, f.dropped, f.errors), (40, 0, 0));
            assert_eq!(f.sent_bytes, (1..=40).sum::<u64>());
            assert!(out.is_empty());

            let mut inb = RecvBatch::default();
            let mut seen = 0u8;
            while seen < 40 {
                let n = inb.recv(&rx, RECV_SLOTS).expect("recv");
                assert!(n > 0);
                for i in 0..inb.len() {
                    let (from, slot, range) = inb.slot(i);
                    assert_eq!(from, Some(tx.local_addr().expect("addr")));
                    assert_eq!(range.start, PEER_HEADROOM);
                    assert_eq!(&slot[range], &vec![seen; usize::from(seen) + 1][..]);
                    seen += 1;
                }
            }
            // Drained: a short read, then WouldBlock.
            let e = inb.recv(&rx, RECV_SLOTS).expect_err("empty");
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn short_read_reports_fewer_than_asked() {
        let (tx, rx) = pair("127.0.0.1").expect("IPv4 loopback");
        let dst = rx.local_addr().expect("addr");
        send_one(&tx, b"one", dst).expect("send");
        send_one(&tx, b"two", dst).expect("send");
        let mut inb = RecvBatch::default();
        assert_eq!(inb.recv(&rx, 8).expect("recv"), 2);
        assert_eq!(inb.len(), 2);
    }

    #[test]
    fn batch_bounds_by_count_and_bytes() {
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut out = SendBatch::default();
        for _ in 0..SEND_SLOTS {
            assert!(out.has_room(10));
            out.push(&[0; 10], to);
        }
        assert!(out.is_full() && !out.has_room(0));
        let mut out = SendBatch::default();
        out.push(&[0; SEND_ARENA - 5], to);
        assert!(out.has_room(5) && !out.has_room(6));
        // Larger than a whole batch: never fits, goes through send_alone.
        assert!(!SendBatch::default().has_room(SEND_ARENA + 1));
    }

    #[test]
    fn refused_datagrams_are_counted_and_the_rest_still_go() {
        let (tx, rx) = pair("127.0.0.1").expect("IPv4 loopback");
        let dst = rx.local_addr().expect("addr");
        let mut out = SendBatch::default();
        out.push(b"a", dst);
        // An IPv6 destination on an IPv4 socket: refused by the kernel.
        out.push(b"b", "[2001:db8::1]:9".parse().expect("addr"));
        out.push(b"c", dst);
        let f = out.flush(&tx);
        assert_eq!((f.sent, f.errors), (2, 1));
        let mut inb = RecvBatch::default();
        assert_eq!(inb.recv(&rx, 8).expect("recv"), 2);
    }
}
