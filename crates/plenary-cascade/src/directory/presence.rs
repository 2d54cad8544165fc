//! The task that keeps a node present in the directory.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{Directory, NodeInfo, DEFAULT_HEARTBEAT_INTERVAL, DIRECTORY_UP};

/// The heartbeat TTL is this many intervals, so one or two late beats do not kill a node.
const TTL_INTERVALS: u32 = 3;
/// Sweep every this many beats: with a 1 s beat and 3 s TTL a dead node's entries go within
/// about 3 + 3 + 1 s, under the 10 s target.
const SWEEP_EVERY: u64 = 3;

/// Handle on the presence task; dropping it stops the task like [`Presence::stop`] without
/// waiting for it.
pub struct Presence {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    up: watch::Receiver<bool>,
    registrations: watch::Receiver<u64>,
}

impl Presence {
    /// Whether the last heartbeat reached the directory.
    pub fn up(&self) -> bool {
        *self.up.borrow()
    }

    /// Waits until a heartbeat reaches the directory, at most `timeout`; returns `up()`.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let mut up = self.up.clone();
        let _ = tokio::time::timeout(timeout, up.wait_for(|v| *v)).await;
        self.up()
    }

    /// Counts the beats that found the node unknown to the directory: 1 after the first beat.
    /// A later change means the directory forgot the node (Redis restarted empty, or peers
    /// removed it after missed beats): its rooms and tracks must be announced again.
    pub fn registrations(&self) -> watch::Receiver<u64> {
        self.registrations.clone()
    }

    /// Stops the heartbeats and removes the node from the directory (best effort, bounded by
    /// the call timeout).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Spawns the presence task: a heartbeat every `interval` (zero means the 1 s default) with a
/// TTL of three intervals, carrying `me()` read afresh each time, and a sweep of dead nodes
/// every few beats. Before its first beat it removes whatever an earlier run under the same
/// name left (a crash leaves rooms and tracks behind), so spawn it before joining rooms.
///
/// Logs at warn when the directory becomes unreachable and at info when it is back, not on
/// every failed beat, and keeps [`Presence::up`] and the `plenary_cascade_directory_up` gauge.
pub fn spawn_presence(
    dir: Directory,
    me: impl Fn() -> NodeInfo + Send + Sync + 'static,
    interval: Duration,
) -> Presence {
    let interval = if interval.is_zero() {
        DEFAULT_HEARTBEAT_INTERVAL
    } else {
        interval
    };
    let ttl = interval * TTL_INTERVALS;
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let (up_tx, up_rx) = watch::channel(false);
    let (reg_tx, reg_rx) = watch::channel(0u64);
    metrics::gauge!(DIRECTORY_UP).set(0.0);

    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        let mut cleared_previous_run = false;
        // None until the first beat decides, so the first failure is logged too.
        let mut was_up: Option<bool> = None;
        let mut name: Option<String> = None;
        loop {
            tokio::select! {
                // Fires on stop() and when the handle is dropped.
                _ = &mut stop_rx => break,
                _ = tick.tick() => {}
            }
            let info = me();
            name = Some(info.name.clone());
            let beat = async {
                if !cleared_previous_run {
                    dir.remove_node(&info.name).await?;
                    cleared_previous_run = true;
                }
                let fresh = dir.register(&info, ttl).await?;
                if fresh {
                    reg_tx.send_modify(|n| *n += 1);
                }
                Ok::<_, super::DirectoryError>(())
            };
            match beat.await {
                Ok(()) => {
                    if was_up != Some(true) {
                        if was_up.is_some() {
                            tracing::info!(url = dir.url(), "cascade directory reachable again");
                        }
                        was_up = Some(true);
                        up_tx.send_replace(true);
                        metrics::gauge!(DIRECTORY_UP).set(1.0);
                    }
                    if beats.is_multiple_of(SWEEP_EVERY) {
                        match dir.sweep_dead().await {
                            Ok(gone) if !gone.is_empty() => {
                                tracing::info!(nodes = ?gone, "cascade directory: removed dead nodes")
                            }
                            Ok(_) => {}
                            // The next beat reports a lasting outage.
                            Err(e) => tracing::debug!(error = %e, "cascade directory sweep failed"),
                        }
                    }
                    beats += 1;
                }
                Err(e) => {
                    if was_up != Some(false) {
                        tracing::warn!(
                            error = %e,
                            "cascade directory unreachable; running media goes on, new cross-node joins fail until it is back"
                        );
                        was_up = Some(false);
                        up_tx.send_replace(false);
                        metrics::gauge!(DIRECTORY_UP).set(0.0);
                    }
                }
            }
        }
        if let Some(name) = name {
            if let Err(e) = dir.remove_node(&name).await {
                tracing::debug!(error = %e, "cascade directory: could not remove this node on stop");
            }
        }
        up_tx.send_replace(false);
        metrics::gauge!(DIRECTORY_UP).set(0.0);
    });

    Presence {
        stop: Some(stop_tx),
        task: Some(task),
        up: up_rx,
        registrations: reg_rx,
    }
}
