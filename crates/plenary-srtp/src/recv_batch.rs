//! Batched UDP receives: one `recvmmsg` fills up to N buffers the batcher owns and reuses,
//! so a socket's queue is read with one syscall per wake-up instead of one per datagram.
//! The buffers are handed out mutable, so SRTP can be opened in place. With
//! [`enable_timestamps`] on the socket, each datagram also carries the kernel's receive
//! time, so a reader that reads late still knows when each datagram arrived. With
//! [`enable_gro`], one message may hold several datagrams of one size (a sender's UDP GSO
//! run, kept whole by the kernel); [`RecvBatch::segment_size`] says where they split.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `SO_TIMESTAMPNS` (asm-generic/socket.h; the `libc` crate does not export it for every
/// Linux target). `SCM_TIMESTAMPNS` has the same value; the payload is a `timespec`.
#[cfg(not(target_arch = "sparc64"))]
const SO_TIMESTAMPNS: libc::c_int = 35;
#[cfg(target_arch = "sparc64")]
const SO_TIMESTAMPNS: libc::c_int = 0x21;

/// Asks the kernel to stamp each datagram `sock` receives with the time it arrived
/// (`SO_TIMESTAMPNS`, the real-time clock); [`RecvBatch::timestamp`] reads it. The kernel
/// switches stamping on through deferred work the first time a socket asks, so for a few
/// milliseconds after that a datagram may be stamped when it is read instead.
pub fn enable_timestamps(sock: &impl AsRawFd) -> io::Result<()> {
    set_int_option(sock, libc::SOL_SOCKET, SO_TIMESTAMPNS, 1)
}

/// `setsockopt` of a `c_int` option.
pub(crate) fn set_int_option(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket and a c_int option value of the stated length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to hand `sock` a UDP GSO run (or datagrams it coalesced) as one message
/// with its segment size (`UDP_GRO`, Linux 5.0+), instead of one message per datagram:
/// one dequeue, copy and control block for the run. Reads of such a socket need slots of
/// 64 KiB ([`GRO_SLOT`]), or a run is cut and lost.
pub fn enable_gro(sock: &impl AsRawFd) -> io::Result<()> {
    set_int_option(sock, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Slot size that holds any message of a socket with [`enable_gro`]: the largest UDP
/// payload a run can carry.
pub const GRO_SLOT: usize = 65_536;

/// Control buffer for one message: room for a `timespec` and a `UDP_GRO` cmsg, aligned for
/// `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; 64]);

/// A reusable batch of incoming datagrams.
pub struct RecvBatch {
    slot_size: usize,
    data: Box<[u8]>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Per datagram of the last `recv`: length, and whether it was cut to the slot size.
    lens: Vec<(usize, bool)>,
    /// Per message of the last `recv`: the kernel's receive time (since the Unix epoch),
    /// and the segment size of a coalesced run.
    stamps: Vec<(Option<Duration>, Option<usize>)>,
    cmsgs: Vec<CmsgBuf>,
    // Syscall scaffolding, built once: its pointers lead into the heap buffers above, which
    // never move or grow, so they stay valid when the batch itself is moved.
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` point only into this batch's own
// heap buffers, and are only used by `recv`, which takes `&mut self`.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("received", &self.lens.len())
            .field("capacity", &self.addrs.len())
            .finish()
    }
}

impl RecvBatch {
    /// Room for `capacity` datagrams of up to `max_datagram` bytes; a longer one is cut
    /// and reported as truncated. All memory is allocated here.
    pub fn new(capacity: usize, max_datagram: usize) -> Self {
        let capacity = capacity.max(1);
        let mut batch = Self {
            slot_size: max_datagram,
            data: vec![0u8; capacity * max_datagram].into_boxed_slice(),
            // SAFETY: an all-zero sockaddr_storage is a valid (unused) value.
            addrs: vec![unsafe { mem::zeroed() }; capacity],
            lens: Vec::with_capacity(capacity),
            stamps: Vec::with_capacity(capacity),
            cmsgs: vec![CmsgBuf([0; 64]); capacity],
            iovecs: Vec::with_capacity(capacity),
            msgs: Vec::with_capacity(capacity),
        };
        batch.build();
        batch
    }

    pub fn capacity(&self) -> usize {
        self.addrs.len()
    }

    /// Datagrams the last [`RecvBatch::recv`] returned.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Reads what is queued on `sock`, up to the capacity, without blocking. Returns the
    /// count; `WouldBlock` when nothing was queued. The previous batch is gone.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        // The kernel rewrote the address length and flags of the messages it filled.
        for m in &mut self.msgs[..self.lens.len()] {
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            m.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>() as _;
            m.msg_hdr.msg_flags = 0;
        }
        self.lens.clear();
        self.stamps.clear();
        let n = loop {
            // SAFETY: `msgs` holds `capacity` headers whose iovecs and names point into
            // this batch's own buffers, each of the stated length; no timeout pointer.
            let rc = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    self.msgs.len() as _,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for m in &self.msgs[..n] {
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens
                .push(((m.msg_len as usize).min(self.slot_size), truncated));
            self.stamps.push(control(&m.msg_hdr));
        }
        Ok(n)
    }

    /// When datagram `i` of the last recv arrived, by the kernel's real-time clock (since
    /// the Unix epoch); None unless [`enable_timestamps`] was called on the socket.
    pub fn timestamp(&self, i: usize) -> Option<Duration> {
        self.stamps.get(i).and_then(|s| s.0)
    }

    /// Where message `i` of the last recv splits into datagrams: every this many bytes (the
    /// last one may be shorter). None: it is one datagram. Only a socket with
    /// [`enable_gro`] gets runs.
    pub fn segment_size(&self, i: usize) -> Option<usize> {
        self.stamps.get(i).and_then(|s| s.1)
    }

    /// Datagram `i` of the last recv: its bytes (mutable, for in-place decryption), its
    /// source, and whether it was longer than the slot and cut.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], Option<SocketAddr>, bool)> {
        let &(len, truncated) = self.lens.get(i)?;
        let src = socket_addr(&self.addrs[i]);
        let at = i * self.slot_size;
        Some((&mut self.data[at..at + len], src, truncated))
    }

    fn build(&mut self) {
        let base = self.data.as_mut_ptr();
        for i in 0..self.addrs.len() {
            self.iovecs.push(libc::iovec {
                // SAFETY: slot i lies inside `data` (capacity * slot_size bytes).
                iov_base: unsafe { base.add(i * self.slot_size) }.cast(),
                iov_len: self.slot_size,
            });
        }
        for i in 0..self.addrs.len() {
            // SAFETY: an all-zero mmsghdr is a valid value; the fields are set below.
            let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            hdr.msg_hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            hdr.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>() as _;
            self.msgs.push(hdr);
        }
    }
}

/// The `SCM_TIMESTAMPNS` and `UDP_GRO` segment size the kernel put in a received message's
/// control data, if any.
fn control(hdr: &libc::msghdr) -> (Option<Duration>, Option<usize>) {
    let (mut stamp, mut segment) = (None, None);
    // SAFETY: `hdr` is a message the kernel just filled; CMSG_FIRSTHDR/NXTHDR walk only
    // within msg_control[..msg_controllen], and the payloads are read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, SO_TIMESTAMPNS) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    segment = usize::try_from(size).ok().filter(|&s| s > 0);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (stamp, segment)
}

/// The address the kernel wrote into `s` (IPv4 or IPv6).
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET); storage is
            // large enough and suitably aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6 (family AF_INET6).
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}
