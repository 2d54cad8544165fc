//! The receive loop of one listening UDP socket.

use super::worker::{WorkerRef, BATCH};
use super::{LogKind, NET_LOG};
use plenary_ops::limited_debug;
use std::io;
use std::rc::Rc;
use std::time::Instant;
use tokio::net::UdpSocket;

/// Waits for readiness, then drains the socket with non-blocking receives (up to
/// [`BATCH`] per wake-up), handing each datagram to the core.
pub(crate) async fn listen_loop(worker: WorkerRef, idx: usize, sock: Rc<UdpSocket>) {
    loop {
        if let Err(e) = sock.readable().await {
            tracing::error!(error = %e, "listening UDP socket failed");
            return;
        }
        let handled = drain(&worker, idx, &sock);
        if handled == BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// One batch of non-blocking receives; returns how many datagrams (or errors) it took.
fn drain(worker: &WorkerRef, idx: usize, sock: &UdpSocket) -> usize {
    let mut guard = worker.borrow_mut();
    let w = &mut *guard;
    let now = Instant::now();
    let mut handled = 0;
    while handled < BATCH {
        match sock.try_recv_from(&mut w.buf) {
            Ok((len, from)) => {
                handled += 1;
                w.on_udp_datagram(now, idx, from, len);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // Linux reports ICMP errors for earlier sends on some sockets; not fatal.
                w.io.recv_errors += 1;
                limited_debug!(NET_LOG, LogKind::UdpRecv, error = %e, "UDP recv failed");
                handled += 1; // a pending socket error is reported once: read on
            }
        }
    }
    handled
}
