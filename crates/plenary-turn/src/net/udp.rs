//! Receive loops of UDP sockets (listening and relay): wait for readiness, then drain
//! with `recvmmsg`.
//!
//! Sockets are registered for readability only (writes never wait: a full buffer drops
//! the datagram), so the kernel's write-space wake-ups after each send do not reach the
//! reactor. tokio's readiness is edge-triggered and normally cleared only by a read that
//! fails with `WouldBlock`; a `recvmmsg` that returns fewer datagrams than asked has
//! already seen the queue empty, so the loops clear readiness then and save that read.
//! This cannot lose a wake-up: a datagram queued after the read raises a new edge, and
//! tokio only clears readiness whose tick the guard saw.

use super::batch::RECV_SLOTS;
use super::worker::{Worker, WorkerRef, BATCH};
use super::{LogKind, NET_LOG};
use plenary_ops::limited_debug;
use std::io;
use std::net::UdpSocket;
use std::rc::Rc;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `sock` (non-blocking) with this thread's reactor for readability.
pub(crate) fn register(sock: UdpSocket) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: the UdpSocket owns its fd, which stays open and the same until it drops
    // with the AsyncFd.
    Ok(unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }?)
}

/// How a drain ended.
pub(crate) enum Drained {
    /// The socket's queue was seen empty: readiness may be cleared.
    Empty,
    /// The per-wake-up budget ran out with datagrams perhaps still queued.
    Budget,
}

/// Datagrams asked of a relay socket per `recvmmsg`: one peer rarely has more queued
/// between two wake-ups, and each slot asked costs a little to set up.
pub(crate) const RELAY_RECV: usize = 8;

/// Receives batches of up to `per_call` datagrams from `sock` until its queue is seen
/// empty or [`BATCH`] datagrams (or errors) were taken, handing each batch (in `w.rx`)
/// to `on_batch`.
pub(crate) fn drain(
    w: &mut Worker,
    sock: &UdpSocket,
    per_call: usize,
    kind: LogKind,
    mut on_batch: impl FnMut(&mut Worker, Instant),
) -> Drained {
    let per_call = per_call.clamp(1, RECV_SLOTS);
    let now = Instant::now();
    let mut handled = 0;
    while handled < BATCH {
        match w.rx.recv(sock, per_call) {
            Ok(n) => {
                handled += n;
                on_batch(w, now);
                if n < per_call {
                    return Drained::Empty;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) => {
                // Linux reports ICMP errors for earlier sends on some sockets; not fatal.
                w.io.recv_errors += 1;
                limited_debug!(NET_LOG, kind, error = %e, "UDP recv failed");
                handled += 1; // a pending socket error is reported once: read on
            }
        }
    }
    Drained::Budget
}

/// The receive loop of listening socket `idx`.
pub(crate) async fn listen_loop(worker: WorkerRef, idx: usize, sock: Rc<AsyncFd<UdpSocket>>) {
    loop {
        let mut guard = match sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "listening UDP socket failed");
                return;
            }
        };
        let drained = drain(
            &mut worker.borrow_mut(),
            guard.get_inner(),
            RECV_SLOTS,
            LogKind::UdpRecv,
            |w, now| w.on_udp_batch(now, idx),
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
