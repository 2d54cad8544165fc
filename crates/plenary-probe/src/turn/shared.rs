//! State shared by the pacer, the flow readers and the peers: the clock origin, the
//! current epoch, every flow's window statistics and global counters for progress lines.

use crate::stats::flow::{FlowStats, Mode};
use crate::stats::histogram::LogHistogram;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Counters since the start, read by the progress printer (Relaxed: they are statistics).
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub at_peer: AtomicU64,
    pub back: AtomicU64,
    /// Sends the probe could not make because its own socket buffer was full.
    pub local_drops: AtomicU64,
    /// Sends that failed with a socket error (e.g. the server went away): counted as sent.
    pub send_errors: AtomicU64,
    /// Packets that came back on another flow's allocation: a relay bug.
    pub misrouted: AtomicU64,
    pub refresh_failures: AtomicU64,
    /// Flows whose connection to the server broke during the run.
    pub broken: AtomicU64,
    pub active: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

pub struct Shared {
    pub start: Instant,
    /// Epoch the pacer stamps on packets now. Even epochs are warm-up (not measured);
    /// step k measures epoch 2k+1.
    pub epoch: AtomicU32,
    /// Indexed by flow id; created up front for the largest step, so no lock guards the
    /// table itself.
    pub flows: Box<[Mutex<FlowStats>]>,
    /// How late frames left compared with their schedule, µs, this window.
    pub lag: Mutex<LogHistogram>,
    pub counters: Counters,
}

/// The epoch step `k` measures.
pub fn measure_epoch(step: usize) -> u32 {
    2 * step as u32 + 1
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Statistics stay usable even if a task panicked while holding them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(max_flows: usize, mode: Mode) -> Self {
        Shared {
            start: Instant::now(),
            epoch: AtomicU32::new(0),
            flows: (0..max_flows)
                .map(|_| Mutex::new(FlowStats::new(mode, measure_epoch(0))))
                .collect(),
            lag: Mutex::new(LogHistogram::new()),
            counters: Counters::default(),
        }
    }

    /// µs since the probe started: the timestamp carried in packets.
    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    pub fn us_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    pub fn epoch(&self) -> u32 {
        self.epoch.load(Relaxed)
    }

    pub fn set_epoch(&self, e: u32) {
        self.epoch.store(e, Relaxed);
    }

    pub fn flow(&self, id: u32) -> Option<MutexGuard<'_, FlowStats>> {
        self.flows.get(id as usize).map(lock)
    }
}
