//! Flow shapes and the pacing schedule.
//!
//! One pacer drives every flow: a min-heap of (due time, flow) that the sending task pops
//! in a loop, so 500 flows cost one timer, not 500. The heap's size is constant once the
//! flows exist (each pop is followed by a push), so pacing never allocates.

use super::args::FlowKind;
use super::payload::HEADER_LEN;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Largest payload a flow may carry (leaves room for TURN headers in a 9000-byte MTU).
pub const MAX_SIZE: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FlowShape {
    /// Time between frames, µs.
    pub frame_interval_us: u64,
    /// Packets sent back to back per frame (video frames span several packets).
    pub packets_per_frame: u32,
    /// Payload bytes per packet.
    pub size: usize,
}

impl FlowShape {
    /// Audio is 20 ms Opus frames; video is 30 fps of 3 × 1100-byte packets, as a 720p
    /// simulcast layer looks on the wire. `pps`/`size` override either.
    pub fn new(kind: FlowKind, pps: Option<u32>, size: Option<usize>) -> Result<Self, String> {
        let (default_pps, per_frame, default_size) = match kind {
            FlowKind::Audio => (50, 1, 160),
            FlowKind::Video => (90, 3, 1100),
            FlowKind::Fixed => (50, 1, 160),
        };
        let pps = pps.unwrap_or(default_pps);
        let size = size.unwrap_or(default_size);
        if !(1..=100_000).contains(&pps) {
            return Err(format!("--pps {pps} must be between 1 and 100000"));
        }
        if !(HEADER_LEN..=MAX_SIZE).contains(&size) {
            return Err(format!(
                "--size {size} must be between {HEADER_LEN} (the probe's header) and {MAX_SIZE}"
            ));
        }
        let per_frame = per_frame.min(pps);
        Ok(FlowShape {
            frame_interval_us: 1_000_000 * u64::from(per_frame) / u64::from(pps),
            packets_per_frame: per_frame,
            size,
        })
    }

    pub fn pps(&self) -> f64 {
        f64::from(self.packets_per_frame) * 1e6 / self.frame_interval_us.max(1) as f64
    }

    /// Offset of flow `id`'s first frame within one interval. The golden-ratio sequence
    /// spreads any number of flows evenly, so frames of different flows do not bunch up.
    pub fn phase_us(&self, id: u32) -> u64 {
        let frac = (f64::from(id) * 0.618_033_988_75).fract();
        (frac * self.frame_interval_us as f64) as u64
    }
}

/// When a schedule falls this far behind (the process was descheduled), it restarts from
/// now instead of bursting out every missed frame.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// Next due time of a frame that was due at `due` and sent at `now` (µs).
pub fn next_due(due: u64, interval: u64, now: u64) -> u64 {
    let next = due + interval;
    if now > next + MAX_CATCH_UP.as_micros() as u64 {
        now + interval
    } else {
        next
    }
}

#[derive(Debug, Default)]
pub struct Pacer {
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl Pacer {
    pub fn with_capacity(n: usize) -> Self {
        Pacer {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    pub fn schedule(&mut self, slot: u32, due_us: u64) {
        self.heap.push(Reverse((due_us, slot)));
    }

    /// The earliest frame due at or before `now_us`: (slot, due time). The caller sends
    /// it and schedules the slot's next frame.
    pub fn pop_due(&mut self, now_us: u64) -> Option<(u32, u64)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= now_us => {
                self.heap.pop().map(|Reverse((due, slot))| (slot, due))
            }
            _ => None,
        }
    }

    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let a = FlowShape::new(FlowKind::Audio, None, None).unwrap();
        assert_eq!(
            (a.frame_interval_us, a.packets_per_frame, a.size),
            (20_000, 1, 160)
        );
        assert_eq!(a.pps(), 50.0);
        let v = FlowShape::new(FlowKind::Video, None, None).unwrap();
        assert_eq!(
            (v.frame_interval_us, v.packets_per_frame, v.size),
            (33_333, 3, 1100)
        );
        assert!((v.pps() - 90.0).abs() < 0.01);
        let f = FlowShape::new(FlowKind::Fixed, Some(200), Some(500)).unwrap();
        assert_eq!(
            (f.frame_interval_us, f.packets_per_frame, f.size),
            (5_000, 1, 500)
        );
        let v = FlowShape::new(FlowKind::Video, Some(2), None).unwrap();
        assert_eq!((v.packets_per_frame, v.frame_interval_us), (2, 1_000_000));
        assert!(FlowShape::new(FlowKind::Fixed, Some(0), None).is_err());
        assert!(FlowShape::new(FlowKind::Fixed, None, Some(27)).is_err());
        assert!(FlowShape::new(FlowKind::Fixed, None, Some(MAX_SIZE + 1)).is_err());
    }

    #[test]
    fn phases_spread_within_the_interval() {
        let a = FlowShape::new(FlowKind::Audio, None, None).unwrap();
        let mut phases: Vec<u64> = (0..50).map(|i| a.phase_us(i)).collect();
        assert!(phases.iter().all(|&p| p < 20_000));
        phases.sort_unstable();
        let max_gap = phases.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(max_gap < 1_500, "50 flows leave no 1.5 ms hole: {max_gap}");
    }

    #[test]
    fn pacer_pops_in_due_order_and_only_when_due() {
        let mut p = Pacer::with_capacity(4);
        p.schedule(2, 300);
        p.schedule(0, 100);
        p.schedule(1, 100);
        assert_eq!(p.next_due(), Some(100));
        assert_eq!(p.pop_due(99), None);
        assert_eq!(p.pop_due(150), Some((0, 100)));
        assert_eq!(p.pop_due(150), Some((1, 100)));
        assert_eq!(p.pop_due(150), None);
        p.schedule(0, next_due(100, 20_000, 150));
        assert_eq!(p.pop_due(1_000_000), Some((2, 300)));
        assert_eq!(p.pop_due(1_000_000), Some((0, 20_100)));
        assert!(p.is_empty());
    }

    #[test]
    fn schedule_keeps_its_grid_unless_far_behind() {
        assert_eq!(next_due(0, 20_000, 5_000), 20_000);
        // 0.5 s late: keep the grid (the lag is measured and reported).
        assert_eq!(next_due(0, 20_000, 500_000), 20_000);
        // 2 s late: restart from now.
        assert_eq!(next_due(0, 20_000, 2_000_000), 2_020_000);
    }
}
