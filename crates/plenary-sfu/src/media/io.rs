//! The worker's sockets: its SO_REUSEPORT share of the media port, and one connected socket
//! per peer address once ICE has seen it. The kernel delivers a connected socket's traffic to
//! it alone, so after the first STUN check a peer's packets reach the worker that owns it
//! without a hop between threads. Readiness comes from one epoll (mio) per worker.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashMap;

/// Token of the shared (unconnected) socket.
pub(crate) const SHARED: Token = Token(0);
/// Token of the waker other threads use to get the worker out of epoll.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Datagrams read from one socket before looking at the others again.
const READ_BUDGET: usize = 128;
/// Kernel buffers asked for on every media socket, shared or connected (the kernel caps
/// them at `net.core.rmem_max` / `wmem_max`): bursts of fan-out and of many publishers
/// arrive faster than one loop pass, and after ICE a publisher's media comes in on its
/// connected socket.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

pub(crate) struct Io {
    pub sock: UdpSocket,
    /// The media socket's bound address (connected sockets bind to it too).
    pub local: SocketAddr,
    poll: Poll,
    events: Events,
    /// Connected socket token → (peer, socket, its remote).
    conns: FxHashMap<Token, (u64, Rc<UdpSocket>, SocketAddr)>,
    next_token: usize,
    /// Sockets whose reads stopped at the budget: edge-triggered, so read them again.
    backlog: Vec<Token>,
    ready: Vec<Token>,
    strays: u64,
}

/// A peer's connected socket, held by the peer for sending.
pub(crate) struct Conn {
    pub remote: SocketAddr,
    pub sock: Rc<UdpSocket>,
    pub token: Token,
}

impl Io {
    /// The waker for this worker's epoll, handed to the router.
    pub(crate) fn waker(&self) -> std::io::Result<mio::Waker> {
        mio::Waker::new(self.poll.registry(), WAKER)
    }

    pub(crate) fn new(sock: UdpSocket, local: SocketAddr) -> std::io::Result<Self> {
        sock.set_nonblocking(true)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&sock.as_raw_fd()), SHARED, Interest::READABLE)?;
        Ok(Self {
            sock,
            local,
            poll,
            events: Events::with_capacity(256),
            conns: FxHashMap::default(),
            next_token: 1,
            backlog: Vec::new(),
            ready: Vec::with_capacity(256),
            strays: 0,
        })
    }

    /// A socket bound to the media port and connected to `remote`, registered for reading.
    pub(crate) fn connect(&mut self, peer: u64, remote: SocketAddr) -> std::io::Result<Conn> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(
            Domain::for_address(remote),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        // Without it a connected socket keeps the default (208 KiB on Debian), and a
        // publisher's socket overflowed while the worker was busy for a moment.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.bind(&self.local.into())?;
        s.connect(&remote.into())?;
        self.register_connected(peer, s.into(), remote)
    }

    /// Registers a socket already connected to `remote` for reading.
    fn register_connected(
        &mut self,
        peer: u64,
        sock: UdpSocket,
        remote: SocketAddr,
    ) -> std::io::Result<Conn> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll.registry().register(
            &mut SourceFd(&sock.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        let sock = Rc::new(sock);
        self.conns.insert(token, (peer, sock.clone(), remote));
        Ok(Conn {
            remote,
            sock,
            token,
        })
    }

    pub(crate) fn disconnect(&mut self, token: Token) {
        if let Some((_, s, _)) = self.conns.remove(&token) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&s.as_raw_fd()));
        }
    }

    /// Waits up to `wait` (not at all with a backlog) and lists the sockets to read.
    pub(crate) fn wait(&mut self, wait: std::time::Duration) -> Vec<Token> {
        let wait = if self.backlog.is_empty() {
            Some(wait)
        } else {
            Some(std::time::Duration::ZERO)
        };
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.append(&mut self.backlog);
        if self.poll.poll(&mut self.events, wait).is_ok() {
            for e in self.events.iter() {
                if !ready.contains(&e.token()) {
                    ready.push(e.token());
                }
            }
        }
        ready
    }

    pub(crate) fn give_back(&mut self, ready: Vec<Token>) {
        self.ready = ready;
    }

    /// Reads up to the budget from one ready socket, calling `f(peer hint, src, bytes)`.
    /// Returns true when the budget ran out (the socket goes on the backlog).
    pub(crate) fn read(
        &mut self,
        token: Token,
        buf: &mut [u8],
        mut f: impl FnMut(Option<u64>, SocketAddr, &[u8]),
    ) {
        if token == SHARED {
            for _ in 0..READ_BUDGET {
                match self.sock.recv_from(buf) {
                    Ok((n, src)) => f(None, src, &buf[..n]),
                    Err(_) => return,
                }
            }
            self.backlog.push(token);
            return;
        }
        let Some((peer, sock, remote)) =
            self.conns.get(&token).map(|(p, s, r)| (*p, s.clone(), *r))
        else {
            return;
        };
        for _ in 0..READ_BUDGET {
            // The real source, not `remote`: between its bind and its connect the socket was
            // an unconnected member of the port's SO_REUSEPORT group, and the kernel may have
            // queued another client's datagram on it. Fed to this peer, a stray DTLS record
            // can wedge its handshake; the caller routes it by its source instead.
            match sock.recv_from(buf) {
                Ok((n, src)) if src == remote => f(Some(peer), remote, &buf[..n]),
                Ok((n, src)) => {
                    self.strays += 1;
                    f(None, src, &buf[..n])
                }
                Err(_) => return,
            }
        }
        self.backlog.push(token);
    }

    /// Datagrams from other sources read on a connected socket (see `read`) since the last
    /// call.
    pub(crate) fn take_strays(&mut self) -> u64 {
        std::mem::take(&mut self.strays)
    }
}

/// The worker a STUN check is for, from the ufrag in its USERNAME (`ours:theirs`).
pub(crate) fn stun_owner(data: &[u8]) -> Option<usize> {
    let m = plenary_turn::stun::Message::parse(data).ok()?;
    let user = m
        .get_text(plenary_turn::stun::attr::USERNAME)
        .ok()
        .flatten()?;
    let ours = user.split(':').next()?;
    crate::workers::worker_of_ufrag(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram from another source queued before the connect is reported with its own
    /// source and no peer hint; the peer's own datagrams keep the hint.
    #[test]
    fn a_stray_on_a_connected_socket_keeps_its_source() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let shared = UdpSocket::bind(any).unwrap();
        let local = shared.local_addr().unwrap();
        let mut io = Io::new(shared, local).unwrap();
        let conn_sock = UdpSocket::bind(any).unwrap();
        let conn_addr = conn_sock.local_addr().unwrap();
        let (peer_sock, stranger) = (UdpSocket::bind(any).unwrap(), UdpSocket::bind(any).unwrap());
        // Queued while the socket is still unconnected: the kernel keeps it across connect.
        stranger.send_to(b"stray", conn_addr).unwrap();
        conn_sock.connect(peer_sock.local_addr().unwrap()).unwrap();
        peer_sock.send_to(b"mine", conn_addr).unwrap();
        conn_sock.set_nonblocking(true).unwrap();
        let remote = peer_sock.local_addr().unwrap();
        let conn = io.register_connected(7, conn_sock, remote).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        io.read(conn.token, &mut buf, |hint, src, data| {
            seen.push((hint, src, data.to_vec()))
        });
        assert_eq!(
            seen,
            vec![
                (None, stranger.local_addr().unwrap(), b"stray".to_vec()),
                (Some(7), remote, b"mine".to_vec()),
            ]
        );
        assert_eq!(io.take_strays(), 1);
        assert_eq!(io.take_strays(), 0);
    }

    /// A connected socket gets the receive buffer the shared socket asked for, not the
    /// kernel's default. (Where `rmem_max` is no larger than the default, both are equal
    /// either way.)
    #[test]
    fn connected_sockets_get_the_media_buffer() {
        use socket2::{Domain, Protocol, SockRef, Socket, Type};
        let shared = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        shared.set_reuse_port(true).unwrap();
        shared.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        shared
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let shared: UdpSocket = shared.into();
        let local = shared.local_addr().unwrap();
        let asked = SockRef::from(&shared).recv_buffer_size().unwrap();
        let mut io = Io::new(shared, local).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let conn = io.connect(1, peer.local_addr().unwrap()).unwrap();
        let got = SockRef::from(&*conn.sock).recv_buffer_size().unwrap();
        assert_eq!(got, asked);
    }
}
