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
        s.bind(&self.local.into())?;
        s.connect(&remote.into())?;
        let sock: UdpSocket = s.into();
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
            match sock.recv(buf) {
                Ok(n) => f(Some(peer), remote, &buf[..n]),
                Err(_) => return,
            }
        }
        self.backlog.push(token);
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
