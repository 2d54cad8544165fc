//! Relay sockets of one worker: the [`RelayPorts`] the core opens and closes, the send path
//! to peers, and one reader task per socket feeding peer datagrams to the core.

use super::batch::send_one;
use super::ports::{PortLease, RelayAllocator};
use super::task::Supervisor;
use super::udp::{self, Drained};
use super::worker::Worker;
use super::{limited_warn, out_of_fds, LogKind, WarnKind, NET_LOG};
use crate::server::{Family, OpenError, OpenedRelay, PortChoice, RelayHandle, RelayPorts};
use plenary_ops::limited_debug;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::task::AbortHandle;

/// Handles are `generation << 24 | slot`: a handle the core kept past `close` (a bug)
/// then names nothing instead of someone else's socket.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// A relay socket and its port reservation: the port returns to the pool when the last
/// reference (table slot or reader task) goes.
pub(crate) struct RelaySocket {
    sock: AsyncFd<std::net::UdpSocket>,
    _lease: PortLease,
}

struct Open {
    sock: Rc<RelaySocket>,
    reader: AbortHandle,
}

#[derive(Default)]
struct Slot {
    generation: u8,
    open: Option<Open>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RelayStats {
    pub open_failed: u64,
    /// Relay socket send buffer full: dropped.
    pub send_dropped: u64,
    pub send_errors: u64,
    /// `ToPeer` naming a handle that is not open (a core bug, counted not trusted).
    pub unknown_handle: u64,
    pub open: u64,
}

pub(crate) struct RelayTable {
    alloc: Arc<RelayAllocator>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    worker: Weak<RefCell<Worker>>,
    sup: Rc<Supervisor>,
    stats: RelayStats,
}

impl RelayTable {
    pub(crate) fn new(
        alloc: Arc<RelayAllocator>,
        worker: Weak<RefCell<Worker>>,
        sup: Rc<Supervisor>,
    ) -> Self {
        RelayTable {
            alloc,
            slots: Vec::new(),
            free: Vec::new(),
            worker,
            sup,
            stats: RelayStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> &RelayStats {
        &self.stats
    }

    fn get(&self, handle: RelayHandle) -> Option<&Open> {
        let slot = self.slots.get((handle.0 & SLOT_MASK) as usize)?;
        if u32::from(slot.generation) != handle.0 >> SLOT_BITS {
            return None;
        }
        slot.open.as_ref()
    }

    /// Sends `payload` from relay `handle` to `peer`. Never blocks: a full socket buffer
    /// drops the datagram (UDP semantics; counted).
    pub(crate) fn send(&mut self, handle: RelayHandle, peer: SocketAddr, payload: &[u8]) {
        let Some(open) = self.get(handle) else {
            self.stats.unknown_handle += 1;
            return;
        };
        match send_one(open.sock.sock.get_ref(), payload, peer) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stats.send_dropped += 1,
            Err(e) => {
                self.stats.send_errors += 1;
                limited_debug!(NET_LOG, LogKind::RelaySend, %peer, error = %e, "relay send failed");
            }
        }
    }

    fn take_slot(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        let i = u32::try_from(self.slots.len())
            .ok()
            .filter(|&i| i <= SLOT_MASK)?;
        self.slots.push(Slot::default());
        Some(i)
    }
}

impl RelayPorts for RelayTable {
    fn hold(&mut self, addr: SocketAddr) -> bool {
        self.alloc.hold(addr)
    }

    fn unhold(&mut self, addr: SocketAddr) {
        self.alloc.unhold(addr);
    }

    fn open(&mut self, family: Family, port: PortChoice) -> Result<OpenedRelay, OpenError> {
        let bound = match port {
            PortChoice::Any => self.alloc.bind(family, false, &mut rand::thread_rng()),
            PortChoice::Even => self.alloc.bind(family, true, &mut rand::thread_rng()),
            PortChoice::Held(addr) => self.alloc.bind_held(addr),
        };
        let (std_sock, lease) = match bound {
            Ok(ok) => ok,
            Err((err, io_err)) => {
                self.stats.open_failed += 1;
                match io_err {
                    Some(e) if out_of_fds(&e) => limited_warn!(
                        WarnKind::RelayFds,
                        error = %e,
                        "relay socket not opened: out of file descriptors; Allocate refused \
                         with 508 (raise LimitNOFILE)"
                    ),
                    Some(e) => {
                        limited_debug!(NET_LOG, LogKind::RelayOpen, error = %e, "relay bind failed")
                    }
                    None if err == OpenError::Exhausted => limited_warn!(
                        WarnKind::RelayPortsExhausted,
                        "relay port range exhausted: every port is in use; Allocate refused \
                         with 508 (widen min-port..max-port)"
                    ),
                    None => {}
                }
                return Err(err);
            }
        };
        let sock = match udp::register(std_sock) {
            Ok(s) => s,
            Err(e) => {
                self.stats.open_failed += 1;
                limited_debug!(NET_LOG, LogKind::RelayOpen, error = %e, "relay socket registration failed");
                return Err(OpenError::Exhausted);
            }
        };
        let local = match sock.get_ref().local_addr() {
            Ok(a) => a,
            Err(_) => {
                self.stats.open_failed += 1;
                return Err(OpenError::Exhausted);
            }
        };
        let Some(idx) = self.take_slot() else {
            self.stats.open_failed += 1;
            return Err(OpenError::Exhausted);
        };
        let slot = &mut self.slots[idx as usize];
        let handle = RelayHandle(u32::from(slot.generation) << SLOT_BITS | idx);
        let sock = Rc::new(RelaySocket {
            sock,
            _lease: lease,
        });
        let reader = self
            .sup
            .spawn(read_loop(self.worker.clone(), handle, sock.clone()))
            .abort_handle();
        slot.open = Some(Open { sock, reader });
        self.stats.open += 1;
        Ok(OpenedRelay { handle, local })
    }

    fn close(&mut self, handle: RelayHandle) {
        if self.get(handle).is_none() {
            return;
        }
        let idx = handle.0 & SLOT_MASK;
        let slot = &mut self.slots[idx as usize];
        if let Some(open) = slot.open.take() {
            // The reader holds the other reference; aborting it drops the socket and
            // frees the port.
            open.reader.abort();
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(idx);
            self.stats.open = self.stats.open.saturating_sub(1);
        }
    }
}

/// Feeds datagrams from one relay socket to the core until the relay is closed (the task
/// is aborted) or the worker is gone.
async fn read_loop(worker: Weak<RefCell<Worker>>, handle: RelayHandle, sock: Rc<RelaySocket>) {
    loop {
        let mut guard = match sock.sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                limited_debug!(NET_LOG, LogKind::UdpRecv, error = %e, "relay socket failed");
                return;
            }
        };
        let Some(w) = worker.upgrade() else {
            return;
        };
        let drained = udp::drain(
            &mut w.borrow_mut(),
            guard.get_inner(),
            udp::RELAY_RECV,
            LogKind::UdpRecv,
            |w, now| w.on_peer_batch(now, handle),
        );
        match drained {
            Drained::Empty => guard.clear_ready(),
            Drained::Budget => {
                drop(guard);
                tokio::task::yield_now().await;
            }
        }
    }
}
