//! Tests for the forwarding core. Time is an `Instant` advanced by hand: no sleeps.

mod alloc;
mod codec;
mod demand;
mod layers;
mod limiter;
mod props;
mod speaker;
mod switcher;

/// Small deterministic generator (xorshift64*) so property tests replay exactly.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for tests; `n` must be > 0.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
