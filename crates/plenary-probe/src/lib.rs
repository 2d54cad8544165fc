//! `plenary probe`: synthetic clients that answer "how many participants will this server
//! hold before quality degrades?".
//!
//! - [`stats`]: sans-IO measurement (percentiles, RFC 3550 jitter, loss from sequence
//!   numbers, ramp verdicts and knee, run validity). Pure and unit-tested.
//! - [`procfs`]: CPU and memory of a process from `/proc`, for work per CPU-second.
//! - [`turn`]: the TURN load generator (`plenary probe turn`): a sans-IO client, pacing and
//!   a thin tokio driver.
//! - [`sfu`]: the SFU load generator (`plenary probe sfu`): synthetic WebRTC participants
//!   on str0m, scenarios, receiver-side QoE, a staircase ramp and its reports.
//! - [`report`]: `report.json`, a self-contained `report.html` and the stdout summary.

pub mod procfs;
pub mod report;
pub mod sfu;
pub mod stats;
pub mod turn;
