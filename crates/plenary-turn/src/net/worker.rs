//! One worker thread: a current-thread runtime owning one [`Server`] core and every socket
//! whose traffic that core handles.

use super::batch::{send_alone, Flushed, RecvBatch, SendBatch};
use super::flush::{flush_loop, FlushSignal};
use super::metrics_export::StatsExporter;
use super::ports::RelayAllocator;
use super::relay::RelayTable;
use super::service::Phase;
use super::stream::{self, ConnOut, Incoming, StreamSettings};
use super::task::Supervisor;
use super::{udp, LogKind, NET_LOG};
use crate::server::{
    ClientAction, FiveTuple, PeerAction, RelayHandle, Server, Shared, Transport, SCRATCH_LEN,
};
use plenary_ops::limited_debug;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

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
    /// Of `tls_handshake_failed`: the client went silent mid-handshake.
    pub tls_handshake_timeouts: u64,
}

pub(crate) struct UdpListener {
    pub local: SocketAddr,
    pub sock: Rc<AsyncFd<std::net::UdpSocket>>,
    /// Client-bound datagrams waiting for the next flush.
    pub out: SendBatch,
}

/// Everything one worker owns. Borrowed (mutably) only between two `.await`s.
pub(crate) struct Worker {
    pub core: Server,
    pub relays: RelayTable,
    pub udp: Vec<UdpListener>,
    /// Open TCP/TLS connections by 5-tuple, for peer data going to them.
    pub conns: HashMap<FiveTuple, Rc<ConnOut>>,
    /// Receive slots shared by all of this worker's UDP sockets (never held across an
    /// await, so one set is enough).
    pub rx: RecvBatch,
    pub scratch: Box<[u8]>,
    pub io: IoStats,
    /// Wakes the task that flushes the listeners' `out` batches.
    pub flush: Rc<FlushSignal>,
}

pub(crate) type WorkerRef = Rc<RefCell<Worker>>;

impl Worker {
    /// Datagrams from clients, received on listening socket `idx` into [`rx`](Self::rx).
    pub(crate) fn on_udp_batch(&mut self, now: Instant, idx: usize) {
        let Worker {
            core,
            relays,
            udp,
            rx,
            scratch,
            io,
            flush,
            ..
        } = self;
        let Some(l) = udp.get_mut(idx) else {
            return;
        };
        for i in 0..rx.len() {
            let (from, slot, range) = rx.slot(i);
            let Some(from) = from else {
                io.recv_errors += 1;
                continue;
            };
            let data = &slot[range];
            io.client_rx_packets += 1;
            io.client_rx_bytes += data.len() as u64;
            let five = FiveTuple {
                transport: Transport::Udp,
                client: from,
                server: l.local,
            };
            match core.handle_client(now, five, data, scratch, relays) {
                ClientAction::None => {}
                ClientAction::Reply(reply) => queue_udp(l, reply, from, io, flush),
                ClientAction::ToPeer {
                    relay,
                    peer,
                    payload,
                    ..
                } => relays.send(relay, peer, payload),
            }
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

    /// Datagrams from peers, received on relay socket `relay` into [`rx`](Self::rx).
    /// Client-bound UDP output joins the listeners' batches.
    pub(crate) fn on_peer_batch(&mut self, now: Instant, relay: RelayHandle) {
        let Worker {
            core,
            udp,
            conns,
            rx,
            io,
            flush,
            ..
        } = self;
        for i in 0..rx.len() {
            let (peer, slot, range) = rx.slot(i);
            let Some(peer) = peer else {
                io.recv_errors += 1;
                continue;
            };
            match core.handle_peer(now, relay, peer, slot, range) {
                PeerAction::None => {}
                PeerAction::ToClient { to, data } => match to.transport {
                    Transport::Udp => match udp.iter_mut().find(|l| l.local == to.server) {
                        Some(l) => queue_udp(l, data, to.client, io, flush),
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

    /// Sends every listener's queued client-bound datagrams.
    pub(crate) fn flush_udp(&mut self) {
        for l in &mut self.udp {
            if !l.out.is_empty() {
                flush_listener(l, &mut self.io);
            }
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

/// Queues a client-bound datagram on listener `l`'s batch, flushing first if it has no
/// room and right after if that filled it.
fn queue_udp(
    l: &mut UdpListener,
    data: &[u8],
    to: SocketAddr,
    io: &mut IoStats,
    flush: &FlushSignal,
) {
    if !l.out.has_room(data.len()) {
        flush_listener(l, io);
        if !l.out.has_room(data.len()) {
            // Larger than a whole batch: alone.
            let f = send_alone(l.sock.get_ref(), data, to);
            count_flushed(f, io);
            return;
        }
    }
    if l.out.is_empty() {
        flush.raise();
    }
    l.out.push(data, to);
    if l.out.is_full() {
        flush_listener(l, io);
    }
}

fn flush_listener(l: &mut UdpListener, io: &mut IoStats) {
    let f = l.out.flush(l.sock.get_ref());
    count_flushed(f, io);
}

fn count_flushed(f: Flushed, io: &mut IoStats) {
    io.client_tx_packets += f.sent;
    io.client_tx_bytes += f.sent_bytes;
    io.udp_send_dropped += f.dropped;
    io.send_errors += f.errors;
    if let Some((to, e)) = f.last_error {
        limited_debug!(NET_LOG, LogKind::UdpSend, %to, error = %e, "send to client failed");
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
            sock: Rc::new(udp::register(s)?),
            out: SendBatch::default(),
        });
    }
    let flush = Rc::new(FlushSignal::default());
    let socks: Vec<Rc<AsyncFd<std::net::UdpSocket>>> =
        listeners.iter().map(|l| l.sock.clone()).collect();
    let worker: WorkerRef = Rc::new_cyclic(|weak| {
        RefCell::new(Worker {
            core: Server::new(seed.shared, seed.start, seed.start_unix),
            relays: RelayTable::new(seed.relays, weak.clone(), sup.clone()),
            udp: listeners,
            conns: HashMap::new(),
            rx: RecvBatch::default(),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            io: IoStats::default(),
            flush: flush.clone(),
        })
    });
    sup.spawn(flush_loop(worker.clone(), flush));
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
