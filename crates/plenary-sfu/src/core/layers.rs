//! Simulcast layer choice.
//!
//! Each subscriber gets the best layer its downlink can carry, up to the layer it asked for.
//! Going down is immediate (congestion hurts everyone on that link); going up waits until the
//! estimate has had headroom for a while, because every switch costs a keyframe and a visible
//! change in quality.

use std::time::{Duration, Instant};

/// Number of simulcast layers (low, medium, high).
pub const LAYERS: usize = 3;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_millis(100);

/// Bitrate over the last second, in fixed 100 ms buckets so adding a packet never allocates.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    epoch: Option<Instant>,
    /// Absolute index of the newest bucket written.
    head: u64,
    bytes: [u64; BUCKETS],
    /// Bucket where the current unbroken run of packets began (a gap of two buckets or
    /// more starts a new run).
    run_start: u64,
}

impl RateMeter {
    pub fn new() -> RateMeter {
        RateMeter::default()
    }

    fn bucket(&self, epoch: Instant, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(epoch).as_millis();
        u64::try_from(ms / BUCKET.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn add(&mut self, now: Instant, bytes: usize) {
        let epoch = *self.epoch.get_or_insert(now);
        let b = self.bucket(epoch, now);
        if b > self.head + 2 {
            self.run_start = b;
        }
        if b > self.head {
            let stale = (b - self.head).min(BUCKETS as u64);
            for k in 0..stale {
                self.bytes[((b - k) % BUCKETS as u64) as usize] = 0;
            }
            self.head = b;
        }
        // A `now` older than the head (caller reordering) counts towards the head bucket.
        let slot = &mut self.bytes[(self.head % BUCKETS as u64) as usize];
        *slot = slot.saturating_add(bytes as u64);
    }

    /// Bits per second over the last second (or since the first packet, if more recent).
    pub fn bps(&self, now: Instant) -> u64 {
        let Some(epoch) = self.epoch else {
            return 0;
        };
        let b = self.bucket(epoch, now).max(self.head);
        let oldest = b.saturating_sub(BUCKETS as u64 - 1);
        if self.head < oldest {
            return 0;
        }
        let total: u64 = (oldest..=self.head)
            .map(|k| self.bytes[(k % BUCKETS as u64) as usize])
            .fold(0, u64::saturating_add);
        // Divide by the time the counted buckets actually cover, so a young meter is not
        // under-reported (which would make a layer look cheaper than it is).
        let at = |bucket: u64| BUCKET.saturating_mul(u32::try_from(bucket).unwrap_or(u32::MAX));
        // A `now` older than the newest bucket is taken as that bucket's start.
        let elapsed = now.saturating_duration_since(epoch).max(at(self.head));
        let covered = elapsed.saturating_sub(at(oldest));
        let ms = covered.max(BUCKET).as_millis().min(u128::from(u64::MAX)) as u64;
        total.saturating_mul(8_000) / ms
    }

    /// `None` when nothing arrived in the last second: the layer is not being received.
    pub fn rate(&self, now: Instant) -> Option<u64> {
        match self.bps(now) {
            0 => None,
            r => Some(r),
        }
    }

    /// The rate while packets still come (one in this bucket or the one before), else
    /// `None`. A layer that stopped would otherwise report its emptying window as its rate,
    /// lower at every look, and a paused layer remembered at a tenth of its cost looks
    /// cheaper than the layer below it.
    pub fn flowing_rate(&self, now: Instant) -> Option<u64> {
        let epoch = self.epoch?;
        if self.bucket(epoch, now) > self.head + 1 {
            return None;
        }
        self.rate(now)
    }

    /// [`flowing_rate`](Self::flowing_rate) once the current run of packets fills the whole
    /// window: before that the rate of a layer that just started (or resumed) is a guess
    /// from its first packets.
    pub fn settled_rate(&self, now: Instant) -> Option<u64> {
        let epoch = self.epoch?;
        if self.bucket(epoch, now) < self.run_start + BUCKETS as u64 {
            return None;
        }
        self.flowing_rate(now)
    }
}

/// Thresholds for [`LayerSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerConfig {
    /// Upgrade only when the estimate exceeds the layer's rate by this much (115 = 1.15×).
    pub upgrade_headroom_pct: u64,
    /// ... continuously for this long.
    pub upgrade_hold: Duration,
    /// Downgrade as soon as the estimate falls below this share of the layer's rate.
    pub downgrade_pct: u64,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            upgrade_headroom_pct: 115,
            upgrade_hold: Duration::from_secs(2),
            downgrade_pct: 95,
        }
    }
}

/// Per subscriber and track: which simulcast layer to forward.
#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    config: LayerConfig,
    current: Option<u8>,
    /// Since when the estimate has had upgrade headroom for each layer.
    affordable_since: [Option<Instant>; LAYERS],
}

impl LayerSelector {
    pub fn new(config: LayerConfig) -> LayerSelector {
        LayerSelector {
            config,
            ..LayerSelector::default()
        }
    }

    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// Picks the layer to forward. `layer_bps[l]` is `None` when layer `l` is not being
    /// received (not published, or paused by the publisher); `max_layer` is the subscriber's
    /// preference. When the preferred layer is missing, the highest one below it is used, or
    /// failing that the lowest one above it. A layer paused only because nobody watched it
    /// (dynacast) should be passed with its last known rate, or it could never be chosen again.
    pub fn choose(
        &mut self,
        now: Instant,
        estimate_bps: Option<u64>,
        max_layer: u8,
        layer_bps: &[Option<u64>; LAYERS],
    ) -> Option<u8> {
        let top = usize::from(max_layer).min(LAYERS - 1);
        let ceiling = (0..=top)
            .rev()
            .find(|&l| layer_bps[l].is_some())
            .or_else(|| (top + 1..LAYERS).find(|&l| layer_bps[l].is_some()));
        let Some(ceiling) = ceiling else {
            return self.set(None);
        };
        let allowed = |l: usize| l <= ceiling && layer_bps[l].is_some();
        let rate = |l: usize| layer_bps[l].unwrap_or(0);
        // `ceiling` itself is allowed, so this always finds one.
        let lowest = (0..=ceiling).find(|&l| allowed(l)).unwrap_or(ceiling);

        let Some(estimate) = estimate_bps else {
            return match self.current {
                Some(c) if allowed(usize::from(c)) => self.current,
                _ => self.set(Some(lowest)),
            };
        };
        let e100 = estimate.saturating_mul(100);
        let keeps = |l: usize| e100 >= rate(l).saturating_mul(self.config.downgrade_pct);
        let current = match self.current {
            Some(c) if allowed(usize::from(c)) => usize::from(c),
            _ => {
                // Layer gone or preference lowered: take the best that fits right away.
                let pick = (0..=ceiling)
                    .rev()
                    .find(|&l| allowed(l) && rate(l) <= estimate)
                    .unwrap_or(lowest);
                return self.set(Some(pick));
            }
        };
        if !keeps(current) {
            let pick = (0..current)
                .rev()
                .find(|&l| allowed(l) && keeps(l))
                .unwrap_or(lowest);
            return self.set(Some(pick));
        }
        let mut upgrade = None;
        for l in 0..LAYERS {
            let headroom = l > current
                && allowed(l)
                && e100 >= rate(l).saturating_mul(self.config.upgrade_headroom_pct);
            if !headroom {
                self.affordable_since[l] = None;
                continue;
            }
            let since = *self.affordable_since[l].get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.upgrade_hold {
                upgrade = Some(l);
            }
        }
        match upgrade {
            Some(l) => self.set(Some(l)),
            None => self.current,
        }
    }

    fn set(&mut self, layer: Option<usize>) -> Option<u8> {
        // Layers are < LAYERS, so the cast cannot truncate.
        self.current = layer.map(|l| l as u8);
        self.affordable_since = [None; LAYERS];
        self.current
    }
}
