//! Batched UDP sends: up to N datagrams queued in buffers the batcher owns and reuses,
//! flushed with one `sendmmsg`. Runs of consecutive datagrams to one destination with the
//! same size (the last may be shorter) go as one UDP GSO message (`UDP_SEGMENT`), so the
//! kernel walks the UDP/IP stack once per run, not once per datagram.
//!
//! With grouping on, a flush first orders the datagrams by destination (each destination's
//! own order kept), so that a subscriber's packets from several fan-outs form runs.
//!
//! GSO support is probed once per process; a kernel or route that refuses a GSO message
//! at send time turns GSO off for that batcher and the rest goes as plain datagrams.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

/// Kernel limits for one GSO message: segments (`UDP_MAX_SEGMENTS` is 64 before Linux 6.9)
/// and the payload of one UDP datagram before segmentation.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;

/// Whether this kernel accepts the `UDP_SEGMENT` socket option (Linux 4.18+).
pub fn gso_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        crate::recv_batch::set_int_option(&sock, libc::SOL_UDP, libc::UDP_SEGMENT, 1200).is_ok()
    })
}

/// What one [`SendBatch::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped: full socket buffer (as the network would drop them), or a
    /// per-destination error such as ICMP port unreachable on a connected socket.
    pub dropped: usize,
    /// `sendmmsg` calls made.
    pub syscalls: usize,
    /// GSO messages among what was sent.
    pub gso_messages: usize,
}

/// Control buffer for one `UDP_SEGMENT` cmsg, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; 32]);

/// A reusable batch of outgoing datagrams.
pub struct SendBatch {
    slot_size: usize,
    capacity: usize,
    data: Box<[u8]>,
    lens: Vec<usize>,
    /// Destination per datagram; `None` on a connected socket.
    dests: Vec<Option<SocketAddr>>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    gso: bool,
    /// Group datagrams by destination at flush.
    group: bool,
    /// Send order: datagram indices, in queue order or grouped by destination.
    order: Vec<u32>,
    // Syscall scaffolding, rebuilt by every flush and only used inside it.
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    /// For each message: first datagram and datagram count.
    spans: Vec<(usize, usize)>,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` point only into this batch's own
// buffers; they are rewritten at the start of every flush and never read outside it.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("queued", &self.lens.len())
            .field("capacity", &self.capacity)
            .field("gso", &self.gso)
            .finish()
    }
}

impl SendBatch {
    /// A batch of up to `capacity` datagrams of at most `max_datagram` bytes each. All
    /// memory is allocated here.
    pub fn new(capacity: usize, max_datagram: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            slot_size: max_datagram,
            capacity,
            data: vec![0u8; capacity * max_datagram].into_boxed_slice(),
            lens: Vec::with_capacity(capacity),
            dests: Vec::with_capacity(capacity),
            addrs: Vec::with_capacity(capacity),
            gso: gso_supported(),
            group: false,
            order: Vec::with_capacity(capacity),
            iovecs: Vec::with_capacity(capacity),
            msgs: Vec::with_capacity(capacity),
            cmsgs: vec![CmsgBuf([0; 32]); capacity],
            spans: Vec::with_capacity(capacity),
        }
    }

    /// Turns GSO off (or back on, if the kernel has it) for this batch.
    pub fn set_gso(&mut self, enabled: bool) {
        self.gso = enabled && gso_supported();
    }

    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Groups datagrams by destination when flushing (off by default). Each destination's
    /// datagrams keep their order; only the interleaving between destinations changes, so
    /// one destination's same-size packets become GSO runs.
    pub fn set_grouping(&mut self, on: bool) {
        self.group = on;
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.lens.len() == self.capacity
    }

    /// The buffer the next datagram is built in (e.g. header, payload, then SRTP in place),
    /// or `None` when the batch is full. Finish it with [`SendBatch::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let at = self.lens.len() * self.slot_size;
        Some(&mut self.data[at..at + self.slot_size])
    }

    /// Queues the first `len` bytes of [`SendBatch::next_buf`] for `dest` (`None` on a
    /// connected socket). Returns false, queuing nothing, if full or `len` is too large.
    pub fn commit(&mut self, len: usize, dest: Option<SocketAddr>) -> bool {
        if self.is_full() || len > self.slot_size {
            return false;
        }
        self.lens.push(len);
        self.dests.push(dest);
        self.addrs.push(dest.map(sockaddr).unwrap_or_else(|| {
            // SAFETY: an all-zero sockaddr_storage is a valid (unused) value.
            (unsafe { mem::zeroed() }, 0)
        }));
        true
    }

    /// Copies `datagram` into the batch. Returns false if it did not fit.
    pub fn push(&mut self, datagram: &[u8], dest: Option<SocketAddr>) -> bool {
        match self.next_buf() {
            Some(buf) if datagram.len() <= buf.len() => {
                buf[..datagram.len()].copy_from_slice(datagram);
                self.commit(datagram.len(), dest)
            }
            _ => false,
        }
    }

    /// Sends everything queued and empties the batch. Errors are per datagram and counted
    /// in [`Flushed::dropped`]; only a bad socket is returned as an error.
    pub fn flush(&mut self, sock: &impl AsRawFd) -> io::Result<Flushed> {
        let mut done = Flushed::default();
        self.arrange();
        // Positions in `order` from here on.
        let mut from = 0;
        while from < self.lens.len() {
            self.build(from);
            let fd = sock.as_raw_fd();
            match send_mmsg(fd, &mut self.msgs) {
                Ok(n) => {
                    done.syscalls += 1;
                    for &(_, count) in &self.spans[..n] {
                        done.sent += count;
                        done.gso_messages += usize::from(count > 1);
                    }
                    from = match self.spans.get(n) {
                        Some(&(first, _)) if n > 0 => first,
                        // The first message failed but sendmmsg reported no error: skip it.
                        Some(&(first, count)) => {
                            done.dropped += count;
                            first + count
                        }
                        None => self.lens.len(),
                    };
                }
                Err(e) => {
                    done.syscalls += 1;
                    let (first, count) = self.spans[0];
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                            // A full socket buffer drops what is left, as the network would.
                            done.dropped += self.lens.len() - first;
                            from = self.lens.len();
                        }
                        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EMSGSIZE)
                            if count > 1 =>
                        {
                            // The route or device refuses GSO: resend the run plainly.
                            self.gso = false;
                        }
                        Some(libc::EBADF) | Some(libc::ENOTSOCK) => {
                            self.clear();
                            return Err(e);
                        }
                        _ => {
                            done.dropped += count;
                            from = first + count;
                        }
                    }
                }
            }
        }
        self.clear();
        Ok(done)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.order.clear();
        self.lens.clear();
        self.dests.clear();
        self.addrs.clear();
    }

    /// Fills `order`: queue order, or grouped by destination. The sort key is a hash of the
    /// destination, then the index, so that each destination keeps its order; two
    /// destinations sharing a hash only interleave (`run_len` compares the addresses).
    fn arrange(&mut self) {
        self.order.clear();
        self.order.extend(0..self.lens.len() as u32);
        if self.group && self.lens.len() > 2 {
            let dests = &self.dests;
            self.order
                .sort_unstable_by_key(|&i| (dest_hash(dests[i as usize]), i));
        }
    }

    /// Lays out the messages for positions `from..` of `order`: one per datagram, or one per
    /// GSO run.
    fn build(&mut self, from: usize) {
        self.iovecs.clear();
        self.msgs.clear();
        self.spans.clear();
        let base = self.data.as_mut_ptr();
        for &i in &self.order[from..] {
            let i = i as usize;
            self.iovecs.push(libc::iovec {
                // SAFETY: slot `i` lies inside `data`.
                iov_base: unsafe { base.add(i * self.slot_size) }.cast(),
                iov_len: self.lens[i],
            });
        }
        let mut i = from;
        while i < self.lens.len() {
            let count = if self.gso { self.run_len(i) } else { 1 };
            self.spans.push((i, count));
            i += count;
        }
        for (m, &(first, count)) in self.spans.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is valid; the fields set below point into this
            // batch's buffers, which outlive the sendmmsg call in `flush`.
            let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            hdr.msg_hdr.msg_iov = self.iovecs[first - from..].as_mut_ptr();
            hdr.msg_hdr.msg_iovlen = count as _;
            let at = self.order[first] as usize;
            let (addr, addr_len) = &mut self.addrs[at];
            if self.dests[at].is_some() {
                hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                hdr.msg_hdr.msg_namelen = *addr_len;
            }
            if count > 1 {
                let cmsg = &mut self.cmsgs[m];
                set_udp_segment(&mut hdr.msg_hdr, cmsg, self.lens[at] as u16);
            }
            self.msgs.push(hdr);
        }
    }

    /// How many datagrams from position `p` of `order` can go as one GSO message: same
    /// destination, same size as the first, except the last of the run, which may be shorter.
    fn run_len(&self, p: usize) -> usize {
        let first = self.order[p] as usize;
        let size = self.lens[first];
        let mut n = 1;
        let mut bytes = size;
        while let Some(&next) = self.order.get(p + n) {
            let (next_len, next_dest) = (self.lens[next as usize], self.dests[next as usize]);
            if n == GSO_MAX_SEGMENTS
                || next_dest != self.dests[first]
                || next_len > size
                || next_len == 0
                || bytes + next_len > GSO_MAX_BYTES
            {
                break;
            }
            bytes += next_len;
            n += 1;
            if next_len < size {
                break; // a shorter one ends the run
            }
        }
        n
    }
}

fn set_udp_segment(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, segment: u16) {
    // SAFETY: `buf` is aligned for cmsghdr and large enough for CMSG_SPACE(2); the libc
    // macros only do arithmetic on the header we point them at.
    unsafe {
        let space = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= buf.0.len());
        hdr.msg_control = buf.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
}

fn send_mmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    loop {
        // SAFETY: `msgs` holds valid headers built by `SendBatch::build`.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as _, 0) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A cheap key that is equal for equal destinations (`None` first).
fn dest_hash(dest: Option<SocketAddr>) -> u64 {
    match dest {
        None => 0,
        Some(SocketAddr::V4(a)) => (u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port())) + 1,
        Some(SocketAddr::V6(a)) => {
            let ip = u128::from(*a.ip());
            let folded = (ip as u64) ^ ((ip >> 64) as u64).rotate_left(17);
            (folded ^ u64::from(a.port())).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
        }
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; we write a sockaddr_in/_in6 into it,
    // which it is large and aligned enough to hold.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: see above.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: see above.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_with(lens: &[(usize, u16)]) -> SendBatch {
        let mut b = SendBatch::new(lens.len(), 1500);
        b.gso = true;
        for &(len, port) in lens {
            let dest = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            assert!(b.push(&vec![1u8; len], dest));
        }
        b.arrange();
        b
    }

    #[test]
    fn grouping_keeps_each_destinations_order() {
        // Ports 1, 2, 1, 3, 2, 1: grouped, each port's datagrams stay in queue order.
        let mut b = batch_with(&[(100, 1), (100, 2), (100, 1), (100, 3), (100, 2), (100, 1)]);
        b.set_grouping(true);
        b.arrange();
        let ports: Vec<u16> = b
            .order
            .iter()
            .map(|&i| b.dests[i as usize].unwrap().port())
            .collect();
        for port in [1, 2, 3] {
            let mine: Vec<u32> = b
                .order
                .iter()
                .copied()
                .filter(|&i| b.dests[i as usize].unwrap().port() == port)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "port {port} in order: {mine:?}"
            );
        }
        // Grouped: each port's datagrams are contiguous.
        let changes = ports.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 2, "three groups: {ports:?}");
        assert_eq!(b.run_len(0), 3, "port 1's three datagrams form one run");
    }

    #[test]
    fn runs_split_on_destination_size_and_short_tail() {
        let b = batch_with(&[
            (1200, 1),
            (1200, 1),
            (900, 1),
            (1200, 1),
            (1200, 2),
            (1300, 2),
        ]);
        // Two full + a shorter tail, then a new run, then a destination change, then a
        // bigger datagram which cannot join a run of smaller segments.
        assert_eq!(b.run_len(0), 3);
        assert_eq!(b.run_len(3), 1);
        assert_eq!(b.run_len(4), 1);
        assert_eq!(b.run_len(5), 1);
    }

    #[test]
    fn runs_respect_kernel_limits() {
        let b = batch_with(&vec![(1200, 1); 80]);
        // 54 × 1200 fits under 65,000 bytes; 55 does not.
        assert_eq!(b.run_len(0), 54);
        let b = batch_with(&vec![(100, 1); 80]);
        assert_eq!(b.run_len(0), GSO_MAX_SEGMENTS);
    }

    #[test]
    fn full_batch_refuses_more() {
        let mut b = SendBatch::new(2, 100);
        assert!(b.push(&[1; 10], None));
        assert!(!b.push(&[1; 101], None));
        assert!(b.push(&[1; 10], None));
        assert!(b.is_full());
        assert!(b.next_buf().is_none());
        assert!(!b.push(&[1; 10], None));
    }
}
