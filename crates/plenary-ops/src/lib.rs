//! Operations plumbing shared by every Plenary subcommand: logging setup, the Prometheus
//! exporter, Unix signals, rate-limited logging for network-input errors, and a TLS verifier
//! for peers authenticated by other means.
//!
//! Nothing here knows about TURN or SFU; the protocol crates depend on this one, never
//! the other way round.

pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod signals;
pub mod stall;
pub mod tls;

/// For [`limited_debug!`]: callers need not depend on `tracing` themselves.
#[doc(hidden)]
pub use tracing as __tracing;
