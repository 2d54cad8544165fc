//! The control thread: accepts TCP connections and hands them to workers round-robin,
//! supervises the drain, and keeps the service-wide gauges.

use super::metrics_export::{
    COUNTER_ACCEPT_ERRORS, COUNTER_REJECTED, COUNTER_STALLS, GAUGE_ALLOCATIONS, GAUGE_CONNECTIONS,
    GAUGE_DRAINING,
};
use super::service::Phase;
use super::stream::{ConnSlot, Incoming};
use super::{limited_warn, out_of_fds, LogKind, WarnKind, NET_LOG};
use crate::server::Shared;
use plenary_ops::limited_debug;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

/// Open TCP/TLS connections allowed at once. Keeps file descriptors for relay sockets
/// when someone opens connections in bulk.
const MAX_CONNECTIONS: usize = 16 * 1024;
/// Pause after an accept error (typically EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest the accept loop waits for room in a worker's queue before it drops a
/// connection (every worker busy for that long).
const HANDOFF_WAIT: Duration = Duration::from_secs(1);
const GAUGE_PERIOD: Duration = Duration::from_secs(1);
const DRAIN_POLL: Duration = Duration::from_millis(200);

pub(crate) struct ControlSeed {
    pub listeners: Vec<std::net::TcpListener>,
    pub senders: Vec<mpsc::Sender<Incoming>>,
    pub phase: Arc<watch::Sender<Phase>>,
    pub shared: Arc<Shared>,
    pub drain_timeout: Duration,
    pub open_connections: Arc<AtomicUsize>,
}

pub(crate) fn run(seed: ControlSeed) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(control_main(seed))
}

async fn control_main(seed: ControlSeed) -> io::Result<()> {
    let senders = Arc::new(seed.senders);
    let next = Arc::new(AtomicUsize::new(0));
    for l in seed.listeners {
        let l = TcpListener::from_std(l)?;
        tokio::spawn(accept_loop(
            l,
            senders.clone(),
            next.clone(),
            seed.open_connections.clone(),
            seed.phase.subscribe(),
        ));
    }
    let mut phase = seed.phase.subscribe();
    tokio::spawn(plenary_ops::stall::watch_stalls(
        COUNTER_STALLS,
        async move {
            let _ = phase.wait_for(|p| *p == Phase::Stopping).await;
        },
    ));
    let allocations = metrics::gauge!(GAUGE_ALLOCATIONS);
    let connections = metrics::gauge!(GAUGE_CONNECTIONS);
    let draining = metrics::gauge!(GAUGE_DRAINING);
    let mut phase = seed.phase.subscribe();
    let mut drain_deadline = None;
    loop {
        let current = *phase.borrow_and_update();
        let total = seed.shared.total_allocations();
        allocations.set(total as f64);
        connections.set(seed.open_connections.load(Ordering::Relaxed) as f64);
        draining.set(if current == Phase::Draining { 1.0 } else { 0.0 });
        let wait = match current {
            Phase::Running => GAUGE_PERIOD,
            Phase::Draining => {
                let now = tokio::time::Instant::now();
                let deadline = *drain_deadline.get_or_insert(now + seed.drain_timeout);
                if total == 0 || now >= deadline {
                    tracing::info!(allocations_left = total, "drain complete; stopping");
                    seed.phase.send_replace(Phase::Stopping);
                    continue;
                }
                DRAIN_POLL
            }
            Phase::Stopping => break,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = phase.changed() => {}
        }
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    workers: Arc<Vec<mpsc::Sender<Incoming>>>,
    next: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    mut phase: watch::Receiver<Phase>,
) {
    let rejected = metrics::counter!(COUNTER_REJECTED);
    let accept_errors = metrics::counter!(COUNTER_ACCEPT_ERRORS);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_errors.increment(1);
                if out_of_fds(&e) {
                    limited_warn!(
                        WarnKind::AcceptFds,
                        error = %e,
                        "accept failed: out of file descriptors; new TCP/TLS connections wait \
                         in the backlog (raise LimitNOFILE)"
                    );
                } else {
                    limited_debug!(NET_LOG, LogKind::Accept, error = %e, "accept failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Taken before the check so the slot is always given back by its drop.
        let slot = ConnSlot(open.clone());
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            rejected.increment(1);
            limited_debug!(NET_LOG, LogKind::Accept, %peer, "connection limit reached");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let Err(inc) = hand_off(&workers, &next, Incoming { stream, slot }) else {
            continue;
        };
        // Every worker's queue is full (a burst of connections): wait for room instead of
        // dropping. Meanwhile new connections wait in the kernel's backlog.
        let turn = next.fetch_add(1, Ordering::Relaxed);
        let queued = match workers.get(turn % workers.len().max(1)) {
            Some(worker) => tokio::select! {
                r = tokio::time::timeout(HANDOFF_WAIT, worker.send(inc)) => matches!(r, Ok(Ok(()))),
                _ = phase.wait_for(|p| *p != Phase::Running) => return,
            },
            None => false,
        };
        if !queued {
            rejected.increment(1);
            limited_debug!(NET_LOG, LogKind::Accept, %peer, "all workers busy; connection dropped");
        }
    }
}

/// Gives the connection to the next worker in turn, or to the first after it whose queue
/// has room.
fn hand_off(
    workers: &[mpsc::Sender<Incoming>],
    next: &AtomicUsize,
    inc: Incoming,
) -> Result<(), Incoming> {
    let n = workers.len();
    if n == 0 {
        return Err(inc);
    }
    let first = next.fetch_add(1, Ordering::Relaxed);
    let mut inc = inc;
    for k in 0..n {
        match workers[(first + k) % n].try_send(inc) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back) | TrySendError::Closed(back)) => inc = back,
        }
    }
    Err(inc)
}
