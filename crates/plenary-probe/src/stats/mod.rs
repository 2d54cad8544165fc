//! Sans-IO measurement. Nothing here reads a clock or opens a socket: callers pass times
//! in, so every rule is tested with exact numbers.
//!
//! - [`percentile`]: nearest-rank percentiles of a sample set.
//! - [`histogram`]: fixed-memory log histogram for per-packet delays (no allocation per
//!   sample, mergeable across flows).
//! - [`jitter`]: the RFC 3550 interarrival jitter estimator.
//! - [`seq`]: loss, duplicate and reordering accounting from sequence numbers.
//! - [`flow`]: everything one flow records during a measured window.
//! - [`knee`]: QoE thresholds, step verdicts and the ramp's knee (capacity).
//! - [`validity`]: when the load generator, not the server, was the limit.

pub mod flow;
pub mod histogram;
pub mod jitter;
pub mod knee;
pub mod percentile;
pub mod seq;
pub mod validity;
