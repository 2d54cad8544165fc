//! One worker thread: a current-thread runtime owning one [`Server`] core and every socket
//! whose traffic that core handles.

use super::metrics_export::StatsExporter;
use super::ports::RelayAllocator;
use super::relay::RelayTable;
use super::service::Phase;
use super::sockets::send_now;
use super::stream::{self, ConnOut, Incoming, StreamSettings};
use super::task::Supervisor;
use super::{udp, LogKind, NET_LOG};
use crate::server::{
    ClientAction, FiveTuple, PeerAction, RelayHandle, Server, Shared, Transport, PEER_HEADROOM,
    PEER_TAILROOM, SCRATCH_LEN,
};
use plenary_ops::limited_debug;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Largest UDP payload we accept (the IPv4 maximum is 65507; IPv6 jumbograms are not
/// a TURN thing).
pub(crate) const MAX_UDP_PAYLOAD: usize = 65535;
/// The worker's receive buffer: room for the core to frame a peer datagram in place.
const RX_BUF_LEN: usize = PEER_HEADROOM + MAX_UDP_PAYLOAD + PEER_TAILROOM;
/// Datagrams handled per readiness event before yielding, so one busy socket cannot
/// starve the others on this worker.
pub(crate) const BATCH: usize = 64;
/// `handle_timeout` runs at least this often, and stats are flushed at this period.
const TICK: Duration = Duration::from_secs(1);

/// Counters the driver keeps itself (the core's are in [`crate::server::Stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IoStats {
    pub client_rx_packets: u64,
    pub client_rx_bytes: u64,
    pub client_tx_packets: u64,
    pub client_tx_bytes: u64,
    /// UDP send buffer full: dropped.
    pub udp_send_dropped: u64,
    /// A TCP/TLS connection's outgoing queue full (or connection gone): dropped.
    pub stream_send_dropped: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    pub conns_opened: u64,
    pub conns_closed: u64,
    pub conns_idle_closed: u64,
    pub stream_framing_errors: u64,
    pub tls_handshake_failed: u64,
}

pub(crate) struct UdpListener {
    pub local: SocketAddr,
    pub sock: Rc<UdpSocket>,
}

/// Everything one worker owns. Borrowed (mutably) only between two `.await`s.
pub(crate) struct Worker {
    pub core: Server,
    pub relays: RelayTable,
    pub udp: Vec<UdpListener>,
    /// Open TCP/TLS connections by 5-tuple, for peer data going to them.
    pub conns: HashMap<FiveTuple, Rc<ConnOut>>,
    /// Receive buffer shared by all of this worker's UDP sockets (never held across
    /// an await, so one is enough).
    pub buf: Box<[u8]>,
    pub scratch: Box<[u8]>,
    pub io: IoStats,
}

pub(crate) type WorkerRef = Rc<RefCell<Worker>>;

impl Worker {
    /// The part of [`buf`](Self::buf) a relay socket receives into.
    pub(crate) fn peer_rx_buf(&mut self) -> &mut [u8] {
        &mut self.buf[PEER_HEADROOM..PEER_HEADROOM + MAX_UDP_PAYLOAD]
    }

    /// A datagram from a client arrived on listening socket `idx`, in `buf[..len]`.
    pub(crate) fn on_udp_datagram(
        &mut self,
        now: Instant,
        idx: usize,
        from: SocketAddr,
        len: usize,
    ) {
        let Worker {
            core,
            relays,
            udp,
            buf,
            scratch,
            io,
            ..
        } = self;
        let (Some(l), Some(data)) = (udp.get(idx), buf.get(..len)) else {
            return;
        };
        io.client_rx_packets += 1;
        io.client_rx_bytes += len as u64;
        let five = FiveTuple {
            transport: Transport::Udp,
            client: from,
            server: l.local,
        };
        match core.handle_client(now, five, data, scratch, relays) {
            ClientAction::None => {}
            ClientAction::Reply(reply) => send_udp(&l.sock, reply, from, io),
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
                ..
            } => relays.send(relay, peer, payload),
        }
    }

    /// A whole STUN/ChannelData frame from a TCP/TLS client.
    pub(crate) fn on_stream_frame(
        &mut self,
        now: Instant,
        five: FiveTuple,
        frame: &[u8],
        out: &ConnOut,
    ) {
        let Worker {
            core,
            relays,
            scratch,
            io,
            ..
        } = self;
        io.client_rx_packets += 1;
        io.client_rx_bytes += frame.len() as u64;
        match core.handle_client(now, five, frame, scratch, relays) {
            ClientAction::None => {}
            ClientAction::Reply(reply) => {
                if is_authenticated_success(reply) {
                    out.mark_authenticated();
                }
                queue_stream(out, reply, io);
            }
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
                ..
            } => {
                out.mark_authenticated();
                relays.send(relay, peer, payload);
            }
        }
    }

    /// Relay socket `relay` received `len` bytes from `peer` into
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`.
    pub(crate) fn on_peer_datagram(
        &mut self,
        now: Instant,
        relay: RelayHandle,
        peer: SocketAddr,
        len: usize,
    ) {
        let Worker {
            core,
            udp,
            conns,
            buf,
            io,
            ..
        } = self;
        let payload = PEER_HEADROOM..PEER_HEADROOM + len.min(MAX_UDP_PAYLOAD);
        match core.handle_peer(now, relay, peer, buf, payload) {
            PeerAction::None => {}
            PeerAction::ToClient { to, data } => match to.transport {
                Transport::Udp => match udp.iter().find(|l| l.local == to.server) {
                    Some(l) => send_udp(&l.sock, data, to.client, io),
                    None => io.send_errors += 1,
                },
                Transport::Tcp | Transport::Tls => match conns.get(&to) {
                    Some(out) => queue_stream(out, data, io),
                    None => io.stream_send_dropped += 1,
                },
            },
        }
    }
}

/// A success response to anything but Binding means the client authenticated (Allocate,
/// Refresh, CreatePermission and ChannelBind all require it).
fn is_authenticated_success(msg: &[u8]) -> bool {
    let Some(t) = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return false;
    };
    // Class bits C1 (0x0100) and C0 (0x0010): success is C1=1, C0=0.
    let success = t & 0x0110 == 0x0100;
    let method = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
    msg[0] & 0xc0 == 0 && success && method != crate::stun::method::BINDING
}

pub(crate) fn send_udp(sock: &UdpSocket, data: &[u8], to: SocketAddr, io: &mut IoStats) {
    match send_now(sock, data, to) {
        Ok(_) => {
            io.client_tx_packets += 1;
            io.client_tx_bytes += data.len() as u64;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.udp_send_dropped += 1,
        Err(e) => {
            io.send_errors += 1;
            limited_debug!(NET_LOG, LogKind::UdpSend, %to, error = %e, "send to client failed");
        }
    }
}

fn queue_stream(out: &ConnOut, data: &[u8], io: &mut IoStats) {
    if out.push(data) {
        io.client_tx_packets += 1;
        io.client_tx_bytes += data.len() as u64;
    } else {
        io.stream_send_dropped += 1;
    }
}

/// What a worker thread is started with.
pub(crate) struct WorkerSeed {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub start: Instant,
    pub start_unix: u64,
    pub udp: Vec<std::net::UdpSocket>,
    pub incoming: mpsc::Receiver<Incoming>,
    pub relays: Arc<RelayAllocator>,
    pub streams: Arc<StreamSettings>,
    pub phase: watch::Receiver<Phase>,
    pub realm: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error("worker runtime: {0}")]
    Io(#[from] io::Error),
    #[error("a worker task panicked")]
    Panicked,
}

/// Runs a worker until the service reaches [`Phase::Stopping`].
pub(crate) fn run(seed: WorkerSeed) -> Result<(), WorkerError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, worker_main(seed))
}

async fn worker_main(seed: WorkerSeed) -> Result<(), WorkerError> {
    let sup = Rc::new(Supervisor::default());
    let mut listeners = Vec::with_capacity(seed.udp.len());
    for s in seed.udp {
        let local = s.local_addr()?;
        listeners.push(UdpListener {
            local,
            sock: Rc::new(UdpSocket::from_std(s)?),
        });
    }
    let socks: Vec<Rc<UdpSocket>> = listeners.iter().map(|l| l.sock.clone()).collect();
    let worker: WorkerRef = Rc::new_cyclic(|weak| {
        RefCell::new(Worker {
            core: Server::new(seed.shared, seed.start, seed.start_unix),
            relays: RelayTable::new(seed.relays, weak.clone(), sup.clone()),
            udp: listeners,
            conns: HashMap::new(),
            buf: vec![0; RX_BUF_LEN].into_boxed_slice(),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            io: IoStats::default(),
        })
    });
    for (idx, sock) in socks.into_iter().enumerate() {
        sup.spawn(udp::listen_loop(worker.clone(), idx, sock));
    }
    sup.spawn(stream::take_incoming(
        worker.clone(),
        seed.incoming,
        seed.streams,
        sup.clone(),
    ));
    tracing::debug!(worker = seed.id, "worker started");

    let mut exporter = StatsExporter::new(&seed.realm);
    let mut phase = seed.phase;
    let mut next_flush = Instant::now() + TICK;
    loop {
        let now = Instant::now();
        let due = worker.borrow().core.poll_timeout();
        let deadline = due
            .map_or(now + TICK, |d| d.min(now + TICK))
            .min(next_flush);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = phase.wait_for(|p| *p == Phase::Stopping) => break,
            _ = sup.crashed() => break,
        }
        let now = Instant::now();
        let mut guard = worker.borrow_mut();
        let w = &mut *guard;
        w.core.handle_timeout(now, &mut w.relays);
        if now >= next_flush {
            exporter.flush(w.core.stats(), &w.io, w.relays.stats());
            next_flush = now + TICK;
        }
    }
    if sup.has_crashed() {
        return Err(WorkerError::Panicked);
    }
    if let Ok(w) = worker.try_borrow() {
        exporter.flush(w.core.stats(), &w.io, w.relays.stats());
    }
    tracing::debug!(worker = seed.id, "worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_success_detection() {
        assert!(is_authenticated_success(&[0x01, 0x03, 0, 0])); // Allocate success
        assert!(is_authenticated_success(&[0x01, 0x04, 0, 0])); // Refresh success
        assert!(is_authenticated_success(&[0x01, 0x08, 0, 0])); // CreatePermission success
        assert!(is_authenticated_success(&[0x01, 0x09, 0, 0])); // ChannelBind success
        assert!(!is_authenticated_success(&[0x01, 0x01, 0, 0])); // Binding success
        assert!(!is_authenticated_success(&[0x01, 0x13, 0, 0])); // Allocate error
        assert!(!is_authenticated_success(&[0x00, 0x03, 0, 0])); // Allocate request
        assert!(!is_authenticated_success(&[0x40, 0x00, 0, 4])); // ChannelData
        assert!(!is_authenticated_success(&[0x01]));
    }
}
